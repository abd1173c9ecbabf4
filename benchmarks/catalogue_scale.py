"""fpstore on the rendered catalogue at growing sizes: ingest rate, size on disk, answers and latency (issue 25).

The catalogue is ``benchmarks/catalogue.py``'s (``renditions.csv`` and ``queries/queries.csv`` under
``--catalogue``). One database grows through ``--sizes`` (stored renditions, in id order); at each size:

- **ingest**: the renditions up to that size are ingested (``fpstore.ingest.ingest``, ``--jobs``
  workers, whole files or ``--duration`` seconds of each, the four seed zones, the duplicate check on,
  or off with ``--grow-unchecked`` but for the probe); the last ``--probe``
  files of each step are ingested on their own, timed, and the same files are then ingested into an
  empty database (dropped after): the rate with the duplicate check against the catalogue, and without
  anything to check against;
- **size**: postings, heap + indexes of ``hashes`` per posting, the database's size;
- **match**: the query excerpts of stored renditions (their ``true_track`` stored by then, the excerpt
  inside what ingest stored) and the
  negatives (renditions never stored), up to ``--queries`` of each, matched as ``fpstore match`` does by
  default; top-1 (the named track is the true one), false positives, and the latency of fingerprint +
  match (the audio decoded before timing), median and p95, per kind (clean / degraded, length).
  ``--negatives`` adds other query sets (e.g. devlarge's hard set: real music, none of it in the catalogue).

Usage::

    python benchmarks/catalogue_scale.py --embedded /tmp/cat-pg --sizes 1000,3000 --queries 200 \\
        --negatives ../corpus/devlarge/hard/queries.csv

Prints one Markdown table per quantity; the machine is whatever runs it (say so with the figures).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import math
import multiprocessing
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psycopg
from catalogue import DEFAULT_OUT  # benchmarks/catalogue.py, next to this script
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.db.store import Store
from fpstore.ingest import ingest
from fpstore.matching import matcher
from fpstore.matching.evidence import ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import PreparedQuery
from fpstore.signal.audio import load_audio
from fpstore.signal.params import FingerprintParams
from fpstore.signal.variants import speed_variant

SIZE_SQL = """
SELECT (SELECT count(*) FROM hashes),
       (SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree('hashes'))
     + (SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_index
        WHERE indrelid IN (SELECT relid FROM pg_partition_tree('hashes'))),
       pg_database_size(current_database()),
       (SELECT count(*) FROM tracks)
"""


def url_of(server: str, name: str, driver: str = "postgresql+psycopg") -> str:
    return make_url(server).set(drivername=driver, database=name).render_as_string(hide_password=False)


def create_db(server: str, name: str, drop: bool) -> None:
    with psycopg.connect(url_of(server, "postgres", "postgresql"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and drop:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or drop:
            conn.execute(f'CREATE DATABASE "{name}"')


def linked(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, folder / f.name)
    return folder


def timed_ingest(store: Store, files: list[Path], jobs: int, work: Path, duration_s: float | None,
                 check_duplicates: bool = True) -> tuple[float, int]:
    """Seconds to ingest ``files`` (linked into a fresh folder), and tracks added.

    The seconds are the files' (``IngestSummary.elapsed_s``); a merge of partitions at the end of the
    ingest is printed on a line of its own.
    """
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        folder = linked(Path(tmp) / "in", files)
        t0 = time.perf_counter()
        summary = ingest(store, folder, FingerprintParams(duration_s=duration_s), jobs=jobs,
                         check_duplicates=check_duplicates)
        for merged in summary.merges:
            print(f"ingest of {len(files)} files: {summary.elapsed_s:.1f} s; then merged {merged.partitions_merged} "
                  f"partitions into {merged.partitions_made} ({merged.postings:,} postings) in {merged.seconds:.1f} s, "
                  f"{merged.partitions_now} now (wall {time.perf_counter() - t0:.1f} s)", flush=True)
        return summary.elapsed_s, summary.tracks_added


def sizes(store: Store) -> tuple[int, float, int, int]:
    with store.raw() as conn:
        postings, hash_bytes, db_bytes, tracks = conn.execute(SIZE_SQL).fetchone()
    return int(postings), hash_bytes / max(int(postings), 1), int(db_bytes), int(tracks)


def read_queries(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a queries.csv, each with the folder of its file."""
    with open(csv_path, newline="") as f:
        return [dict(row, folder=str(csv_path.parent)) for row in csv.DictReader(f)]


