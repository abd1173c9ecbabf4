"""Statistics computed in the database: the notebook's per-zone report, storage sizes, histograms, snapshots.

Conventions
-----------
- Sizes are bytes on disk as PostgreSQL reports them (``pg_relation_size``, ``pg_database_size``); the
  partitions of ``hashes`` and their indexes count towards ``hashes``.
- Counts of postings are rows of ``hashes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from fpstore.db.pgcopy import copy_out

if TYPE_CHECKING:
    from fpstore.db.database import Database

_ZONE_SQL = """
SELECT z.name AS zone, z.df_bins, z.dt_min_frames, z.dt_max_frames,
       coalesce(h.total, 0) AS total_hashes,
       coalesce(h.total, 0)::float8 / nullif(t.n, 0) AS avg_hashes_per_track,
       t.n AS num_tracks,
       (p.params ->> 'top_k_targets')::int AS top_k_targets,
       pg_database_size(current_database()) AS db_size_bytes,
       coalesce(h.uniq, 0) AS unique_hashes,
       coalesce(h.total, 0)::float8 / nullif(h.uniq, 0) AS postings_per_hash
FROM zones z
LEFT JOIN (SELECT zone, count(*) AS total, count(DISTINCT hash) AS uniq FROM hashes GROUP BY zone) h
       ON h.zone = z.id
CROSS JOIN (SELECT count(*) AS n FROM tracks) t
LEFT JOIN profile p ON true
ORDER BY z.id
"""

_SIZES_SQL = """
SELECT c.relname AS name,
       CASE WHEN c.relkind IN ('i', 'I') THEN 'index' ELSE 'table' END AS kind,
       coalesce(root.relname, t.relname, c.relname) AS table_name,
       pg_relation_size(c.oid) AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
-- partitions of hashes (and their indexes) count towards hashes
LEFT JOIN pg_class root ON root.oid = pg_partition_root(coalesce(t.oid, c.oid))
WHERE c.relkind IN ('r', 'i', 'p', 'I')
  AND coalesce(root.relname, t.relname, c.relname) IN ('hashes', 'tracks', 'runs', 'zones', 'failures', 'profile')
ORDER BY table_name, kind DESC, name
"""

_POSTINGS_PER_TRACK_SQL = (
    "SELECT z.name, h.track_id, count(*) FROM hashes h JOIN zones z ON z.id = h.zone GROUP BY z.name, h.track_id"
)
_POSTING_LIST_LENGTHS_SQL = (
    "SELECT z.name, l.n, count(*) FROM (SELECT zone, count(*) AS n FROM hashes GROUP BY zone, hash) l "
    "JOIN zones z ON z.id = l.zone GROUP BY z.name, l.n"
)


@dataclass(frozen=True)
class Snapshot:
    """Tracks, zones and every posting, read in one consistent snapshot (for exports).

    Attributes
    ----------
    tracks : list of (id, file_name), by id
    zone_names : dict[int, str]
        Zone name by ``zones.id``.
    duration_s : float or None
        Seconds loaded per file by the newest run that added tracks (None: full tracks; 30.0 if no run
        added any).
    copy_streams : tuple of bytes
        ``hashes (zone, hash, track_id, t_anchor)`` as binary COPY streams
        (:func:`fpstore.db.pgcopy.decode_postings` reads each): one, or one per shard of a cluster.
    """

    tracks: list[tuple[int, str]]
    zone_names: dict[int, str]
    duration_s: float | None
    copy_streams: tuple[bytes, ...]


class Stats:
    """Aggregates of one database (``store.stats``)."""

    def __init__(self, store: Database) -> None:
        self._store = store

    def zone_rows(self) -> list[dict[str, Any]]:
        """The notebook's report, one row per zone (``zone, df_bins, ..., total_hashes, ...``), by zone id."""
        with self._store.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(_ZONE_SQL))]

    def relation_sizes(self) -> list[dict[str, Any]]:
        """Every fpstore table and index: ``name``, ``kind`` (table or index), ``table_name``, ``bytes``."""
        with self._store.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(_SIZES_SQL))]

    def postings_per_track(self) -> list[tuple[str, int, int]]:
        """``(zone name, track id, postings)`` for every track and zone that has postings."""
        with self._store.connect() as conn:
            return [(str(z), int(t), int(n)) for z, t, n in conn.execute(text(_POSTINGS_PER_TRACK_SQL))]

    def posting_list_lengths(self) -> list[tuple[str, int, int]]:
        """``(zone name, postings per hash, number of hashes with that many)``: the histogram of list lengths."""
        with self._store.connect() as conn:
            return [(str(z), int(n), int(c)) for z, n, c in conn.execute(text(_POSTING_LIST_LENGTHS_SQL))]

    def snapshot(self) -> Snapshot:
        """Tracks, zones and every posting in one REPEATABLE READ transaction (see :class:`Snapshot`)."""
        with self._store.raw() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT id, file_name FROM tracks ORDER BY id")
            tracks = [(int(track_id), str(name)) for track_id, name in cur.fetchall()]
            cur.execute("SELECT id, name FROM zones")
            zone_names = {int(zone_id): str(name) for zone_id, name in cur.fetchall()}
            cur.execute("SELECT duration_s, true FROM runs WHERE tracks_added > 0 ORDER BY id DESC LIMIT 1")
            newest = cur.fetchone()
            duration_s = 30.0 if newest is None else newest[0]
            stream = copy_out(cur)
        return Snapshot(tracks, zone_names, duration_s, (stream,))
