"""Where one audio upload's CPU goes in ``fpstore serve``'s request path, positives and negatives apart.

Runs what ``POST /v1/match`` runs for a WAV body (:func:`fpstore.serve.match_upload`), in this
process, one query at a time, on the excerpts ``benchmarks/serve.py`` sends (same ``--seed``), against a
catalogue that script built (``--reuse``). Each part is timed with this process's CPU clock by wrapping
the function that does it: the decoding, each fingerprint (spectrogram, peaks, hashes, the query-side
peak pickings, the resampling for a speed), each of the matcher's looks (by its step: as it is, the
shifts, the speeds' screen, one speed at every shift, the own picks), and in the looks the lookup
(the driver and unpacking; PostgreSQL's own CPU is read from /proc for its processes) and the rest (the
vote, the null). Prints the mean milliseconds per query for positives and negatives, and the looks taken.

Usage::

    python benchmarks/serve_profile.py --embedded /tmp/serve-bench-pg --clips ../corpus/dev --tracks 1000 --queries 60
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from match import run_on_server  # benchmarks/match.py
from serve import SR, cpu_seconds, excerpts, split_clips, wav_bytes  # benchmarks/serve.py
from sqlalchemy.engine import make_url

import fpstore.matching.matcher as matcher
import fpstore.matching.ranking as ranking
import fpstore.runtime.workers as workers
import fpstore.signal.analysis as analysis
import fpstore.signal.query_peaks as query_peaks
import fpstore.signal.variants as variants
from fpstore import serve
from fpstore.db.catalogue import open_store
from fpstore.matching.evidence import DEFAULT_ZONE, ROBUST, DecisionRule
from fpstore.matching.query import PreparedQuery


class Clock:
    """CPU time of this process per part, the parts nested (a part's time excludes the parts inside it)."""

    def __init__(self) -> None:
        self.totals: collections.Counter[str] = collections.Counter()
        self._stack: list[list[Any]] = []  # [name, started, time of the parts inside]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._stack.append([name, time.process_time(), 0.0])
        try:
            yield
        finally:
            name, started, inner = self._stack.pop()
            spent = time.process_time() - started
            self.totals[name] += spent - inner
            if self._stack:
                self._stack[-1][2] += spent

    def wrap(self, module: Any, attribute: str, name: str | None = None) -> None:
        original: Callable[..., Any] = getattr(module, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name or attribute):
                return original(*args, **kwargs)

        setattr(module, attribute, timed)


STEPS = {"shifted": "look: shifts", "screen": "look: speeds screen", "at_speed": "look: one speed, shifts",
         "picked": "look: own picks"}


def instrument(clock: Clock) -> None:
    """Wrap every part named in the module docstring."""
    clock.wrap(workers, "load_audio", "decode (load_audio)")
    clock.wrap(variants, "change_speed", "resample for a speed")
    clock.wrap(analysis, "magnitude_spectrogram", "spectrogram")
    clock.wrap(analysis, "find_peaks", "peaks")
    clock.wrap(analysis, "zone_hashes", "hashes")
    clock.wrap(variants, "query_fingerprint", "query-side picking (whitened)")
    clock.wrap(query_peaks, "magnitude_spectrogram", "spectrogram")
    for method, label in STEPS.items():  # the fingerprints a step computes, apart from its lookup and vote
        original = getattr(PreparedQuery, method)

        def fingerprinted(self: PreparedQuery, *args: Any, original: Callable[..., Any] = original,
                          label: str = label) -> Any:
            with clock.part(f"{label}: fingerprints (rest)"):
                return original(self, *args)

        setattr(PreparedQuery, method, fingerprinted)

    original_match = ranking.match_fingerprint

    def look(store: Any, variants_: Any, *args: Any, **kwargs: Any) -> Any:
        n_fingerprints = sum(len(v.fingerprints) for v in variants_)
        with clock.part(f"look of {n_fingerprints} fingerprint(s): vote, null, answer"):
            clock.totals[f"looks of {n_fingerprints} fingerprint(s) (count)"] += 1
            return original_match(store, variants_, *args, **kwargs)

    matcher.match_fingerprint = look


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="URL of a maintenance database")
    parser.add_argument("--embedded", type=Path, help="an embedded PostgreSQL with its data here")
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=60, help="positives and negatives, half each")
    parser.add_argument("--length", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run_on_server(args, run)


def run(args: argparse.Namespace) -> None:
    url = make_url(args.server).set(drivername="postgresql+psycopg", database=f"fpstore_serve_bench_{args.tracks}")
    pid_file = args.embedded / "pgdata" / "postmaster.pid" if args.embedded else None
    postmaster = int(pid_file.read_text().split()[0]) if pid_file else None
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        _, inside, held_out = split_clips(args.clips, Path(scratch) / "in_db")
        classes = {"positives": excerpts(inside, args.queries // 2, args.length, rng),
                   "negatives": excerpts(held_out, args.queries // 2, args.length, rng)}
    clock = Clock()
    instrument(clock)
    options = serve.MatchOptions(DEFAULT_ZONE, 2, DecisionRule(), ROBUST, "python", False)  # the route's defaults
    with open_store(url.render_as_string(hide_password=False)) as store:
        params = serve.database_params(store)
        clock.wrap(store.lookup, "run", "lookup (driver, unpacking)")
        clock.wrap(store.tracks, "names", "track names")
        for name, chosen in classes.items():
            bodies = [wav_bytes(y) for _, y in chosen]
            serve.match_upload(store, params, bodies[0], "warm-up", options)
            clock.totals.clear()
            named = 0
            pg_before, started = cpu_seconds(postmaster) if postmaster else 0.0, time.process_time()
            for body in bodies:
                with clock.part("the rest (spooling, JSON, ...)"):
                    named += serve.match_upload(store, params, body, "<upload>", options)["match"] is not None
            total = time.process_time() - started
            pg = (cpu_seconds(postmaster) - pg_before) if postmaster else float("nan")
            n = len(bodies)
            print(f"\n{name}: {n} queries of {args.length:g} s at {SR} Hz, {named} named; CPU per query: "
                  f"this process {1000 * total / n:.1f} ms, PostgreSQL {1000 * pg / n:.1f} ms")
            print("| part | ms per query |\n|---|---:|")
            for part, spent in sorted(clock.totals.items(), key=lambda item: -item[1]):
                print(f"| {part} | {spent / n if '(count)' in part else 1000 * spent / n:.2f} |")


if __name__ == "__main__":
    main()