def match_queries(store: Store, rows: list[dict[str, str]], evidence: Evidence = ROBUST) -> list[dict[str, object]]:
    params = store.params(duration_s=None)
    out = []
    for row in rows:
        y = load_audio(Path(row["folder"]) / row["file"], sample_rate=params.sample_rate, duration_s=None)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = PreparedQuery(speed_variant(y, params, 1.0, 1), y)
        result = match_prepared(store, prepared, params, evidence=evidence, rule=DecisionRule())
        elapsed = time.perf_counter() - t0
        named = Path(result.match.file_name).stem if result.match is not None else ""
        out.append({"kind": "negative" if not row["true_track"] else
                    ("clean" if row["degradation"] == "clean" else "degraded") + f" {row['length_s']} s",
                    "ms": 1000 * elapsed, "right": named == row["true_track"], "named": bool(named)})
    return out


def match_on(url: str, rows: list[dict[str, str]], max_postings_per_key: int | None,
             statements_at_once: int | None = None, looks_remembered: int | None = None) -> list[dict[str, object]]:
    """:func:`match_queries` in a process of its own (``--match-jobs``), on its own connection."""
    engine = create_engine(url)
    try:
        store = Store(engine)
        if statements_at_once is not None:
            store.lookup.statements_at_once = statements_at_once
        if looks_remembered is not None:
            matcher.LOOKS_REMEMBERED = looks_remembered
        return match_queries(store, rows, dataclasses.replace(ROBUST, max_postings_per_key=max_postings_per_key))
    finally:
        engine.dispose()


def match_all(url: str, rows: list[dict[str, str]], jobs: int, max_postings_per_key: int | None,
              statements_at_once: int | None = None, looks_remembered: int | None = None) -> list[dict[str, object]]:
    """Every row matched, by ``jobs`` processes at once (each a share of the rows, interleaved)."""
    if jobs == 1:
        return match_on(url, rows, max_postings_per_key, statements_at_once, looks_remembered)
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(match_on, [url] * jobs, [rows[i::jobs] for i in range(jobs)], [max_postings_per_key] * jobs,
                         [statements_at_once] * jobs, [looks_remembered] * jobs)
        return [row for part in parts for row in part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=Path, required=True, help="fpstore's embedded server, its data here")
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_OUT, help=f"the catalogue's folder [{DEFAULT_OUT}]")
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--negative-offset", type=int, default=0, help="skip this many negatives first")
    parser.add_argument("--match-jobs", type=int, default=1,
                        help="queries matched at once, each process its share (latencies then include the others')")
    parser.add_argument("--max-postings-per-key", type=int,
                        help="match with Evidence.max_postings_per_key (default: none, as fpstore match)")
    parser.add_argument("--statements-at-once", type=int,
                        help="Lookup.statements_at_once of the matching processes (default: fpstore's)")
    parser.add_argument("--looks-remembered", type=int,
                        help="matcher.LOOKS_REMEMBERED of the matching processes (0: every look fetches all its keys)")
    parser.add_argument("--queries-csv", type=Path, help="the excerpts to match [CATALOGUE/queries/queries.csv]")
    parser.add_argument("--probe", type=int, default=100, help="files per step timed with and without a catalogue")
    parser.add_argument("--queries", type=int, default=200, help="positives matched per size")
    parser.add_argument("--negative-queries", type=int, default=1000, help="negatives matched per size")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--duration", type=float, help="seconds stored per file (default: whole files, as ingest)")
    parser.add_argument("--negatives", type=Path, action="append", default=[],
                        help="a queries.csv of recordings not in the catalogue: more negatives (repeat)")
    parser.add_argument("--reuse", action="store_true", help="keep the tracks already in the database")
    parser.add_argument("--grow-unchecked", action="store_true",
                        help="ingest each step's files before the probe without the duplicate check (faster; "
                             "the renditions are distinct recordings): the probe is still checked")
    args = parser.parse_args()
    from fpstore.db.embedded import EmbeddedServer

    args.embedded.mkdir(parents=True, exist_ok=True)
    args.embedded.chmod(0o755)
    with EmbeddedServer(args.embedded) as server:
        run(args, server.url)


