"""The bulk write path: a partition of ``hashes`` per bulk load, indexed after it is filled.

A bulk load reserves a block of :data:`BULK_BLOCK_IDS` track ids from ``tracks_bulk_id_seq`` (under an
advisory lock, so blocks never overlap; its ids step by the sequence's increment, which is 1 except on
a shard of a cluster, whose ids are its index modulo the number of shards), COPYs postings into a
fresh table with no index but a CHECK equal to its id block (:meth:`BulkLoads.stage`), and then, in ONE transaction
(:meth:`BulkLoads.commit`), inserts the tracks, builds the table's index and attaches it as the
partition of its id block. Readers see the tracks and their postings together, at that commit; the cost
depends only on the data loaded, not on the size of ``hashes`` (docs/speed.md).

Staging tables are named ``hashes_bulk_r<run id>_<first id>``; a run that dies leaves its table
unattached, and :meth:`BulkLoads.drop_stale` (called before every bulk run and by compaction) drops it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from fpstore.db.pgcopy import copy_in, postings_payload
from fpstore.db.tracks import TrackRecord, TrackRow, count_run, delete_replaced_tracks, insert_tracks
from fpstore.errors import ParameterError

if TYPE_CHECKING:
    from fpstore.db.database import Database

#: Track ids reserved per bulk load (partition); ids are cheap (int4 above 1e9 leaves ~11,000 blocks).
BULK_BLOCK_IDS = 100_000

#: Serialises reservations of id blocks, so each block is contiguous.
BULK_IDS_LOCK_KEY = 0x46505355

#: Prefix of bulk staging tables; the rest of the name is ``r<run id>_<first id>``.
STAGING_PREFIX = "hashes_bulk_"
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"r(\d+)_(\d+)")


@dataclass
class BulkLoad:
    """An open bulk load: its staging table, id block, the tracks staged so far and the tracks they replace.

    The id block is ``[first_id, first_id + BULK_BLOCK_IDS * id_step)``, ids ``id_step`` apart.
    """

    run_id: int
    table: str
    first_id: int
    id_step: int = 1
    staged: list[TrackRow] = dataclasses.field(default_factory=list)
    replaces: list[int] = dataclasses.field(default_factory=list)

    @property
    def free_ids(self) -> int:
        """Tracks that still fit in the id block."""
        return BULK_BLOCK_IDS - len(self.staged)

    @property
    def n_postings(self) -> int:
        """Postings staged so far."""
        return sum(track.n_postings for track in self.staged)


@dataclass(frozen=True)
class StagingTable:
    """An unattached staging table: its name, the first id of its block, and whether its run is running."""

    name: str
    first_id: int
    run_running: bool


def unattached_staging_tables(cur: psycopg.Cursor[Any]) -> list[StagingTable]:
    """Every staging table that is not (yet) a partition of ``hashes``, read in one snapshot.

    One statement, so that "unattached" and "its run is not running" hold at the same instant: such a
    table is stale for good (its run can no longer attach it), and a table created after the snapshot
    is not seen at all.
    """
    cur.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running'"
        "                          AND c.relname LIKE %s || 'r' || r.id || '\\_%%')"
        " FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
        (STAGING_PREFIX.replace("_", "\\_"), STAGING_PREFIX.replace("_", "\\_") + "%"),
    )
    found = [(name, running, _STAGING_NAME.fullmatch(name)) for name, running in cur.fetchall()]
    return [StagingTable(name, int(m.group(2)), bool(running)) for name, running, m in found if m is not None]


class BulkLoads:
    """The bulk write path of one database (``store.bulk``)."""

    def __init__(self, store: Database) -> None:
        self._store = store

    def begin(self, run_id: int) -> BulkLoad:
        """Reserve an id block and create its empty, unindexed staging table for run ``run_id``.

        The table is not part of ``hashes`` until :meth:`commit`; no reader sees its rows before.
        """
        with self._store.raw() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (BULK_IDS_LOCK_KEY,))
            cur.execute("SELECT nextval('tracks_bulk_id_seq')")
            first_id = int(_fetch_one(cur))
            cur.execute("SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'tracks_bulk_id_seq'::regclass")
            id_step = int(_fetch_one(cur))
            end_id = first_id + BULK_BLOCK_IDS * id_step
            cur.execute("SELECT setval('tracks_bulk_id_seq', %s)", (end_id - id_step,))
            table = f"{STAGING_PREFIX}r{int(run_id)}_{first_id}"
            # A CHECK equal to the id block, checked row by row during COPY, lets ATTACH skip its scan.
            cur.execute(sql.SQL("CREATE TABLE {} (LIKE hashes, CONSTRAINT {} CHECK (track_id >= {} AND track_id < {}))")
                        .format(sql.Identifier(table), sql.Identifier(f"{table}_range"), sql.Literal(first_id),
                                sql.Literal(end_id)))
        return BulkLoad(run_id, table, first_id, id_step)

    def stage(self, bulk: BulkLoad, records: Sequence[TrackRecord], zone_ids: dict[str, int]) -> None:
        """Give ``records`` the next ids of the block and COPY their postings into the staging table.

        Only the tracks' rows stay in ``bulk``; the fingerprints can be dropped afterwards.

        Raises
        ------
        ParameterError
            If more records are given than ``bulk.free_ids``.
        """
        if not records:
            return
        if len(records) > bulk.free_ids:
            raise ParameterError(f"{len(records)} tracks do not fit in the bulk load's {bulk.free_ids} free ids")
        first = bulk.first_id + len(bulk.staged) * bulk.id_step
        ids = range(first, first + len(records) * bulk.id_step, bulk.id_step)
        with self._store.raw() as conn, conn.cursor() as cur:
            copy_in(cur, bulk.table, postings_payload([(i, r.fingerprint) for r, i in zip(records, ids)], zone_ids))
        bulk.staged.extend(TrackRow.of(record, track_id) for record, track_id in zip(records, ids))
        bulk.replaces.extend(track_id for record in records for track_id in record.replaces)

    def commit(self, bulk: BulkLoad, *, replace: bool = False) -> list[tuple[TrackRow, bool]]:
        """Publish a bulk load: tracks, index and partition in one transaction.

        A track whose content is already stored is dropped from the load (its staged postings are
        deleted) unless ``replace`` is set, which deletes the old track and its postings first; the
        tracks the staged records ``replaces`` are deleted first too, in the same transaction.

        Returns
        -------
        outcome : list of (TrackRow, added)
            ``added`` is False for a track skipped because its content was stored meanwhile.
        """
        staged, bulk.staged = bulk.staged, []
        replaced, bulk.replaces = bulk.replaces, []
        table = sql.Identifier(bulk.table)
        with self._store.raw() as conn, conn.transaction(), conn.cursor() as cur:
            delete_replaced_tracks(cur, [t.sha256 for t in staged] if replace else [], replaced)
            added_ids = insert_tracks(cur, bulk.run_id, staged)
            lost = [t.track_id for t in staged if t.track_id not in added_ids]
            if lost:
                cur.execute(sql.SQL("DELETE FROM {} WHERE track_id = ANY(%s)").format(table), (lost,))
            if added_ids:
                _attach(cur, bulk.table, bulk.first_id, bulk.first_id + BULK_BLOCK_IDS * bulk.id_step)
            else:
                cur.execute(sql.SQL("DROP TABLE {}").format(table))
            count_run(cur, bulk.run_id, added=len(added_ids), skipped=len(lost),
                      postings=sum(t.n_postings for t in staged if t.track_id in added_ids))
        return [(t, t.track_id in added_ids) for t in staged]

    def drop(self, bulk: BulkLoad) -> None:
        """Discard an unfinished bulk load (its staging table and staged postings)."""
        with self._store.raw() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(bulk.table)))
        bulk.staged, bulk.replaces = [], []

    def drop_stale(self) -> int:
        """Drop staging tables left by bulk loads whose run is no longer running (crash, kill).

        Returns
        -------
        n_dropped : int
        """
        with self._store.raw() as conn, conn.cursor() as cur:
            stale = [table.name for table in unattached_staging_tables(cur) if not table.run_running]
            for name in stale:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        return len(stale)


def _fetch_one(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _attach(cur: psycopg.Cursor[Any], table_name: str, low_id: int, high_id: int) -> None:
    """Index the staging table and attach it as the partition ``[low_id, high_id)`` of ``hashes``."""
    table = sql.Identifier(table_name)
    # Built once over sorted input: compact (full leaves), and the partition is never updated.
    cur.execute(sql.SQL("CREATE INDEX {} ON {} (zone, hash) WITH (fillfactor = 100)").format(
        sql.Identifier("hashes_zone_hash_" + table_name.removeprefix("hashes_")), table))
    # Takes SHARE UPDATE EXCLUSIVE on hashes: readers go on; no other partition is scanned, nor this one
    # (its CHECK, made with the table, proves the range).
    cur.execute(sql.SQL("ALTER TABLE hashes ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        table, sql.Literal(low_id), sql.Literal(high_id)))
