"""Fewer tests and other whitened looks, replayed from the records of ``look_scores.py`` (issue 27).

``record`` matches, with ``tests=1`` (raw scores), the queries of ``look_scores.py record``'s JSON lines
that reach a step under the default (9 tests) with the looks that would change that step, and writes
one JSON line per query:

- reaching step 2 (the query as it is named nothing): ``q25sw4t1``, the four shifts of the stored
  picking and of the whitened look (``WHITENED_LOOK`` without its floor ratio) pooled into one look
  with ±1 frame, and ``q25w4t0``, that whitened look alone;
- reaching step 4 (the first three steps named nothing): the whitened look with a denser
  neighbourhood (``d8``: 8 x 4, ``d6``: 6 x 3), ten targets per anchor (``k10``), only the peaks
  more than 2, 4, 5, 6 or 8 times above their bin's floor (``r2`` ... ``r8``; ``r5`` is the default's),
  and the seed's picking on the magnitudes less a multiple of each bin's floor (``s50c2``: twice the
  median), instead of divided by it.

``simulate`` replays :func:`fpstore.matching.matcher.match_prepared`'s decision for schemes of looks
and tests (the default's replay gives ``fpstore eval``'s figures); ``null`` counts the negatives whose
raw score in each look exceeds lower bars, and the negatives that the query as it is or its pooled
look alone exceed (how far apart the two looks' chance alarms fall). The whitened hashes a negative
sends per look are printed too.

    FPSTORE_HOME=/tmp/h python benchmarks/look_merges.py record '/tmp/looks/hard_*.jsonl' \\
        ../corpus/devlarge/hard /tmp/merges/rec_0.jsonl --part 0 --parts 2
    python benchmarks/look_merges.py simulate '/tmp/looks/hard_*.jsonl' '/tmp/merges/rec_*.jsonl'
    python benchmarks/look_merges.py null '/tmp/looks/hard_*.jsonl' '/tmp/merges/rec_*.jsonl'
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from look_scores import print_table, tally  # benchmarks/look_scores.py, next to this script

from fpstore.db.catalogue import open_store
from fpstore.db.store import Store
from fpstore.matching.ranking import match_fingerprint
from fpstore.signal.analysis import Fingerprint, fingerprint_from_peaks
from fpstore.signal.audio import load_audio
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import constellation_map, extract_peaks
from fpstore.signal.query_peaks import WHITENED_LOOK, query_fingerprint, spectral_floor
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.variants import SpeedVariant, shift_samples

ZONE = "Fsmall_Tlong"
SCORE_NEEDED = 3.0
SCREEN_SCORE = 0.5
DEFAULT_TESTS = 9
QUARTILE = dataclasses.replace(WHITENED_LOOK, floor_ratio=0.0)
#: The last-look pickings: name -> picking (each at the four shifts, no tolerance).
PICKINGS = {
    "d8q25w4t0": dataclasses.replace(QUARTILE, dist_freq=8, dist_time=4),
    "d6q25w4t0": dataclasses.replace(QUARTILE, dist_freq=6, dist_time=3),
    "k10q25w4t0": dataclasses.replace(QUARTILE, top_k_targets=10),
    **{f"r{ratio}q25w4t0": dataclasses.replace(QUARTILE, floor_ratio=float(ratio)) for ratio in (2, 4, 5, 6, 8)},
    **{f"{name}r5q25w4t0": dataclasses.replace(picking, floor_ratio=5.0)
       for name, picking in (("d8", dataclasses.replace(QUARTILE, dist_freq=8, dist_time=4)),
                             ("d6", dataclasses.replace(QUARTILE, dist_freq=6, dist_time=3)),
                             ("k10", dataclasses.replace(QUARTILE, top_k_targets=10)))},
}
#: Floors subtracted instead of divided: name -> (quantile, times the floor subtracted).
SUBTRACTED = {"s50c1w4t0": (0.5, 1.0), "s50c2w4t0": (0.5, 2.0), "s25c3w4t0": (0.25, 3.0)}
#: Every last look: the pickings, the subtracted floors, and the default's whitened look with ±1 frame.
LAST_LOOKS = [*PICKINGS, *SUBTRACTED, "r5q25w4t1"]


def subtracted_fingerprint(y: np.ndarray, params: FingerprintParams, quantile: float, scale: float) -> Fingerprint:
    """The seed's picking on the magnitudes less ``scale`` times each bin's floor (clipped at 0), not divided by it.

    Dividing flattens the spectrum's tilt, so the peaks that win can lie where the stored side had none;
    subtracting keeps the music's own tilt and takes the stationary noise off.
    """
    magnitudes = magnitude_spectrogram(y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max)
    residual = np.maximum(magnitudes - scale * spectral_floor(magnitudes, quantile), 0).astype(magnitudes.dtype)
    cmap = constellation_map(residual, dist_freq=params.peak_dist_freq, dist_time=params.peak_dist_time, thresh=0.0)
    peaks = extract_peaks(residual, cmap & (magnitudes > params.peak_thresh) & (residual > 0))
    return fingerprint_from_peaks(peaks, zone_hashes(peaks, params.zones, top_k=params.top_k_targets), params,
                                  n_samples=y.size, n_frames=int(magnitudes.shape[1]))


def last_look(audio: np.ndarray, params: FingerprintParams, name: str) -> tuple[tuple[Fingerprint, ...], int]:
    """A last look's fingerprints at the four shifts, and its offset tolerance."""
    offsets = shift_samples(4, params.hop_length)
    if name in SUBTRACTED:
        return tuple(subtracted_fingerprint(audio[o:], params, *SUBTRACTED[name]) for o in offsets), 0
    picking = WHITENED_LOOK if name == "r5q25w4t1" else PICKINGS[name]
    return tuple(query_fingerprint(audio[o:], params, picking) for o in offsets), int(name == "r5q25w4t1")


