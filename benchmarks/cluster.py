"""One database against 2 and 4 shards behind a PL/Proxy router, on this machine: ingest rate, match latency, answers.

The script starts its own servers in ``--workdir``: the router from Debian's PostgreSQL with PL/Proxy
(``postgresql-15-plproxy``), and one server per shard plus one for the single database from fpstore's
embedded wheel, so that the single database and the shards run the same PostgreSQL. For each catalogue
(``one``, ``2 shards``, ``4 shards``):

1. **ingest**: ``fpstore ingest --clips`` with ``--jobs`` worker processes into an empty catalogue
   (through the router for the clusters): tracks/s, the same files every time, ``--ingest-rounds``
   rounds with the catalogues in a rotated order (none always goes first), median per catalogue.
2. **replicas**, as ``benchmarks/match.py`` makes them: real track ``t`` gets transposed copies with ids
   ``t + r * 1024`` until the catalogue holds ``--tracks``. ``1024`` is a multiple of every shard count,
   so a replica has its source's residue and lives on its source's shard: each shard replicates its own
   tracks, as a cluster loaded by content would hold them. The partition is UNLOGGED during the load and
   its index built afterwards, then ``VACUUM ANALYZE``; ``--compact`` then compacts every database
   (``fpstore db compact``: one partition, rows sorted by ``(zone, hash)``).
3. **match**: ``--queries`` random 5 s and 10 s excerpts of the clips (the same for every catalogue),
   fingerprinted once, each matched on every catalogue in turn (the catalogues in a rotated order, so
   that no drift of the machine favours one; all of them are built first and stay up), in this process,
   with the Python matcher (``--match-zone``) and with the SQL vote (``fpstore_match_zones``, on the
   router for a cluster), after one warm-up pass: median and p95 of the match time (what ``fpstore
   match`` adds after fingerprinting), and the median against the first catalogue's.
4. **answers**: each query's ranked candidates as ``(source file name, replica number, votes, offset)``
   (track ids differ between catalogues), compared with the single database's; ties at the cut of the
   top 5 are left out (their members depend on the ids).

Then a sizing table for 100k to 1M full tracks of ``--track-seconds``, from the measured bytes per posting
(heap and indexes of ``hashes``) and ``--postings-per-second`` of audio in four zones (measure it with
``fpstore ingest --duration full`` on full tracks, then their postings over their seconds in ``tracks``).

Usage::

    python benchmarks/cluster.py --clips ../corpus/devlarge/clips30 --tracks 2048 --queries 30
"""

from __future__ import annotations

import argparse
import glob
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import psycopg
from match import make_queries, replicate
from sqlalchemy.engine import make_url

from fpstore.db.catalogue import open_store
from fpstore.db.cluster import ClusterStore, init_cluster
from fpstore.db.compact import compact
from fpstore.db.embedded import EmbeddedServer
from fpstore.db.store import Store
from fpstore.ingest import ingest
from fpstore.matching.evidence import ALL_ZONES, PLAIN_MIN_VOTES_ALL_ZONES, PLAIN_MIN_VOTES_ONE_ZONE, DecisionRule
from fpstore.matching.ranking import match_fingerprint
from fpstore.matching.results import MatchResult
from fpstore.signal.fingerprint import Fingerprint, fingerprint_signal

ID_STEP = 1024


def plproxy_bindir() -> Path:
    for control in sorted(glob.glob("/usr/share/postgresql/*/extension/plproxy.control")):
        bindir = Path("/usr/lib/postgresql") / Path(control).parents[1].name / "bin"
        if (bindir / "postgres").is_file():
            return bindir
    raise SystemExit("PL/Proxy is not installed: apt-get install postgresql-15-plproxy")


