"""The posting lookup's statement, variant by variant, on the same keys (issue 25).

Matches ``--limit`` negatives of ``--queries`` as ``fpstore match`` does by default and records every
lookup statement they send (their zones and keys); then runs the recorded lookups again, ``--rounds``
times, with each variant of the statement, and prints the total server + transfer time per query
(median over the rounds) and the postings found (the same for every variant, checked):

- ``any``: what fpstore sends (one index scan per zone and partition, ``hash = ANY(sorted keys)``);
- ``unnest join``: a nested loop of index probes, one per key (``unnest(keys) JOIN hashes``);
- ``any, no parallel`` / ``any, 2 workers``: the same with ``max_parallel_workers_per_gather`` 0 / 2;
- ``any, work_mem 64MB``: the same with more sort and hash memory.

Usage::

    python benchmarks/lookup_statements.py --embedded /tmp/scale-catpg/pg --database fpstore_catalogue \\
        --queries ../corpus/catalogue/queries/queries.csv --limit 5
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from negative_profile import query_files  # benchmarks/negative_profile.py, next to this script
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.db.lookup import LookupStatement
from fpstore.db.store import Store
from fpstore.matching.evidence import ROBUST, DecisionRule
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import PreparedQuery
from fpstore.signal.audio import load_audio
from fpstore.signal.variants import speed_variant

_UNNEST_ONE_ZONE = (
    "(SELECT string_agg(int4send(h.hash) || int4send(h.track_id) || int4send(h.t_anchor), ''::bytea)"
    " FROM unnest(CAST((SELECT %s::int[]) AS int[])) AS k(hash) JOIN hashes h ON h.zone = %s AND h.hash = k.hash)"
)

#: Variant: (settings set before, how the statement is rewritten).
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "any": ([], False),
    "unnest join": ([], True),
    "any, no parallel": (["SET max_parallel_workers_per_gather = 0"], False),
    "any, 2 workers": (["SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0",
                        "SET parallel_tuple_cost = 0", "SET min_parallel_index_scan_size = 0"], False),
    "any, work_mem 64MB": (["SET work_mem = '64MB'"], False),
}


def recorded_lookups(store: Store, files: list[Path]) -> list[list[LookupStatement]]:
    """Each query's lookup statements, as the default matcher sends them."""
    params = store.params(duration_s=None)
    lookup = store.lookup
    recorded: list[list[LookupStatement]] = []
    original = type(lookup).run.__get__(lookup)

    def run(statement: LookupStatement) -> tuple[np.ndarray, ...]:
        recorded[-1].append(statement)
        return original(statement)

    lookup.run = run  # type: ignore[method-assign]
    for path in files:
        recorded.append([])
        y = load_audio(path, sample_rate=params.sample_rate, duration_s=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            match_prepared(store, PreparedQuery(speed_variant(y, params, 1.0, 1), y), params, evidence=ROBUST,
                           rule=DecisionRule())
    del lookup.run
    return recorded


def unnest_variant(statement: LookupStatement) -> LookupStatement:
    """The same keys through ``unnest(keys) JOIN hashes``."""
    params: list[object] = []
    for zone, keys in zip(statement.params[0::2], statement.params[1::2]):
        params += [keys, zone]
    return LookupStatement("SELECT " + ", ".join([_UNNEST_ONE_ZONE] * statement.zones.size), params, statement.zones)


def time_variant(store: Store, queries: list[list[LookupStatement]], settings: list[str], unnest: bool
                 ) -> tuple[list[float], list[int]]:
    """Seconds and postings per query, every lookup of a query run on one connection after ``settings``."""
    seconds, postings = [], []
    for statements in queries:
        with store.raw() as conn, conn.cursor(binary=True) as cur:
            for setting in settings:
                cur.execute(setting)
            found = 0
            t0 = time.perf_counter()
            for statement in statements:
                chosen = unnest_variant(statement) if unnest else statement
                cur.execute(chosen.statement, chosen.params)
                row = cur.fetchone()
                assert row is not None
                found += sum(len(blob or b"") // 12 for blob in row)
            seconds.append(time.perf_counter() - t0)
            cur.execute("RESET ALL")
        postings.append(found)
    return seconds, postings


def explain(store: Store, statement: LookupStatement) -> None:
    """Print the server's plan of ``statement`` with its times and buffers (pages hit in memory, read from disk)."""
    with store.raw() as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement.statement, statement.params)
        print("\n".join(row[0] for row in cur.fetchall()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=Path, required=True, help="fpstore's embedded server, its data here")
    parser.add_argument("--database", default="fpstore_catalogue")
    parser.add_argument("--queries", type=Path, required=True, help="folder of audio files, or a queries.csv")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--explain", action="store_true",
                        help="instead of timing: EXPLAIN (ANALYZE, BUFFERS) of the first query's largest statement")
    args = parser.parse_args()
    from fpstore.db.embedded import EmbeddedServer

    with EmbeddedServer(args.embedded) as server:
        engine = create_engine(make_url(server.url).set(drivername="postgresql+psycopg", database=args.database)
                               .render_as_string(hide_password=False))
        store = Store(engine)
        queries = recorded_lookups(store, query_files(args.queries, args.limit))
        keys = [sum(s.count(",") + 1 for st in q for s in st.params[1::2]) for q in queries]  # type: ignore[union-attr]
        print(f"{len(queries)} queries, {np.median([len(q) for q in queries]):.0f} statements and "
              f"{np.median(keys):,.0f} keys each (median)")
        if args.explain:
            explain(store, max(queries[0], key=lambda st: sum(len(str(p)) for p in st.params)))
            return
        print("| statement | lookup per query, median (ms) | mean (ms) | postings per query (median) |")
        print("|---|---:|---:|---:|")
        reference: list[int] | None = None
        for label, (settings, unnest) in VARIANTS.items():
            rounds = [time_variant(store, queries, settings, unnest) for _ in range(args.rounds)]
            postings = rounds[0][1]
            assert reference is None or postings == reference, f"{label}: other postings"
            reference = postings
            per_query = np.median(np.array([seconds for seconds, _ in rounds]), axis=0)
            print(f"| {label} | {1000 * np.median(per_query):.0f} | {1000 * per_query.mean():.0f} | "
                  f"{np.median(postings):,.0f} |", flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