def load(patterns: list[str]) -> dict[str, dict[str, Any]]:
    """Every query's record, by file name: look_scores.py's lines, then this script's merged into them."""
    recs: dict[str, dict[str, Any]] = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            for line in open(path):
                rec = json.loads(line)
                recs.setdefault(rec["file"], {}).update(rec)
    return {name: rec for name, rec in recs.items() if "error" not in rec}


def speeds_answer(rec: dict[str, Any], penalty: float) -> tuple[str, float]:
    """The speeds step: the screen, then the screened factor at every shift when it stood out."""
    track, score = rec["screen"][0], max(rec["screen"][1] - penalty, 0.0)
    if score >= SCREEN_SCORE:
        track, score = rec["at"][0], max(rec["at"][1] - penalty, 0.0)
    return str(track), score


def decide(rec: dict[str, Any], steps: list[tuple[str, float]]) -> str:
    """The track named by these (look, penalty) steps, taken in order, or "" for no match."""
    for look, penalty in steps:
        track, score = speeds_answer(rec, penalty) if look == "speeds" else (rec[look][0], max(rec[look][1] - penalty, 0.0))
        if score > SCORE_NEEDED:
            return str(track)
    return ""


def reaches(rec: dict[str, Any], step: int) -> bool:
    """True if the default (9 tests) takes this step (2: the pooled look; 4: the whitened look)."""
    penalty = math.log10(DEFAULT_TESTS)
    looks = ["first"] if step == 2 else ["first", "shift", "speeds"]
    return decide(rec, [(look, penalty) for look in looks]) == ""


def raw_look(store: Store, params: FingerprintParams, names: dict[int, str], variant: SpeedVariant,
             tolerance: int) -> list[Any]:
    """One look's raw answer (``tests=1``): [best track's file name, score, votes, speed, hashes sent]."""
    result = match_fingerprint(store, [variant], params, zone=ZONE, tests=1, tolerance=tolerance, top_k=2)
    best = result.best
    return [names.get(best.track_id, "") if best else "", result.score, best.votes if best else 0, result.speed,
            result.n_query_hashes]


def record(patterns: list[str], folder: Path, out_path: Path, part: int, parts: int, only: set[str] | None) -> None:
    """Write the looks of this script (or ``only`` these) for every ``parts``-th query (from ``part``) reaching step 2."""
    wanted = only or {"q25w4t0", "q25sw4t1", *LAST_LOOKS}
    recs = [rec for rec in load(patterns).values() if reaches(rec, 4 if wanted <= set(LAST_LOOKS) else 2)]
    recs = recs[part::parts]
    started = time.time()
    with open_store(None) as store, open(out_path, "w") as out:
        params = store.params(duration_s=None)
        names = {v: k for k, v in store.tracks.ids_by_file_name().items()}

        def look(fingerprints: tuple[Any, ...], tolerance: int) -> list[Any]:
            return raw_look(store, params, names, SpeedVariant(1.0, fingerprints), tolerance)

        for i, rec in enumerate(recs):
            audio = load_audio(folder / rec["file"], sample_rate=params.sample_rate, duration_s=None)
            offsets = shift_samples(4, params.hop_length)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                new: dict[str, Any] = {"file": rec["file"]}
                if wanted & {"q25w4t0", "q25sw4t1"}:
                    stored = tuple(fingerprint_signal(audio[o:], params) for o in offsets)
                    quartile = tuple(query_fingerprint(audio[o:], params, QUARTILE) for o in offsets)
                    new.update({"q25w4t0": look(quartile, 0), "q25sw4t1": look(stored + quartile, 1)})
                if reaches(rec, 4):
                    for name in (n for n in LAST_LOOKS if n in wanted):
                        new[name] = look(*last_look(audio, params, name))
            out.write(json.dumps(new) + "\n")
            out.flush()
            if i % 20 == 0:
                print(i, len(recs), round(time.time() - started), flush=True)


