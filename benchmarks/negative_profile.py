"""Where a query that names nothing spends its time: fingerprints of the variants, lookups, vote and null.

Matches each query of ``--queries`` (WAV/FLAC/MP3 files, or a ``queries.csv`` of the corpus layout: its
rows with an empty ``true_track``) as ``fpstore match`` does by default (:data:`fpstore.matching.evidence.ROBUST`,
the calibrated rule), against an existing database, and splits each query's wall time into:

- ``fingerprint``: the query as it is (decoding excluded: the samples are read before timing);
- ``variants``: fingerprinting the other shifts and speeds and the whitened look (made lazily, when a step is taken);
- ``lookup``: the posting lookups (server time plus transfer; ``Lookup.postings``, its statements run at once
  on ``--statements-at-once`` connections);
- ``frames``: reading the voted tracks' lengths (``Lookup.track_frames``);
- ``vote``: the rest of each step (pairs, distinct anchors, the vote, the tracks null, the answer).

Also counted per query: lookup statements (looks), keys sent, postings fetched. Prints the median and p95 of each,
then the same parts in CPU seconds of this process (``time.process_time``: the client's share, the figure
to compare on a machine shared with other jobs; the lookup's CPU is the client's side of the statements,
the server's own is not counted). ``--cprofile FILE`` writes cProfile's statistics of the timed queries.

Usage::

    python benchmarks/negative_profile.py --url postgresql://fpstore@/fpstore_bench_10000?host=/tmp/x \\
        --queries /tmp/negatives --limit 50
    python benchmarks/negative_profile.py --embedded /tmp/scale-bm --database fpstore_bench_10000 ...
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.db.store import Store
from fpstore.matching.evidence import ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import PreparedQuery
from fpstore.signal.audio import load_audio
from fpstore.signal.variants import speed_variant


def query_files(spec: Path, limit: int) -> list[Path]:
    if spec.suffix == ".csv":
        with open(spec, newline="") as f:
            files = [spec.parent / r["file"] for r in csv.DictReader(f) if not r["true_track"]]
    else:
        files = sorted(p for p in spec.iterdir() if p.suffix.lower() in (".wav", ".flac", ".mp3"))
    return files[:limit]


class Clock:
    """Sums the wall time and this process's CPU time of wrapped calls by label."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def wrap(self, label: str, fn: Callable[..., Any], count: Callable[[Any, tuple[Any, ...]], dict[str, float]] | None = None
             ) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn(*args, **kwargs)
            self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - t0
            self.cpu[label] = self.cpu.get(label, 0.0) + time.process_time() - c0
            for k, v in (count(out, args) if count else {}).items():
                self.counts[k] = self.counts.get(k, 0.0) + v
            return out
        return timed


def profile(store: Store, files: list[Path], rule: DecisionRule, evidence: Evidence = ROBUST) -> list[dict[str, float]]:
    params = store.params(duration_s=None)
    lookup = store.lookup
    rows = []
    for path in files:
        y = load_audio(path, sample_rate=params.sample_rate, duration_s=None)
        clock = Clock()
        # A look's lookup is timed whole (its statements may run at once on several connections).
        lookup.postings = clock.wrap("lookup", type(lookup).postings.__get__(lookup),  # type: ignore[method-assign]
                                     lambda out, args: {"looks": 1, "keys": args[1].size, "postings": len(out[0])})
        lookup.track_frames = clock.wrap("frames", type(lookup).track_frames.__get__(lookup))  # type: ignore[method-assign]
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # As prepare_query does: speed 1.0's spectrograms kept for the whitened look.
            spectrograms: dict[int, np.ndarray] = {}
            prepared = PreparedQuery(speed_variant(y, params, 1.0, 1, spectrograms=spectrograms), y, spectrograms)
        t1, c1 = time.perf_counter(), time.process_time()
        # The methods that fingerprint the variants (of this version of the matcher), each call a step's.
        for name in ("shifted", "others", "screen", "at_speed", "picked"):
            if hasattr(prepared, name):
                setattr(prepared, name, clock.wrap("variants", getattr(prepared, name)))
        result = match_prepared(store, prepared, params, evidence=evidence, rule=rule)
        t2, c2 = time.perf_counter(), time.process_time()
        spent, cpu = clock.spent, clock.cpu
        rows.append({
            "total": t2 - t0, "fingerprint": t1 - t0, "variants": spent.get("variants", 0.0),
            "lookup": spent.get("lookup", 0.0), "frames": spent.get("frames", 0.0),
            "vote": (t2 - t1) - sum(spent.values()),
            "cpu total": c2 - c0, "cpu fingerprint": c1 - c0, "cpu variants": cpu.get("variants", 0.0),
            "cpu lookup": cpu.get("lookup", 0.0), "cpu frames": cpu.get("frames", 0.0),
            "cpu vote": (c2 - c1) - sum(cpu.values()),
            "looks": clock.counts.get("looks", 0.0), "keys": clock.counts.get("keys", 0.0),
            "postings": clock.counts.get("postings", 0.0), "named": float(result.match is not None),
        })
        del lookup.postings, lookup.track_frames
    return rows


