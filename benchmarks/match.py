"""Matching latency at 1,000 / 10,000 / ... tracks: build a database per size, time queries, print a table.

For each size N the script creates a database ``fpstore_bench_<N>`` on the server given by ``--server``
(a role with CREATEDB), ingests the real clips of ``--clips`` (n of them) with fpstore, then makes the
other N - n tracks **server-side** by replicating those postings under new track ids (one INSERT ...
SELECT over ``generate_series``). A plain copy would put every query hash into ~N/n identical posting
lists, which no real catalogue does, so replica ``r`` gets *transposed* hashes: both frequency bins
shifted by ``r mod 128`` bins (mod 1024) and ``dt`` rotated by ``r div 128`` inside the zone's
``[dt_min, dt_max]``. Each replica keeps its source's peak structure, posting count and hash skew
(low bins stay common), but is a different "song". ``hashes_main`` (the partition the replicas go
to) is made UNLOGGED while loading (a benchmark database needs no crash safety; queries do not care),
the ``(zone, hash)`` index is built after loading, then VACUUM ANALYZE sets the visibility map that index-only scans need.

Queries: ``--queries`` random excerpts of 5 s and of 10 s, cut from the real clips (their true answer is
known); each is fingerprinted (timed apart) and matched sequentially in one process, so one core does
the work on the client and one backend on the server. The "match" time is what ``fpstore match`` adds
after fingerprinting: the lookups (one statement per zone) and the vote.

``--index plain,covering`` times each size with the plain ``(zone, hash)`` index, then with a covering
index ``(zone, hash) INCLUDE (track_id, t_anchor)`` instead (index-only scans); sizes are reported for
both. ``--match-zone`` (repeatable) chooses the zones that vote; ``--reuse`` keeps a database already
built at the right size, so the timing can be re-run alone (with ``--keep``); ``--compact`` runs
``fpstore db compact`` (one partition, heap sorted by ``(zone, hash)``) before timing. Queries are matched
as ``fpstore match`` does by default (:data:`fpstore.matching.evidence.ROBUST` evidence: distinct anchors, then four
sub-hop shifts with a 1-frame tolerance and speeds, tried lazily; the calibrated rule under the tracks
null); ``--plain`` takes the notebook's vote, ``--alpha``, ``--min-votes``, ``--null`` and
``--offset-tolerance`` change the rule and the evidence as ``fpstore match``'s options do.

Usage (dev server; drops its databases at the end unless ``--keep``)::

    python benchmarks/match.py --server "postgresql://fpstore@/postgres?host=/tmp/devpg" \\
        --clips /tmp/indb --sizes 1000,10000 --index plain,covering --keep --reuse

Prints a Markdown table: tracks, postings, index variant, bytes per posting (heap + indexes of
``hashes``), zone that voted, query length, median and p95 of the match time, median fingerprint time,
median and p95 of fingerprint + match (the whole answer to an audio excerpt), top-1 hits with the default "no match" rule. With ``--negatives FOLDER`` (e.g. a subset of
``benchmarks/make_negatives.py``'s output) a row per size and zone counts their false positives and the
most votes a negative's best track got, to check the rule's threshold at that size.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.db.compact import compact
from fpstore.db.maintenance import set_lookup_index
from fpstore.db.store import Store
from fpstore.ingest import ingest
from fpstore.matching.evidence import ALL_ZONES, PLAIN, ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import PreparedQuery
from fpstore.matching.ranking import match_fingerprint
from fpstore.signal.audio import load_audio
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.variants import speed_variant

# Frequency shifts per replica before the dt rotation changes; 128 * (dt range) * n clips variants exist.
F_SHIFTS = 128

REPLICATE_SQL = """
INSERT INTO hashes (zone, hash, track_id, t_anchor)
SELECT h.zone,
       fpstore_hash_key(((((v >> 22) + r %% %(shifts)s::int) %% 1024) << 22)
                        | (((((v >> 12) & 1023) + r %% %(shifts)s::int) %% 1024) << 12)
                        | (z.dt_min_frames + ((v & 4095) - z.dt_min_frames + r / %(shifts)s::int)
                                             %% (z.dt_max_frames - z.dt_min_frames + 1))),
       h.track_id + r * %(id_step)s::int, h.t_anchor