def steps_of(looks: list[str], tests: int) -> list[tuple[str, float]]:
    """Steps with equal shares of alpha: every look lowered by log10(tests)."""
    return [(look, math.log10(tests)) for look in looks]


DEFAULT_LOOKS = ["first", "shift", "speeds", "q25w4t0"]
SCHEMES: dict[str, list[tuple[str, float]]] = {
    "default (9 tests)": steps_of(DEFAULT_LOOKS, 9),
    "first merged (8)": steps_of(DEFAULT_LOOKS, 8),
    "speeds one test (4)": steps_of(DEFAULT_LOOKS, 4),
    "first merged, speeds one test (3)": steps_of(DEFAULT_LOOKS, 3),
    "whitened pooled into step 2 (8)": steps_of(["first", "q25sw4t1", "speeds"], 8),
    "whitened pooled, first merged (7)": steps_of(["first", "q25sw4t1", "speeds"], 7),
    "whitened pooled, first merged, speeds one test (2)": steps_of(["first", "q25sw4t1", "speeds"], 2),
    "no union bound (1)": steps_of(DEFAULT_LOOKS, 1),
    **{f"last look {name} (9)": steps_of([*DEFAULT_LOOKS[:3], name], 9) for name in LAST_LOOKS},
    "two last looks r5q25w4t0, s50c2w4t0 (10)": steps_of([*DEFAULT_LOOKS[:3], "r5q25w4t0", "s50c2w4t0"], 10),
}


def simulate(patterns: list[str]) -> None:
    """Print top-1 % / false positives per degradation and length for every scheme."""
    tables = tally(list(load(patterns).values()), SCHEMES, decide)
    for names in (list(SCHEMES)[:8], [list(SCHEMES)[0], *list(SCHEMES)[8:]]):
        print_table(tables, names)
        print()


def null(patterns: list[str]) -> None:
    """Negatives whose raw score in each look exceeds lower bars; the first and pooled looks' alarms apart."""
    negatives = [rec for rec in load(patterns).values() if not rec["true"]]
    looks = ["first", "shift", "screen", "at", "q25w4t0", "r5q25w4t0"]
    print(f"{len(negatives)} negatives; negatives whose raw score (tests=1) exceeds the bar")
    print("| bar | " + " | ".join(looks) + " | first or shift | any of first, shift, at, q25w4t0 |")
    print("|---:|" + "---:|" * (len(looks) + 2))
    for bar in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        counts = [sum(rec[look][1] > bar for rec in negatives if look in rec) for look in looks]
        either = sum(max(rec["first"][1], rec["shift"][1]) > bar for rec in negatives)
        every = sum(max(rec[look][1] for look in ("first", "shift", "at", "q25w4t0")) > bar for rec in negatives)
        print(f"| {bar} | " + " | ".join(map(str, counts)) + f" | {either} | {every} |")
    for look in ("q25w4t0", *LAST_LOOKS):
        sent = [rec[look][4] for rec in negatives if look in rec and reaches(rec, 4)]
        if sent:
            print(f"{look}: hashes a negative that reaches step 4 sends, median {np.median(sent):.0f} "
                  f"({len(sent)} negatives)")


def main() -> None:
    """Parse the command line and run ``record``, ``simulate`` or ``null``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="the looks of this script for the queries that reach step 2")
    rec.add_argument("records", help="glob of look_scores.py record's JSON lines")
    rec.add_argument("folder", type=Path, help="the folder of the queries' audio files")
    rec.add_argument("out", type=Path)
    rec.add_argument("--part", type=int, default=0, help="take every --parts-th query from this one")
    rec.add_argument("--parts", type=int, default=1)
    rec.add_argument("--looks", help="comma-separated names: record only these looks (last looks only: the "
                     "queries that reach step 4)")
    for name in ("simulate", "null"):
        command = commands.add_parser(name, help="replay the schemes" if name == "simulate" else "negatives' alarms")
        command.add_argument("records", nargs="+", help="globs of both scripts' JSON lines")
    args = parser.parse_args()
    if args.command == "record":
        record([args.records], args.folder, args.out, args.part, args.parts,
               set(args.looks.split(",")) if args.looks else None)
    elif args.command == "simulate":
        simulate(args.records)
    else:
        null(args.records)


if __name__ == "__main__":
    main()
