"""Compaction and merging: partitions of ``hashes`` rewritten as one whose heap is sorted by ``(zone, hash)``.

Each bulk load attaches its own partition (docs/speed.md), so after many runs a lookup probes one
index per partition, and a heap in load order costs one random page visit per posting found.
:func:`compact` rewrites them all as ``hashes_main``, in ``(zone, hash)`` order: one index to probe,
and the postings of one hash share a heap page or two (docs/matching.md has the measurements).
:func:`merge_partitions`, which ingest calls at its end, merges only some adjacent partitions, chosen
size-tiered (:func:`plan_merges`), when there are more than a bound: the catalogue keeps a few sorted
partitions without a manual step, and each posting is rewritten a logarithmic number of times.

Both do their work in ONE transaction (a crash or a failure leaves the partitions as they were).
Locks: SHARE ROW EXCLUSIVE on ``hashes`` while the postings are copied and sorted (readers and matching
go on; ingests, track removals and another merge wait), then ACCESS EXCLUSIVE for the swap (detach,
drop, attach: catalogue changes only, no data is touched under it). Partitions at or above the id
block of a bulk load that has not attached it yet are left alone. Disk: the copy needs room for a
second set of the merged postings until the old partitions are dropped at commit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from fpstore.db.bulk import BULK_IDS_LOCK_KEY, unattached_staging_tables

if TYPE_CHECKING:
    from fpstore.db.store import Store

#: Name of the partition that holds the ordinary path's track ids (migration 0003) and the compacted postings.
MAIN_PARTITION = "hashes_main"
#: Prefix of a partition that merges bulk loads' partitions; the rest is its first track id.
MERGED_PREFIX = "hashes_merged_"
#: Partitions ingest leaves at its end before it merges some (``fpstore ingest --max-partitions``).
DEFAULT_MAX_PARTITIONS = 4
#: A merge takes no partition holding more than this share of the merged heap: a posting is rewritten
#: only when its partition grows by half at least, so at most log1.5(catalogue / smallest load) times.
MAX_SHARE_IN_MERGE = 2 / 3
_BUILDING = "hashes_compacting"
_BOUND = re.compile(r"FOR VALUES FROM \((MINVALUE|-?\d+)\) TO \((MAXVALUE|-?\d+)\)")
_INDEX_DEF = re.compile(r"^CREATE INDEX (\S+) ON ONLY \S+ (USING .*)$")


@dataclass(frozen=True)
class CompactSummary:
    """What :func:`compact` or :func:`merge_partitions` did.

    Attributes
    ----------
    partitions_merged : int
        Partitions replaced by merged ones.
    partitions_left : int
        Partitions left alone: by :func:`compact`, id blocks above one that a running bulk load still
        holds; by :func:`merge_partitions`, also those its plan did not take.
    postings : int
        Postings rewritten.
    seconds : float
        Wall time.
    partitions_made : int
        Partitions the merged ones became (one per adjacent run merged).
    """

    partitions_merged: int
    partitions_left: int
    postings: int
    seconds: float
    partitions_made: int

    @property
    def partitions_now(self) -> int:
        """Partitions of ``hashes`` after the merge."""
        return self.partitions_made + self.partitions_left


@dataclass(frozen=True)
class Partition:
    """A partition of ``hashes``: its name, track id range ``[low, high)`` (None: MINVALUE / MAXVALUE), heap bytes."""

    name: str
    low: int | None
    high: int | None
    heap_bytes: int


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
    store.one_database("compaction (`fpstore db compact`)")
    store.check_schema()
    summary = _merge(store, lambda partitions, mergeable: [range(mergeable)], work_mem)
    assert summary is not None
    return summary


def merge_partitions(store: Store, max_partitions: int = DEFAULT_MAX_PARTITIONS, *,
                     work_mem: str = "256MB") -> CompactSummary | None:
    """Merge adjacent partitions of ``hashes`` as :func:`plan_merges` says, if more than ``max_partitions`` hold postings.

    One database (a cluster's shard is one: ingest merges each shard it wrote).

    Parameters
    ----------
    store : Store
    max_partitions : int
        The bound (≥ 1) on partitions that hold postings; the count may stay above it while no adjacent
        run can be merged within :data:`MAX_SHARE_IN_MERGE`.
    work_mem : str
        As :func:`compact`'s.

    Returns
    -------
    summary : CompactSummary or None
        None if nothing was merged.
    """
    with store.raw() as conn, conn.cursor() as cur:  # a look without a lock: most ingests end here
        if sum(1 for p in _partitions(cur) if p.heap_bytes) <= max_partitions:
            return None
    return _merge(store, lambda partitions, mergeable: plan_merges(
        [p.heap_bytes for p in partitions], mergeable, max_partitions), work_mem)


def plan_merges(sizes: Sequence[int], mergeable: int, max_partitions: int) -> list[range]:
    """Size-tiered merging: which adjacent partitions to merge so that at most ``max_partitions`` remain.

    Pure arithmetic. While more than ``max_partitions`` partitions hold postings (an empty one, such as
    the ``hashes_main`` of a catalogue loaded in bulk, costs a lookup nothing), it merges the adjacent run
    (of the first ``mergeable``, at least two) that costs the fewest bytes per partition it removes,
    among the runs where no partition holds more than :data:`MAX_SHARE_IN_MERGE` of the run's bytes;
    it stops when there is none (then the sizes fall geometrically along the partitions, and there are
    about log1.5 of the catalogue's size over the smallest load's of them).

    Parameters
    ----------
    sizes : sequence of int [length n]
        Each partition's heap bytes, partitions in track id order (as they are adjacent).
    mergeable : int
        The first ``mergeable`` partitions may be merged; the others are left alone.
    max_partitions : int

    Returns
    -------
    runs : list of range
        Disjoint runs of indexes into ``sizes``, in increasing order.
    """
    # Each element: the original indexes a planned partition covers, and its bytes.
    planned = [(range(i, i + 1), size) for i, size in enumerate(sizes)]
    n_mergeable = min(mergeable, len(planned))
    while sum(1 for _, size in planned if size) > max_partitions:
        best: tuple[tuple[float, int, int], int, int] | None = None
        for length in range(2, n_mergeable + 1):
            for start in range(n_mergeable - length + 1):
                run_sizes = [size for _, size in planned[start:start + length]]
                total = sum(run_sizes)
                if max(run_sizes) > MAX_SHARE_IN_MERGE * total:
                    continue
                rank = (total / (length - 1), -length, start)  # bytes per partition removed; longer, older first
                if best is None or rank < best[0]:
                    best = (rank, start, length)
        if best is None:
            break
        _, start, length = best
        run = planned[start:start + length]
        planned[start:start + length] = [(range(run[0][0].start, run[-1][0].stop), sum(size for _, size in run))]
        n_mergeable -= length - 1
    return [covered for covered, _ in planned if len(covered) > 1]


def _merge(store: Store, plan: Callable[[list[Partition], int], list[range]], work_mem: str) -> CompactSummary | None:
    """Merge the runs of partitions ``plan(partitions, mergeable)`` names, in one transaction; None if it names none.

    ``partitions`` are in track id order; the first ``mergeable`` lie below every unattached id block.
    """
    started = time.perf_counter()
    store.bulk.drop_stale()  # a crashed run's id block must not hold back the merge
    with store.raw() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("LOCK TABLE hashes IN SHARE ROW EXCLUSIVE MODE")
        # Id blocks are reserved under this lock with their staging table: after it, every reserved block
        # that is not attached yet has a visible staging table.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BULK_IDS_LOCK_KEY,))
        ceiling = _lowest_unattached_id(cur)
        partitions = _partitions(cur)
        mergeable = sum(1 for p in partitions if p.high is not None and p.high <= ceiling)
        runs = [partitions[run.start:run.stop] for run in plan(partitions, mergeable) if len(run)]
        if not runs:
            return None
        cur.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(work_mem)))
        cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(work_mem)))
        copies = [_sorted_copy(cur, run, f"{_BUILDING}_{number}") for number, run in enumerate(runs)]
        cur.execute("LOCK TABLE hashes IN ACCESS EXCLUSIVE MODE")
        merged = [_swap(cur, run, building, index_names) for run, (building, index_names, _) in zip(runs, copies)]
    with store.raw() as conn:
        for name in merged:  # the visibility map (index-only scans) and the planner's statistics; not in a transaction
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
    n_merged = sum(len(run) for run in runs)
    return CompactSummary(n_merged, len(partitions) - n_merged, sum(postings for _, _, postings in copies),
                          time.perf_counter() - started, len(runs))


def _range_condition(low: int | None, high: int) -> sql.Composable:
    """``track_id >= low AND track_id < high`` (no lower side for MINVALUE)."""
    below = sql.SQL("track_id < {}").format(sql.Literal(high))
    return below if low is None else sql.SQL("track_id >= {} AND ").format(sql.Literal(low)) + below


def _sorted_copy(cur: psycopg.Cursor[Any], run: list[Partition], building: str) -> tuple[str, list[tuple[str, str]], int]:
    """Copy the run's postings into the new table ``building``, sorted by (zone, hash), with the indexes of ``hashes``.

    Returns ``building``, its indexes' ``(temporary, final)`` names and the postings copied.
    """
    high = run[-1].high
    assert high is not None  # MAXVALUE partitions are never merged
    in_range = _range_condition(run[0].low, high)
    table = sql.Identifier(building)
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE hashes)").format(table))
    cur.execute(sql.SQL("INSERT INTO {} SELECT zone, hash, track_id, t_anchor FROM hashes WHERE {}"
                        " ORDER BY zone, hash").format(table, in_range))
    postings = cur.rowcount
    index_names = _copy_parent_indexes(cur, building, _merged_name(run[0]).removeprefix("hashes_"))
    # Validated here, under the weaker lock, so that ATTACH below need not scan the rows.
    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT hashes_compacting_range CHECK ({})").format(table, in_range))
    return building, index_names, postings


def _swap(cur: psycopg.Cursor[Any], run: list[Partition], building: str, index_names: list[tuple[str, str]]) -> str:
    """Replace the run's partitions by the table ``building`` (under ACCESS EXCLUSIVE); returns its final name."""
    name = _merged_name(run[0])
    for partition in run:
        cur.execute(sql.SQL("ALTER TABLE hashes DETACH PARTITION {}").format(sql.Identifier(partition.name)))
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name)))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(building), sql.Identifier(name)))
    for temporary, final in index_names:
        cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(temporary), sql.Identifier(final)))
    low = sql.SQL("MINVALUE") if run[0].low is None else sql.Literal(run[0].low)
    cur.execute(sql.SQL("ALTER TABLE hashes ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), low, sql.Literal(run[-1].high)))
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT hashes_compacting_range").format(sql.Identifier(name)))
    return name


def _merged_name(first: Partition) -> str:
    """A merged partition's name: ``hashes_main`` if it starts at MINVALUE, else after its first track id."""
    return MAIN_PARTITION if first.low is None else f"{MERGED_PREFIX}{first.low}"


def _lowest_unattached_id(cur: psycopg.Cursor[Any]) -> int:
    """First track id of the lowest id block held by a bulk load that has not attached it yet, or of the next block."""
    cur.execute("SELECT CASE WHEN s.is_called THEN s.last_value + q.seqincrement ELSE s.last_value END"
                " FROM tracks_bulk_id_seq s, pg_sequence q WHERE q.seqrelid = 'tracks_bulk_id_seq'::regclass")
    row = cur.fetchone()
    assert row is not None
    return min([int(row[0])] + [table.first_id for table in unattached_staging_tables(cur)])


def _partitions(cur: psycopg.Cursor[Any]) -> list[Partition]:
    """The partitions of ``hashes`` in track id order."""
    cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_relation_size(c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'hashes'::regclass")
    partitions = []
    for name, bound, heap_bytes in cur.fetchall():
        found = _BOUND.fullmatch(bound)
        if found is None:
            raise RuntimeError(f"partition {name} of hashes has an unexpected bound: {bound}")
        low, high = (None if value in ("MINVALUE", "MAXVALUE") else int(value) for value in found.groups())
        partitions.append(Partition(name, low, high, int(heap_bytes)))
    return sorted(partitions, key=lambda p: -(2 ** 63) if p.low is None else p.low)


def _copy_parent_indexes(cur: psycopg.Cursor[Any], building: str, suffix: str) -> list[tuple[str, str]]:
    """Build on the table ``building`` every index that ``hashes`` has (ATTACH then adopts them).

    Returns ``(temporary name, final name)`` pairs, final names ending in ``_suffix``: they may be taken
    by the old partitions' indexes until those are dropped.
    """
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'hashes' AND schemaname = current_schema()")
    names = []
    for parent_index, definition in cur.fetchall():
        found = _INDEX_DEF.match(definition)
        if found is None:
            raise RuntimeError(f"index {parent_index} of hashes has an unexpected definition: {definition}")
        temporary = f"{building}_{parent_index}"
        cur.execute(sql.SQL("CREATE INDEX {} ON {} ").format(sql.Identifier(temporary), sql.Identifier(building))
                    + sql.SQL(found.group(2)))  # the server's own text of the parent's definition
        names.append((temporary, f"{parent_index}_{suffix}"))
    return names