def report(rows: list[dict[str, float]]) -> None:
    print(f"{len(rows)} queries, {int(sum(r['named'] for r in rows))} named something")
    print("| part | median | p95 | mean |")
    print("|---|---:|---:|---:|")
    for key in ("total", "fingerprint", "variants", "lookup", "frames", "vote"):
        ms = 1000 * np.array([r[key] for r in rows])
        print(f"| {key} (ms) | {np.median(ms):.0f} | {np.percentile(ms, 95):.0f} | {ms.mean():.0f} |")
    for key in ("total", "fingerprint", "variants", "lookup", "frames", "vote"):
        ms = 1000 * np.array([r[f"cpu {key}"] for r in rows])
        print(f"| CPU {key} (ms) | {np.median(ms):.0f} | {np.percentile(ms, 95):.0f} | {ms.mean():.0f} |")
    for key in ("looks", "keys", "postings"):
        v = np.array([r[key] for r in rows])
        print(f"| {key} | {np.median(v):,.0f} | {np.percentile(v, 95):,.0f} | {v.mean():,.0f} |")


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``, or ``--embedded`` and ``--database``: the database a benchmark matches against."""
    parser.add_argument("--url", help="database URL")
    parser.add_argument("--embedded", type=Path, help="instead of --url: fpstore's embedded server with its data here")
    parser.add_argument("--database", help="with --embedded: the database's name")


def on_database(args: argparse.Namespace, run: Callable[[str], None], shared_buffers: str | None = None) -> None:
    """``run(url)`` on the database of :func:`add_database_arguments` (the embedded server started for it)."""
    if args.embedded is not None:
        from fpstore.db.embedded import TUNING, EmbeddedServer

        if shared_buffers:
            TUNING["shared_buffers"] = shared_buffers
        with EmbeddedServer(args.embedded) as server:
            run(make_url(server.url).set(drivername="postgresql+psycopg", database=args.database)
                .render_as_string(hide_password=False))
    else:
        run(args.url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_database_arguments(parser)
    parser.add_argument("--queries", type=Path, required=True, help="folder of audio files, or a queries.csv")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--max-postings-per-key", type=int, help="Evidence.max_postings_per_key (default: none)")
    parser.add_argument("--warm", type=int, default=3, help="queries matched first, untimed")
    parser.add_argument("--cprofile", type=Path, help="write cProfile's statistics (CPU time) of the timed queries here")
    parser.add_argument("--no-whitened-look", action="store_true",
                        help="the default evidence without its last step, the whitened look (own_picks=())")
    parser.add_argument("--statements-at-once", type=int,
                        help="Lookup.statements_at_once: a large lookup split into this many statements run at once "
                        "(default: fpstore's)")
    parser.add_argument("--shared-buffers", help="with --embedded: start its server with this shared_buffers "
                        "(e.g. 4GB) instead of fpstore's setting")
    args = parser.parse_args()
    files = query_files(args.queries, args.limit + args.warm)

    def run(url: str) -> None:
        engine = create_engine(url)
        store = Store(engine)
        if args.statements_at_once is not None:
            store.lookup.statements_at_once = args.statements_at_once
        evidence = dataclasses.replace(ROBUST, max_postings_per_key=args.max_postings_per_key)
        if args.no_whitened_look:
            evidence = dataclasses.replace(evidence, own_picks=())
        profile(store, files[:args.warm], DecisionRule(), evidence)
        profiler = cProfile.Profile(time.process_time) if args.cprofile else None
        if profiler is not None:
            profiler.enable()
        rows = profile(store, files[args.warm:], DecisionRule(), evidence)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
        report(rows)
        engine.dispose()

    on_database(args, run, args.shared_buffers)


if __name__ == "__main__":
    main()
