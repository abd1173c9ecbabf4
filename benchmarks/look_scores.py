"""Every look's raw score per query, then the decision of any order and weighting of looks, offline (issue 27).

``record`` matches each query of a corpus ``queries.csv`` once per look, with ``tests=1`` (no union
bound), against the database ``FPSTORE_HOME`` / ``FPSTORE_DATABASE_URL`` names, and writes one JSON
line per query: for every look its best track's file name, raw score, votes, speed and hashes sent.
The looks are those of the default evidence (the query as it is; the four shifts with ±1 frame; the
other speeds unshifted, the screen, and the screened speed at the four shifts) and candidate extra looks
(the whitened picking of :mod:`fpstore.signal.query_peaks` alone or pooled, unshifted or at the four
shifts, with or without tolerance; ten targets per anchor; each bin's floor its lower quartile or
10th percentile instead of its median; the four shifts with ±2 frames).

``simulate`` replays :func:`fpstore.matching.matcher.match_prepared`'s decision from those records for
several schemes: the default's 8 equal tests, the default with one extra look (9 tests), and a union
bound weighted per step (each step the same share of ``alpha``, the speeds step's share split over its
six factors). A score is the raw score less ``log10`` of the step's weight's inverse; the first step
whose score passes 3 names its track. The simulation of the default gives the same figures as
``fpstore eval`` (89.4 % and 1 false positive on devlarge's hard set).

    FPSTORE_HOME=/tmp/h python benchmarks/look_scores.py record ../corpus/devlarge/hard/queries.csv \\
        /tmp/looks/hard_0.jsonl --part 0 --parts 2
    python benchmarks/look_scores.py simulate '/tmp/looks/hard_*.jsonl'
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fpstore.db.catalogue import open_store
from fpstore.db.store import Store
from fpstore.matching.evidence import ROBUST
from fpstore.matching.query import _quiet_variant, prepare_query
from fpstore.matching.ranking import match_fingerprint
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import WHITENED, QueryPicking, query_fingerprint
from fpstore.signal.variants import SpeedVariant, shift_samples

ZONE = "Fsmall_Tlong"
SCORE_NEEDED = 3.0
SCREEN_SCORE = 0.5
#: A step: ("look", look name, penalty) or ("speeds", None, penalty) for the screen then the screened speed.
Step = tuple[str, str | None, float]


def record(csv_path: Path, out_path: Path, part: int, parts: int) -> None:
    """Write every look's raw answer for each query of ``csv_path`` (every ``parts``-th row from ``part``)."""
    rows = list(csv.DictReader(open(csv_path)))[part::parts]
    with open_store(None) as store, open(out_path, "w") as out:
        params = store.params(duration_s=None)
        names = {v: k for k, v in store.tracks.ids_by_file_name().items()}
        started = time.time()
        for i, row in enumerate(rows):
            out.write(json.dumps(looks_of(store, params, names, csv_path.parent / row["file"], row)) + "\n")
            out.flush()
            if i % 20 == 0:
                print(i, len(rows), round(time.time() - started), flush=True)