FROM (SELECT zone, track_id, t_anchor, fpstore_hash_value(hash) AS v FROM hashes WHERE track_id <= %(last_real_id)s::int) h
JOIN zones z ON z.id = h.zone
CROSS JOIN generate_series(%(r_from)s::int, %(r_to)s::int) AS r
WHERE h.track_id + r * %(id_step)s::int <= %(last_id)s::int
"""

# A replica's tracks row: its source's lengths (the chance models read n_frames), a name of its own.
REPLICATE_TRACKS_SQL = """
INSERT INTO tracks (id, path, file_name, sha256, duration_s, n_frames, n_peaks, n_postings, run_id)
SELECT t.id + r * %(id_step)s::int, t.path || '#replica' || r, 'replica ' || r || ' of ' || t.file_name,
       sha256(t.sha256 || int4send(r)), t.duration_s, t.n_frames, t.n_peaks, t.n_postings, t.run_id
FROM tracks t CROSS JOIN generate_series(1, %(replicas)s::int) AS r
WHERE t.id <= %(last_real_id)s::int AND t.id + r * %(id_step)s::int <= %(last_id)s::int
ON CONFLICT DO NOTHING
"""


def replicate(conn: psycopg.Connection, label: str, *, replicas: int, id_step: int, last_real_id: int,
              last_id: int) -> None:
    """Add ``replicas`` transposed copies of tracks ``<= last_real_id`` (replica r: ids + r * id_step), in ten steps.

    Each replica also gets a ``tracks`` row (named ``replica r of <source>``), so that the matcher's
    chance models see its length as they see a real track's.
    """
    step = max(1, replicas // 10)
    started = time.perf_counter()
    for r_from in range(1, replicas + 1, step):
        r_to = min(replicas, r_from + step - 1)
        conn.execute(REPLICATE_SQL, dict(shifts=F_SHIFTS, id_step=id_step, last_real_id=last_real_id, last_id=last_id,
                                         r_from=r_from, r_to=r_to))
        print(f"  {label}: replicas {r_from}..{r_to} of {replicas} ({time.perf_counter() - started:.0f} s)", flush=True)
    conn.execute(REPLICATE_TRACKS_SQL, dict(id_step=id_step, last_real_id=last_real_id, last_id=last_id,
                                            replicas=replicas))

SIZE_SQL = """
SELECT (SELECT count(*) FROM hashes) AS postings,
       (SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree('hashes')) AS heap_bytes,
       (SELECT coalesce(sum(pg_relation_size(indexrelid)), 0) FROM pg_index
        WHERE indrelid IN (SELECT relid FROM pg_partition_tree('hashes'))) AS index_bytes
