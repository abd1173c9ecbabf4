"""Compaction: merge the partitions of ``hashes`` into one whose heap is sorted by ``(zone, hash)``.

Each bulk load attaches its own partition (docs/speed.md), so after many runs a lookup probes one
index per partition, and a heap in load order costs one random page visit per posting found. After
:func:`compact`, ``hashes_main`` holds every posting in ``(zone, hash)`` order: one index to probe, and
the postings of one hash share a heap page or two (docs/matching.md has the measurements).

Locks: SHARE ROW EXCLUSIVE on ``hashes`` while the postings are copied and sorted (readers and matching
go on; ingests, track removals and another compaction wait), then ACCESS EXCLUSIVE for the swap
(detach, drop, attach: catalogue changes only, no data is touched under it). Disk: the copy needs room
for a second set of postings until the old partitions are dropped at commit.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from fpstore.db.bulk import BULK_IDS_LOCK_KEY, unattached_staging_tables

if TYPE_CHECKING:
    from fpstore.db.store import Store

#: Name of the partition that holds the ordinary path's track ids (migration 0003) and the compacted postings.
MAIN_PARTITION = "hashes_main"
_BUILDING = "hashes_compacting"
_BOUND = re.compile(r"FOR VALUES FROM \((MINVALUE|-?\d+)\) TO \((MAXVALUE|-?\d+)\)")
_INDEX_DEF = re.compile(r"^CREATE INDEX (\S+) ON ONLY \S+ (USING .*)$")


@dataclass(frozen=True)
class CompactSummary:
    """What :func:`compact` did.

    Attributes
    ----------
    partitions_merged : int
        Partitions replaced by the new ``hashes_main`` (``hashes_main`` itself included).
    partitions_left : int
        Partitions left alone: id blocks above one that a running bulk load still holds.
    postings : int
        Postings in the new ``hashes_main``.
    seconds : float
        Wall time.
    """

    partitions_merged: int
    partitions_left: int
    postings: int
    seconds: float


def compact(store: Store, *, work_mem: str = "256MB") -> CompactSummary:
    """Rewrite ``hashes_main`` and every bulk partition below any running bulk load as one sorted partition.

    Parameters
    ----------
    store : Store
    work_mem : str
        PostgreSQL memory setting for the sort and the index build of this transaction.

    Returns
    -------
    summary : CompactSummary
    """
    started = time.perf_counter()
    store.one_database("compaction (`fpstore db compact`)")
    store.check_schema()
    store.bulk.drop_stale()  # a crashed run's id block must not hold back the merge
    with store.raw() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("LOCK TABLE hashes IN SHARE ROW EXCLUSIVE MODE")
        # Id blocks are reserved under this lock with their staging table: after it, every reserved block
        # that is not attached yet has a visible staging table.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BULK_IDS_LOCK_KEY,))
        ceiling = _lowest_unattached_id(cur)
        partitions = _partitions(cur)
        merged = [(name, high) for name, high in partitions if high is not None and high <= ceiling]
        left = len(partitions) - len(merged)
        upper = max(high for _, high in merged)
        cur.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(work_mem)))
        cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(work_mem)))
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE hashes)").format(sql.Identifier(_BUILDING)))
        cur.execute(sql.SQL("INSERT INTO {} SELECT zone, hash, track_id, t_anchor FROM hashes WHERE track_id < %s"
                            " ORDER BY zone, hash").format(sql.Identifier(_BUILDING)), (upper,))
        postings = cur.rowcount
        index_names = _copy_parent_indexes(cur)
        # Validated here, under the weaker lock, so that ATTACH below need not scan the rows.
        cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT hashes_compacting_range CHECK (track_id < {})").format(
            sql.Identifier(_BUILDING), sql.Literal(upper)))
        cur.execute("LOCK TABLE hashes IN ACCESS EXCLUSIVE MODE")
        for name, _ in merged:
            cur.execute(sql.SQL("ALTER TABLE hashes DETACH PARTITION {}").format(sql.Identifier(name)))
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(_BUILDING),
                                                                   sql.Identifier(MAIN_PARTITION)))
        for temporary, final in index_names:
            cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(temporary), sql.Identifier(final)))
        cur.execute(sql.SQL("ALTER TABLE hashes ATTACH PARTITION {} FOR VALUES FROM (MINVALUE) TO ({})").format(
            sql.Identifier(MAIN_PARTITION), sql.Literal(upper)))
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT hashes_compacting_range").format(
            sql.Identifier(MAIN_PARTITION)))
    with store.raw() as conn:
        # Sets the visibility map (index-only scans) and the planner's statistics; not in a transaction.
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(MAIN_PARTITION)))
    return CompactSummary(len(merged), left, postings, time.perf_counter() - started)


def _lowest_unattached_id(cur: psycopg.Cursor[Any]) -> int:
    """First track id of the lowest id block held by a bulk load that has not attached it yet, or of the next block."""
    cur.execute("SELECT CASE WHEN s.is_called THEN s.last_value + q.seqincrement ELSE s.last_value END"
                " FROM tracks_bulk_id_seq s, pg_sequence q WHERE q.seqrelid = 'tracks_bulk_id_seq'::regclass")
    row = cur.fetchone()
    assert row is not None
    return min([int(row[0])] + [table.first_id for table in unattached_staging_tables(cur)])


def _partitions(cur: psycopg.Cursor[Any]) -> list[tuple[str, int | None]]:
    """Partitions of ``hashes`` and the (exclusive) upper bound of their track id range; None for MAXVALUE."""
    cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'hashes'::regclass")
    partitions = []
    for name, bound in cur.fetchall():
        found = _BOUND.fullmatch(bound)
        if found is None:
            raise RuntimeError(f"partition {name} of hashes has an unexpected bound: {bound}")
        partitions.append((name, None if found.group(2) == "MAXVALUE" else int(found.group(2))))
    return partitions


def _copy_parent_indexes(cur: psycopg.Cursor[Any]) -> list[tuple[str, str]]:
    """Build on the new table every index that ``hashes`` has (ATTACH then adopts them).

    Returns ``(temporary name, final name)`` pairs: the final names are taken by the old partition's
    indexes until it is dropped.
    """
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'hashes' AND schemaname = current_schema()")
    names = []
    for parent_index, definition in cur.fetchall():
        found = _INDEX_DEF.match(definition)
        if found is None:
            raise RuntimeError(f"index {parent_index} of hashes has an unexpected definition: {definition}")
        temporary = f"{_BUILDING}_{parent_index}"
        cur.execute(sql.SQL("CREATE INDEX {} ON {} ").format(sql.Identifier(temporary), sql.Identifier(_BUILDING))
                    + sql.SQL(found.group(2)))  # the server's own text of the parent's definition
        names.append((temporary, f"{parent_index}_main"))
    return names