def looks_of(store: Store, params: FingerprintParams, names: dict[int, str], path: Path,
             row: dict[str, str]) -> dict[str, Any]:
    """One query's record: its labels and, per look, [track, raw score, votes, speed, hashes sent]."""
    def look(variants: list[SpeedVariant], tolerance: int) -> list[Any]:
        result = match_fingerprint(store, variants, params, zone=ZONE, tests=1, tolerance=tolerance, top_k=2)
        best = result.best
        return [names.get(best.track_id, "") if best else "", result.score, best.votes if best else 0, result.speed,
                result.n_query_hashes]

    rec: dict[str, Any] = {"file": row["file"], "true": row["true_track"], "deg": row["degradation"],
                           "len": row["length_s"]}
    prepared = prepare_query(path, params, ROBUST)
    if isinstance(prepared, str):
        return {**rec, "error": prepared}
    audio = prepared.audio
    assert audio is not None
    shifted = _quiet_variant(audio, params, 1.0, 4, prepared.first)
    rec["first"] = look([prepared.first], 0)
    rec["shift"] = look([shifted], 1)
    rec["screen"] = look(list(prepared.screen(params, ROBUST)), 1)
    rec["at"] = look([prepared.at_speed(params, ROBUST, rec["screen"][3])], 1)
    offsets = shift_samples(4, params.hop_length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whitened = tuple(query_fingerprint(audio[o:], params, WHITENED) for o in offsets)
        more_targets = tuple(query_fingerprint(audio[o:], params, QueryPicking(12, 6, 10, True)) for o in offsets)
        low_floors = {q: tuple(query_fingerprint(audio[o:], params, QueryPicking(whiten=True, floor_quantile=q))
                               for o in offsets) for q in (0.25, 0.1)}
    rec["w1t0"] = look([SpeedVariant(1.0, whitened[:1])], 0)
    rec["w1t1"] = look([SpeedVariant(1.0, whitened[:1])], 1)
    rec["w4t0"] = look([SpeedVariant(1.0, whitened)], 0)
    rec["w4t1"] = look([SpeedVariant(1.0, whitened)], 1)
    rec["sw4t1"] = look([SpeedVariant(1.0, shifted.fingerprints + whitened)], 1)
    rec["wk4t0"] = look([SpeedVariant(1.0, more_targets)], 0)
    rec["wk4t1"] = look([SpeedVariant(1.0, more_targets)], 1)
    rec["shift_t2"] = look([shifted], 2)
    rec["sw1t0"] = look([SpeedVariant(1.0, (prepared.first.fingerprints[0], whitened[0]))], 0)
    rec["q25w4t0"] = look([SpeedVariant(1.0, low_floors[0.25])], 0)
    rec["q10w4t0"] = look([SpeedVariant(1.0, low_floors[0.1])], 0)
    return rec


def decide(rec: dict[str, Any], steps: list[Step]) -> str:
    """The track ``match_prepared`` names with these steps, or "" for no match."""
    for kind, name, penalty in steps:
        if kind == "look":
            assert name is not None
            track, score = rec[name][0], max(rec[name][1] - penalty, 0.0)
        else:  # the speeds step: the screen, then the screened speed at every shift when it stood out
            track, score = rec["screen"][0], max(rec["screen"][1] - penalty, 0.0)
            if score >= SCREEN_SCORE:
                track, score = rec["at"][0], max(rec["at"][1] - penalty, 0.0)
        if score > SCORE_NEEDED:
            return str(track)
    return ""


def weighted(shares: tuple[float, ...], extra: str | None = None) -> list[Step]:
    """Steps with these shares of alpha: the query as it is, the shifts, the speeds (over 6 factors), ``extra``."""
    steps: list[Step] = [("look", "first", math.log10(1 / shares[0])), ("look", "shift", math.log10(1 / shares[1])),
                         ("speeds", None, math.log10(6 / shares[2]))]
    if extra is not None:
        steps.append(("look", extra, math.log10(1 / shares[3])))
    return steps


SCHEMES: dict[str, list[Step]] = {
    "default (8 tests)": weighted((1 / 8, 1 / 8, 6 / 8)),
    **{f"+{look} (9 tests)": weighted((1 / 9, 1 / 9, 6 / 9, 1 / 9), look)
       for look in ("w1t0", "w1t1", "w4t0", "w4t1", "sw4t1", "wk4t0", "wk4t1", "q25w4t0", "q10w4t0")},
    "per step (3 steps)": weighted((1 / 3, 1 / 3, 1 / 3)),
    "per step +w4t0 (4 steps)": weighted((1 / 4, 1 / 4, 1 / 4, 1 / 4), "w4t0"),
}


def tally(recs: list[dict[str, Any]], schemes: dict[str, Any],
          decide_one: Callable[[dict[str, Any], Any], str]) -> dict[str, dict[tuple[str, str], list[int]]]:
    """Per scheme, per (degradation, length) and overall ``("*", "*")``: positives, named right, negatives, named."""
    tables = {}
    for scheme, steps in schemes.items():
        cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for r in recs:
            named = decide_one(r, steps)
            for key in ((r["deg"], r["len"]), ("*", "*")):
                cell = cells[key]
                if r["true"]:
                    cell[0] += 1
                    cell[1] += named == r["true"]
                else:
                    cell[2] += 1
                    cell[3] += named != ""
        tables[scheme] = cells
    return tables


def print_table(tables: dict[str, dict[tuple[str, str], list[int]]], names: list[str]) -> None:
    """One markdown row per cell: top-1 % / false positives of every scheme in ``names``."""
    keys = sorted((k for k in next(iter(tables.values())) if k != ("*", "*")), key=lambda k: (k[0], int(k[1])))
    print("| degradation | length_s | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key in [*keys, ("*", "*")]:
        print(f"| {key[0]} | {key[1]} | " + " | ".join(
            f"{100 * tables[n][key][1] / tables[n][key][0]:.1f} % / {tables[n][key][3]}" for n in names) + " |")


def simulate(pattern: str) -> None:
    """Print top-1 % / false positives per degradation and length for every scheme."""
    recs = [json.loads(line) for path in sorted(glob.glob(pattern)) for line in open(path)]
    recs = [r for r in recs if "error" not in r]
    print_table(tally(recs, SCHEMES, decide), list(SCHEMES))


def main() -> None:
    """Parse the command line and run ``record`` or ``simulate``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="every look's raw answer per query, as JSON lines")
    rec.add_argument("queries_csv", type=Path)
    rec.add_argument("out", type=Path)
    rec.add_argument("--part", type=int, default=0, help="take every --parts-th row from this one")
    rec.add_argument("--parts", type=int, default=1)
    sim = commands.add_parser("simulate", help="the decision of every scheme, from records")
    sim.add_argument("records", help="glob of the JSON-lines files record wrote")
    args = parser.parse_args()
    if args.command == "record":
        record(args.queries_csv, args.out, args.part, args.parts)
    else:
        simulate(args.records)


if __name__ == "__main__":
    main()