"""


def run_on_server(args: argparse.Namespace, run: Callable[[argparse.Namespace], None]) -> None:
    """Call ``run(args)`` on ``args.server``, or on an embedded server kept in ``args.embedded`` meanwhile."""
    if args.embedded is None:
        run(args)
        return
    from fpstore.db.embedded import EmbeddedServer

    args.embedded.mkdir(parents=True, exist_ok=True)
    args.embedded.chmod(0o755)  # the server's own user (when we are root) must reach its data folder
    with EmbeddedServer(args.embedded) as server:
        args.server = server.url
        run(args)


def admin(server: str) -> psycopg.Connection:
    """Autocommit connection to the maintenance database."""
    return psycopg.connect(make_url(server).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True)


def build(server: str, name: str, clips: Path, n_tracks: int, zones: str) -> str:
    """Create database ``name`` with ``n_tracks`` tracks (real clips + transposed replicas); return its URL."""
    with admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(drivername="postgresql+psycopg", database=name)
    engine = create_engine(url)
    store = Store(engine)
    store.upgrade()
    from fpstore.signal.params import FingerprintParams

    params = FingerprintParams()
    if zones != ALL_ZONES:
        params = params.replace(zones=tuple(z for z in params.zones if z.name == zones))
    summary = ingest(store, clips, params, jobs=2)
    n_real = summary.tracks_added
    raw = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        # The real clips took the ordinary path: their partition hashes_main receives the replicas too.
        conn.execute("DROP INDEX hashes_zone_hash")  # partitioned index: drops every partition's index too
        conn.execute("ALTER TABLE hashes_main SET UNLOGGED")
        started = time.perf_counter()
        replicate(conn, name, replicas=math.ceil(n_tracks / n_real) - 1, id_step=n_real, last_real_id=n_real,
                  last_id=n_tracks)
        conn.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")
        print(f"  {name}: index built ({time.perf_counter() - started:.0f} s)", flush=True)
        conn.execute("VACUUM ANALYZE hashes")
    engine.dispose()
    return url.render_as_string(hide_password=False)


def ensure_index(url: str, variant: str) -> None:
    """Leave exactly one (zone, hash) index on ``hashes``: the plain one or the covering one."""
    engine = create_engine(url)
    set_lookup_index(Store(engine), variant)
    engine.dispose()


def existing_tracks(server: str, name: str) -> int | None:
    """Highest track id in database ``name`` if it exists and has an fpstore schema, else None."""
    with admin(server) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return None
    url = make_url(server).set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        try:
            found = conn.execute("SELECT max(track_id) FROM hashes").fetchone()
        except psycopg.Error:
            return None
    return None if found is None or found[0] is None else int(found[0])


def make_queries(clips: Path, n_per_length: int, seed: int) -> list[tuple[float, np.ndarray, str]]:
    """Random 5 s and 10 s excerpts of the real clips: ``(length_s, samples, clip file name)``."""
    rng = np.random.default_rng(seed)
    paths = sorted(p for p in clips.iterdir() if p.suffix.lower() in (".mp3", ".wav"))
    decoded = {p.name: load_audio(p, sample_rate=22050, duration_s=30.0) for p in paths}
    queries = []
    for length_s in (5.0, 10.0):
        for _ in range(n_per_length):
            name = paths[int(rng.integers(len(paths)))].name
            y = decoded[name]
            n = int(length_s * 22050)
            start = int(rng.integers(0, y.size - n))
            queries.append((length_s, y[start:start + n], name))
    return queries


def time_queries(url: str, queries: list[tuple[float, np.ndarray, str]], zone: str, evidence: Evidence = ROBUST,
                 rule: DecisionRule | None = None) -> list[dict[str, float]]:
    """Fingerprint and match each query in turn (matching in ``zone``); the times of each, in seconds.

    With shifts or speeds, "fingerprint" is the query as it is, and "match" includes the fingerprints
    of the other shifts and speeds when the query as it is names nothing (they are made lazily).
    """
    rule = rule or DecisionRule()
    engine = create_engine(url)
    store = Store(engine)
    params = store.params(duration_s=None)
    timings = []
    for length_s, y, true_name in queries:
        t0 = time.perf_counter()
        if evidence.needs_audio:
            prepared = PreparedQuery(speed_variant(y, params, 1.0, 1), y)
            t1 = time.perf_counter()
            result = match_prepared(store, prepared, params, evidence=evidence, zone=zone, rule=rule)
        else:
            fp = fingerprint_signal(y, params)
            t1 = time.perf_counter()
            result = match_fingerprint(store, fp, params, zone=zone, rule=rule, count=evidence.count)
        t2 = time.perf_counter()
        if true_name:
            hit = result.match is not None and result.match.file_name == true_name
        else:  # a negative: right if it says "no match"
            hit = result.match is None
        best_votes = result.best.votes if result.best else 0
        timings.append({"length_s": length_s, "fingerprint_s": t1 - t0, "match_s": t2 - t1, "hit": float(hit),
                        "negative": float(not true_name), "best_votes": float(best_votes)})
    engine.dispose()
    return timings


def sizes(url: str) -> tuple[int, float]:
    """Postings, and bytes per posting of ``hashes`` heap plus its indexes."""
    raw = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(raw) as conn:
        postings, heap, index = conn.execute(SIZE_SQL).fetchone()  # type: ignore[misc]
    return int(postings), (heap + index) / postings


def _latency_cells(timings: list[dict[str, float]]) -> str:
    """Median and p95 of the match time, median fingerprint time, median and p95 of both together (ms)."""
    match_ms = 1000 * np.array([t["match_s"] for t in timings])
    fp_ms = 1000 * np.array([t["fingerprint_s"] for t in timings])
    total_ms = match_ms + fp_ms
    return (f"{np.median(match_ms):.0f} | {np.percentile(match_ms, 95):.0f} | {np.median(fp_ms):.0f} | "
            f"{np.median(total_ms):.0f} | {np.percentile(total_ms, 95):.0f}")


def table_rows(n_tracks: int, variant: str, zone: str, postings: int, bpp: float,
               timings: list[dict[str, float]]) -> list[str]:
    """Markdown rows, one per query length."""
    rows = []
    negatives = [t for t in timings if t["negative"]]
    if negatives:
        false_positives = sum(1 - t["hit"] for t in negatives)
        rows.append(f"| {n_tracks:,} | {postings:,} | {variant} | {bpp:.1f} | {zone} | negatives | {_latency_cells(negatives)} | "
                    f"{false_positives:.0f} FP / {len(negatives)} (max votes {max(t['best_votes'] for t in negatives):.0f}) |")
    for length_s in sorted({t["length_s"] for t in timings if not t["negative"]}):
        chosen = [t for t in timings if t["length_s"] == length_s and not t["negative"]]
        hits = int(sum(t["hit"] for t in chosen))
        rows.append(f"| {n_tracks:,} | {postings:,} | {variant} | {bpp:.1f} | {zone} | {length_s:.0f} s | "
                    f"{_latency_cells(chosen)} | {hits}/{len(chosen)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="URL of a maintenance database (role with CREATEDB)")
    parser.add_argument("--embedded", type=Path,
                        help="instead of --server: run fpstore's embedded PostgreSQL with its data in this folder")
    parser.add_argument("--clips", type=Path, required=True, help="folder of real clips to ingest and replicate")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated track counts")
    parser.add_argument("--store-zone", default=ALL_ZONES, help="zone to store, or 'all' (the four seed zones)")
    parser.add_argument("--match-zone", action="append", help="zone to match with (repeat) [all, Fsmall_Tlong]")
    parser.add_argument("--index", default="plain,covering", help="index variants to time, in order")
    parser.add_argument("--queries", type=int, default=30, help="queries per length (5 s and 10 s)")
    parser.add_argument("--reuse", action="store_true", help="reuse a database of the right size if present")
    parser.add_argument("--compact", action="store_true",
                        help="run fpstore db compact (heap sorted by (zone, hash)) before timing")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--negatives", type=Path,
                        help="folder of not-in-database queries (WAV): also report their false positives")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--plain", action="store_true",
                        help="match with PLAIN evidence (the notebook's vote) instead of the default, ROBUST")
    parser.add_argument("--alpha", type=float, help="false-alarm rate of the calibrated rule [DEFAULT_ALPHA]")
    parser.add_argument("--min-votes", type=int, help="the vote-count rule instead of --alpha")
    parser.add_argument("--null", choices=("tracks", "poisson"), default="tracks", help="chance model of the score")
    parser.add_argument("--offset-tolerance", type=int, help="Evidence.tolerance (frames) [the evidence's]")
    parser.add_argument("--no-whitened-look", action="store_true",
                        help="leave out the evidence's last step, the whitened look (Evidence.own_picks)")
    args = parser.parse_args()
    if (args.server is None) == (args.embedded is None):
        parser.error("give one of --server and --embedded")
    run_on_server(args, run)


def run(args: argparse.Namespace) -> None:
    """Build, time and print, for every size."""
    match_zones = args.match_zone or [ALL_ZONES, "Fsmall_Tlong"]
    queries = make_queries(args.clips, args.queries, args.seed)
    if args.negatives:
        queries += [(0.0, load_audio(p, sample_rate=22050, duration_s=None), "")
                    for p in sorted(args.negatives.glob("*.wav"))]
    lines = ["| tracks | postings | index | bytes/posting | match zone | query | match median (ms) | match p95 (ms) "
             "| fingerprint median (ms) | fingerprint + match median (ms) | fingerprint + match p95 (ms) | top-1 |",
             "|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for n_tracks in [int(s) for s in args.sizes.split(",")]:
        name = f"fpstore_bench_{n_tracks}" + ("" if args.store_zone == ALL_ZONES else "_1zone")
        if args.reuse and existing_tracks(args.server, name) == n_tracks:
            url = make_url(args.server).set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False)
        else:
            url = build(args.server, name, args.clips, n_tracks, args.store_zone)
        if args.compact:
            engine = create_engine(url)
            summary = compact(Store(engine))
            engine.dispose()
            print(f"  compacted {summary.postings:,} postings in {summary.seconds:.0f} s", flush=True)
        for variant in [v for v in args.index.split(",") if v]:
            ensure_index(url, variant)
            postings, bpp = sizes(url)
            for zone in match_zones:
                evidence = PLAIN if args.plain else ROBUST
                if args.offset_tolerance is not None:
                    evidence = dataclasses.replace(evidence, tolerance=args.offset_tolerance)
                if args.no_whitened_look:
                    evidence = dataclasses.replace(evidence, own_picks=())
                rule = DecisionRule(min_votes=args.min_votes, alpha=args.alpha, null=args.null)
                time_queries(url, queries[:4], zone, evidence, rule)  # warm the cache a little, as a service would be
                lines += table_rows(n_tracks, variant, zone, postings, bpp, time_queries(url, queries, zone, evidence, rule))
                print("\n".join(lines[-3:]), flush=True)
        if not args.keep:
            with admin(args.server) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("\n".join(lines))


if __name__ == "__main__":
    main()
