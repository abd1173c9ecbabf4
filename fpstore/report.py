"""Reports: the seed notebook's per-zone table and storage sizes, computed by SQL aggregates.

Conventions
-----------
- Sizes are bytes on disk as PostgreSQL reports them (``pg_relation_size``, ``pg_database_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from fpstore.db.store import Store

#: Columns of the per-zone report: the seed's, then what the database adds.
ZONE_COLUMNS = (
    "zone", "df_bins", "dt_min_frames", "dt_max_frames", "total_hashes", "avg_hashes_per_track",
    "num_tracks", "top_k_targets", "db_size_bytes", "unique_hashes", "postings_per_hash",
)

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


@dataclass(frozen=True)
class Report:
    """A database report.

    Attributes
    ----------
    zones : list of dict
        One row per zone, keys :data:`ZONE_COLUMNS`.
    relations : list of dict
        One row per table and index: ``name``, ``kind`` (table or index), ``table_name``, ``bytes``.
    bytes_per_posting : float or None
        Heap plus indexes of ``hashes``, divided by the number of postings.
    """

    zones: list[dict[str, Any]]
    relations: list[dict[str, Any]]
    bytes_per_posting: float | None


def build_report(store: Store) -> Report:
    """Compute the report in the database.

    Parameters
    ----------
    store : Store

    Returns
    -------
    report : Report
    """
    store.check_schema()
    with store.engine.connect() as conn:
        zones = [dict(row._mapping) for row in conn.execute(text(_ZONE_SQL))]
        relations = [dict(row._mapping) for row in conn.execute(text(_SIZES_SQL))]
    postings = sum(row["total_hashes"] for row in zones)
    hashes_bytes = sum(row["bytes"] for row in relations if row["table_name"] == "hashes")
    return Report(zones, relations, hashes_bytes / postings if postings else None)
