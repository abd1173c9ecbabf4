"""The wall time of one query at a time, with one statement per lookup and with both cores, query by query.

Matches each query of ``--queries`` (a ``queries.csv`` of the corpus layout; ``--kind negative`` takes its rows
with an empty ``true_track``, ``--kind clean10`` its clean 10 s excerpts of stored tracks) as ``fpstore match``
does by default (:data:`fpstore.matching.evidence.ROBUST`, the calibrated rule), fingerprinting included
(decoding excluded: the samples are read before timing), in four settings: ``Lookup.statements_at_once = 1``
and ``matcher.LOOKS_REMEMBERED = 0`` (one statement at a time, every look fetching all its keys); large
lookups split; split and each query's looks remembered (fpstore's default); split and ``Lookup.fetch_ahead``
(the next look fetched while one votes), each setting first in turn query by query, so that all see the
same load. Prints the median and p95 of each, the median of the per-query ratio to the first, whether the
answers agree, and how many looks the queries took.

Usage::

    python benchmarks/one_query_wall.py --embedded /tmp/scale-catpg/pg --database fpstore_catalogue \\
        --queries /work/corpus/catalogue/queries/queries.csv --kind negative --limit 20
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from negative_profile import add_database_arguments, on_database
from sqlalchemy import create_engine

from fpstore.db.lookup import Lookup
from fpstore.db.store import Store
from fpstore.matching import matcher
from fpstore.matching.evidence import ROBUST, DecisionRule
from fpstore.matching.query import PreparedQuery
from fpstore.signal.audio import load_audio
from fpstore.signal.variants import speed_variant


def query_rows(spec: Path, kind: str, limit: int, stored_s: float | None) -> list[dict[str, str]]:
    """The rows of ``kind``; with ``stored_s``, excerpts that lie inside the first ``stored_s`` seconds only."""
    with open(spec, newline="") as f:
        rows = list(csv.DictReader(f))
    wanted = [r for r in rows if (not r["true_track"] if kind == "negative" else
                                  r["true_track"] and r["degradation"] == "clean" and float(r["length_s"]) == 10
                                  and (stored_s is None or float(r["start_s"]) + 10 <= stored_s))]
    return wanted[:limit]


def timed_match(store: Store, y: np.ndarray, looks: list[int]) -> tuple[float, Any]:
    params = store.params(duration_s=None)
    looks.clear()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spectrograms: dict[int, np.ndarray] = {}
        prepared = PreparedQuery(speed_variant(y, params, 1.0, 1, spectrograms=spectrograms), y, spectrograms)
    result = matcher.match_prepared(store, prepared, params, evidence=ROBUST, rule=DecisionRule())
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_database_arguments(parser)
    parser.add_argument("--queries", type=Path, required=True, help="a queries.csv")
    parser.add_argument("--kind", choices=("negative", "clean10"), default="negative")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--stored-seconds", type=float,
                        help="the database stores this many seconds of each file (ingest --duration): positives "
                        "that lie past them are left out")
    parser.add_argument("--warm", type=int, default=3, help="queries matched first, untimed")
    args = parser.parse_args()
    rows = query_rows(args.queries, args.kind, args.limit + args.warm, args.stored_seconds)

    def run(url: str) -> None:
        engine = create_engine(url)
        store = Store(engine)
        params = store.params(duration_s=None)
        default, remembered = store.lookup.statements_at_once, matcher.LOOKS_REMEMBERED
        # (label, statements at once, looks remembered, fetch ahead): one statement at a time and every look
        # fetching all its keys; split lookups; split and remembered (fpstore's default); split and fetched ahead
        modes = [("1", 1, 0, False), (f"{default}", default, 0, False),
                 (f"{default} + memory", default, remembered, False), (f"{default} + ahead", default, 0, True)]
        looks: list[int] = []
        postings = Lookup.postings
        store.lookup.postings = lambda *a, **k: looks.append(1) or postings(store.lookup, *a, **k)  # type: ignore[method-assign]
        wall: dict[str, list[float]] = {label: [] for label, _, _, _ in modes}
        taken, same, named = [], 0, 0
        for i, row in enumerate(rows):
            y = load_audio(args.queries.parent / row["file"], sample_rate=params.sample_rate, duration_s=None)
            answers = {}
            for label, at_once, looks_remembered, ahead in modes[i % 4:] + modes[:i % 4]:  # each first in turn
                store.lookup.statements_at_once, store.lookup.fetch_ahead = at_once, ahead
                matcher.LOOKS_REMEMBERED = looks_remembered
                seconds, result = timed_match(store, y, looks)
                answers[label] = (result.match, result.candidates, result.speed)
                if i >= args.warm:
                    wall[label].append(1000 * seconds)
            if i >= args.warm:
                taken.append(len(looks))
                same += len({str(answer) for answer in answers.values()}) == 1
                named += answers["1"][0] is not None and Path(answers["1"][0].file_name).stem == row["true_track"]
        n = len(taken)
        looks_taken = dict(zip(*(a.tolist() for a in np.unique(taken, return_counts=True))))
        print(f"{n} {args.kind} queries, each in every setting (in turn first); the same answer in all: {same} of {n}; "
              f"named right: {named}; looks taken: {looks_taken}")
        print("| statements at once | median (ms) | p95 (ms) | mean (ms) | per-query ratio to 1: median (p25-p75) |")
        print("|---|---:|---:|---:|---:|")
        for label, ms in wall.items():
            ratio = np.array(ms) / np.array(wall["1"])
            print(f"| {label} | {np.median(ms):.0f} | {np.percentile(ms, 95):.0f} | {np.mean(ms):.0f} | "
                  f"{np.median(ratio):.2f} ({np.percentile(ratio, 25):.2f}-{np.percentile(ratio, 75):.2f}) |")
        engine.dispose()

    on_database(args, run)


if __name__ == "__main__":
    main()