@contextmanager
def servers(workdir: Path, n_shards: int) -> Iterator[dict[str, str]]:
    """Start the router, ``n_shards`` shard servers and the single database's server; their maintenance URLs."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    with ExitStack() as stack:
        urls = {"router": stack.enter_context(EmbeddedServer(workdir / "router", bindir=plproxy_bindir())).url,
                "one": stack.enter_context(EmbeddedServer(workdir / "one")).url}
        for k in range(n_shards):
            urls[f"s{k}"] = stack.enter_context(EmbeddedServer(workdir / f"s{k}")).url
        yield urls


def new_database(server_url: str, name: str) -> str:
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def make_catalogue(urls: dict[str, str], n_shards: int) -> str:
    """A fresh catalogue: a database on the single server, or a router and ``n_shards`` shards; its URL."""
    if n_shards == 0:
        return new_database(urls["one"], "bench_one")
    router = new_database(urls["router"], f"bench_router_{n_shards}")
    init_cluster(router, [new_database(urls[f"s{k}"], f"bench_shard_{n_shards}") for k in range(n_shards)])
    return router


def data_stores(store: Store) -> list[Store]:
    return store.shards if isinstance(store, ClusterStore) else [store]


def fill_with_replicas(store: Store, n_tracks: int) -> int:
    """Replicate every real track on its own database until the catalogue holds about ``n_tracks``; the count."""
    n_real = store.tracks.count()
    replicas = math.ceil(n_tracks / n_real) - 1
    for index, database in enumerate(data_stores(store)):
        raw = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(raw, autocommit=True) as conn:
            last_real = conn.execute("SELECT coalesce(max(id), 0) FROM tracks").fetchone()[0]  # type: ignore[index]
            assert last_real < ID_STEP, "the real clips took the bulk path: use fewer than 64 clips"
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("DROP INDEX hashes_zone_hash")
            conn.execute("ALTER TABLE hashes_main SET UNLOGGED")
            replicate(conn, f"database {index}", replicas=replicas, id_step=ID_STEP, last_real_id=ID_STEP - 1,
                      last_id=2**31 - 1)
            conn.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")
            conn.execute("VACUUM ANALYZE hashes")
    return n_real * (replicas + 1)


def postings_and_bytes(store: Store) -> tuple[int, int]:
    total_postings = total_bytes = 0
    for database in data_stores(store):
        raw = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(raw) as conn:
            postings, heap, index = conn.execute(
                "SELECT (SELECT count(*) FROM hashes),"
                " (SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree('hashes')),"
                " (SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i"
                "  JOIN pg_partition_tree('hashes') p ON p.relid = i.indrelid)").fetchone()  # type: ignore[misc]
        total_postings += int(postings)
        total_bytes += int(heap) + int(index)
    return total_postings, total_bytes


def labels(store: Store, candidates: list) -> list[tuple[str, int, int, int]]:
    """``(source file name, replica number, votes, offset)`` per candidate, ties at the cut left out, sorted."""
    names = store.tracks.names(sorted({c.track_id % ID_STEP for c in candidates}))
    kept = [c for c in candidates if len(candidates) < 5 or c.votes > candidates[-1].votes]
    return sorted((names.get(c.track_id % ID_STEP, "?"), c.track_id // ID_STEP, c.votes, c.offset_frames) for c in kept)


def time_matching(stores: dict[int, Store], queries: list, zone: str, method: str
                  ) -> dict[int, tuple[dict[float, list[float]], list]]:
    """Match every query on every catalogue, the catalogues in a rotated order per query (no drift favours one).

    Returns, per catalogue, the match times by query length and each query's (top-1 right, labelled candidates).
    """
    params = next(iter(stores.values())).params(duration_s=None)
    fingerprints = [(length_s, fingerprint_signal(y, params)) for length_s, y, _ in queries]
    # The notebook's vote under the Poisson bound: what a router's SQL vote can compute (the tracks null
    # ranks every voted track of the catalogue), and what the README's figures measured.
    rule = DecisionRule(min_votes=PLAIN_MIN_VOTES_ALL_ZONES if zone == ALL_ZONES else PLAIN_MIN_VOTES_ONE_ZONE,
                        null="poisson")

    def answer(store: Store, fp: Fingerprint) -> MatchResult:
        return match_fingerprint(store, fp, params, zone=zone, method=method, count="pairs", rule=rule)

    order = list(stores)
    for store in stores.values():  # warm the caches, as a service would be
        for _, fp in fingerprints:
            answer(store, fp)
    found: dict[int, tuple[dict[float, list[float]], list]] = {n: ({}, []) for n in order}
    for index, ((length_s, fp), (_, _, true_name)) in enumerate(zip(fingerprints, queries)):
        for n_shards in order[index % len(order):] + order[:index % len(order)]:
            times, answers = found[n_shards]
            started = time.perf_counter()
            result = answer(stores[n_shards], fp)
            times.setdefault(length_s, []).append(time.perf_counter() - started)
            answers.append((result.match is not None and result.match.file_name == true_name,
                            labels(stores[n_shards], result.candidates)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="folder of real clips (fewer than 64)")
    parser.add_argument("--tracks", type=int, default=2048, help="catalogue size after replication")
    parser.add_argument("--queries", type=int, default=30, help="queries per length (5 s and 10 s)")
    parser.add_argument("--shards", default="0,2,4", help="catalogues to build: 0 is the single database")
    parser.add_argument("--jobs", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--ingest-rounds", type=int, default=3, help="timed ingests of every catalogue")
    parser.add_argument("--compact", action="store_true",
                        help="compact every database of every catalogue (fpstore db compact) before timing")
    parser.add_argument("--match-zone", action="append", help="zone(s) the Python matcher votes in [all, Fsmall_Tlong]")
    parser.add_argument("--postings-per-second", type=float, default=943.0,
                        help="postings per second of audio in four zones, for the sizing table [943: the dev "
                             "corpus's 14 full tracks]")
    parser.add_argument("--track-seconds", type=float, default=210.0, help="length of a catalogue's track, sizing")
    parser.add_argument("--workdir", type=Path, help="servers' data folders (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",")]
    zones = args.match_zone or [ALL_ZONES, "Fsmall_Tlong"]
    queries = make_queries(args.clips, args.queries, args.seed)
    for path in sorted(args.clips.iterdir()):  # every catalogue then reads the clips from the page cache
        path.read_bytes()
    with ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fpstore-bench-cluster-")))
        urls = stack.enter_context(servers(workdir, max(shard_counts)))
        run(args, urls, shard_counts, zones, queries)


def catalogue_label(n_shards: int) -> str:
    return "one database" if n_shards == 0 else f"{n_shards} shards"


def time_ingests(args: argparse.Namespace, urls: dict[str, str], shard_counts: list[int]) -> list[str]:
    """Ingest the clips into fresh catalogues, ``--ingest-rounds`` times each in rotated order; Markdown rows."""
    seconds: dict[int, list[float]] = {n: [] for n in shard_counts}
    for round_index in range(args.ingest_rounds):
        for n_shards in shard_counts[round_index % len(shard_counts):] + shard_counts[:round_index % len(shard_counts)]:
            with open_store(make_catalogue(urls, n_shards)) as store:
                summary = ingest(store, args.clips, jobs=args.jobs)
            seconds[n_shards].append(summary.elapsed_s)
            print(f"  ingest round {round_index + 1}, {catalogue_label(n_shards)}: {summary.tracks_added} tracks, "
                  f"{summary.postings:,} postings in {summary.elapsed_s:.1f} s", flush=True)
    n_files = sum(1 for _ in args.clips.iterdir())
    reference = float(np.median(seconds[shard_counts[0]]))
    return [f"| {catalogue_label(n)} | {n_files} | {', '.join(f'{x:.1f}' for x in times)} | "
            f"{n_files / np.median(times):.2f} | {100 * reference / np.median(times):.0f} % |" for n, times in seconds.items()]


def run(args: argparse.Namespace, urls: dict[str, str], shard_counts: list[int], zones: list[str], queries: list) -> None:
    ingest_rows = time_ingests(args, urls, shard_counts)
    with ExitStack() as stack:
        stores, sizes = {}, {}
        for n_shards in shard_counts:
            store = stores[n_shards] = stack.enter_context(open_store(make_catalogue(urls, n_shards)))
            ingest(store, args.clips, jobs=args.jobs)
            n_tracks = fill_with_replicas(store, args.tracks)
            if args.compact:
                for database in data_stores(store):
                    compact(database)
            sizes[n_shards] = (n_tracks, *postings_and_bytes(store))
        match_rows = []
        for method, zone in [("python", z) for z in zones] + [("sql", "Fsmall_Tlong")]:
            found = time_matching(stores, queries, zone, method)
            for n_shards, (times, answers) in found.items():
                same = "reference" if n_shards == shard_counts[0] else \
                    ("identical" if answers == found[shard_counts[0]][1] else "DIFFERENT")
                n_tracks, postings, n_bytes = sizes[n_shards]
                for length_s, seconds in sorted(times.items()):
                    ms = 1000 * np.array(seconds)
                    reference_ms = 1000 * np.median(found[shard_counts[0]][0][length_s])
                    match_rows.append(
                        f"| {catalogue_label(n_shards)} | {n_tracks:,} | {postings:,} | {n_bytes / postings:.1f} | {method} "
                        f"| {zone} | {length_s:.0f} s | {np.median(ms):.1f} | {np.percentile(ms, 95):.1f} | "
                        f"{np.median(ms) / reference_ms:.2f} | {sum(hit for hit, _ in answers)}/{len(answers)} | {same} |")
                    print(match_rows[-1], flush=True)
    print(f"\n| catalogue | files | seconds ({args.ingest_rounds} rounds) | tracks/s (median) | rate against the first |"
          "\n|---|---:|---:|---:|---:|")
    print("\n".join(ingest_rows))
    print("\n| catalogue | tracks | postings | bytes/posting | matcher | zone | query | median (ms) | p95 (ms) "
          "| median against the first | top-1 (all lengths) | answers |\n|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|")
    print("\n".join(match_rows))
    print_sizing(max(n_bytes / postings for _, postings, n_bytes in sizes.values()),
                 args.postings_per_second * args.track_seconds)


def print_sizing(bytes_per_posting: float, postings_per_track: float) -> None:
    """Shards needed so that each shard's ``hashes`` (heap + index) stays within 64 GB of RAM, a power of two."""
    print(f"\nsizing at {bytes_per_posting:.1f} bytes/posting (measured, largest of the catalogues), "
          f"{postings_per_track:,.0f} postings per track (four zones):")
    print("| tracks | postings | hashes (heap + index) | shards (<= 64 GB each) | per shard |\n|---:|---:|---:|---:|---:|")
    for n_tracks in (100_000, 250_000, 500_000, 1_000_000):
        postings = n_tracks * postings_per_track
        n_bytes = postings * bytes_per_posting
        shards = 2 ** math.ceil(math.log2(max(1.0, n_bytes / 64e9)))
        print(f"| {n_tracks:,} | {postings / 1e9:.0f} G | {n_bytes / 1e12:.2f} TB | {shards} | {n_bytes / shards / 1e9:.0f} GB |")


if __name__ == "__main__":
    main()