def run(args: argparse.Namespace, server: str) -> None:
    with open(args.catalogue / "renditions.csv", newline="") as f:
        stored = [args.catalogue / r["file"] for r in csv.DictReader(f) if r["in_db"] == "1"]
    queries = read_queries(args.queries_csv or args.catalogue / "queries" / "queries.csv")
    # Other recordings never stored here: every query of the dev corpora's sets (real music, none of it
    # in the catalogue), interleaved with the catalogue's own negatives.
    own = [q for q in queries if not q["true_track"]]
    others = [dict(q, true_track="") for extra in args.negatives for q in read_queries(extra)]
    negatives = [q for pair in zip(own, others) for q in pair] + own[len(others):] + others[len(own):]
    create_db(server, "fpstore_catalogue", drop=not args.reuse)
    engine = create_engine(url_of(server, "fpstore_catalogue"))
    store = Store(engine)
    store.upgrade()
    work = args.embedded.parent
    lines = {"ingest": ["| stored | probe files | with the catalogue (files/s) | into an empty database (files/s) | ratio |",
                        "|---:|---:|---:|---:|---:|"],
             "size": ["| stored | postings | bytes/posting (hashes heap + indexes) | database (GB) |",
                      "|---:|---:|---:|---:|"],
             "match": ["| stored | queries | n | top-1 / false positives | median (ms) | p95 (ms) |",
                       "|---:|---|---:|---:|---:|---:|"]}
    for n in [int(s) for s in args.sizes.split(",")]:
        if n > len(stored):
            print(f"only {len(stored)} stored renditions rendered: stopping before {n}")
            break
        _, _, _, have = sizes(store)
        todo = stored[have:n]
        head, probe = todo[:-args.probe], todo[-args.probe:]
        if head:
            secs, added = timed_ingest(store, head, args.jobs, work, args.duration, not args.grow_unchecked)
            print(f"{n}: ingested {added} in {secs:.0f} s", flush=True)
        if probe:  # (nothing to ingest when --reuse finds the size stored: matching only)
            with_s, _ = timed_ingest(store, probe, args.jobs, work, args.duration)
            create_db(server, "fpstore_catalogue_empty", drop=True)
            empty_engine = create_engine(url_of(server, "fpstore_catalogue_empty"))
            empty = Store(empty_engine)
            empty.upgrade()
            empty_s, _ = timed_ingest(empty, probe, args.jobs, work, args.duration)
            empty_engine.dispose()
            lines["ingest"].append(f"| {n:,} | {len(probe)} | {len(probe) / with_s:.2f} | {len(probe) / empty_s:.2f} | "
                                   f"{empty_s / with_s:.2f} |")
        postings, bpp, db_bytes, tracks = sizes(store)
        lines["size"].append(f"| {tracks:,} | {postings:,} | {bpp:.1f} | {db_bytes / 1e9:.2f} |")
        ids = {p.stem for p in stored[:n]}
        # With --duration, ingest stores the first seconds of a file only: excerpts must lie inside them.
        positives = [q for q in queries if q["true_track"] in ids
                     and float(q["start_s"]) + float(q["length_s"]) <= (args.duration or math.inf)][:args.queries]
        chosen_negatives = negatives[args.negative_offset:args.negative_offset + args.negative_queries]
        started = time.perf_counter()
        results = match_all(url_of(server, "fpstore_catalogue"), positives + chosen_negatives, args.match_jobs,
                            args.max_postings_per_key, args.statements_at_once, args.looks_remembered)
        print(f"{n}: {len(results)} queries matched in {time.perf_counter() - started:.1f} s, "
              f"{args.match_jobs} at a time", flush=True)
        for kind in sorted({str(r["kind"]) for r in results}):
            chosen = [r for r in results if r["kind"] == kind]
            ms = np.array([float(r["ms"]) for r in chosen])  # type: ignore[arg-type]
            outcome = (f"{sum(bool(r['named']) for r in chosen)} FP" if kind == "negative"
                       else f"{100 * np.mean([bool(r['right']) for r in chosen]):.1f} %")
            lines["match"].append(f"| {n:,} | {kind} | {len(chosen)} | {outcome} | {np.median(ms):.0f} | "
                                  f"{np.percentile(ms, 95):.0f} |")
        for table in lines.values():
            print("\n".join(table[-1:]), flush=True)
    engine.dispose()
    for table in lines.values():
        print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
