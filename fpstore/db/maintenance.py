"""Maintenance of the postings: which index serves lookups, and VACUUM.

Compaction (:mod:`fpstore.db.compact`) and read-only roles (:mod:`fpstore.db.access`) have modules of
their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from psycopg import sql

from fpstore.errors import ParameterError

if TYPE_CHECKING:
    from fpstore.db.database import Database

#: The two ways to index postings for lookup: name of the index and its definition.
LOOKUP_INDEXES = {
    "plain": ("hashes_zone_hash", "CREATE INDEX hashes_zone_hash ON hashes (zone, hash)"),
    "covering": ("hashes_zone_hash_cover",
                 "CREATE INDEX hashes_zone_hash_cover ON hashes (zone, hash) INCLUDE (track_id, t_anchor)"),
}


def set_lookup_index(store: Database, variant: str) -> int:
    """Index postings for lookup with the plain ``(zone, hash)`` B-tree or a covering one.

    The covering index (``INCLUDE (track_id, t_anchor)``) lets lookups read the index only, without
    visiting the heap; it costs about 11 more bytes per posting (docs/matching.md). The new index is
    built before the old one is dropped, so lookups keep an index throughout; then VACUUM ANALYZE sets
    the visibility map that index-only scans need.

    Parameters
    ----------
    store : Database
    variant : {"plain", "covering"}

    Returns
    -------
    index_bytes : int
        Size of the index now in use, with all its partitions.

    Raises
    ------
    ParameterError
        If ``variant`` is neither.
    """
    if variant not in LOOKUP_INDEXES:
        raise ParameterError(f"variant={variant!r} must be one of {sorted(LOOKUP_INDEXES)}")
    store.one_database("choosing the lookup index (`fpstore db lookup-index`)")
    store.check_schema()
    wanted, create = LOOKUP_INDEXES[variant]
    with store.raw() as conn:
        present = {name for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'hashes'")}
        if wanted not in present:
            conn.execute(create)
        for name, _ in LOOKUP_INDEXES.values():
            if name != wanted and name in present:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute("VACUUM ANALYZE hashes")
        found = conn.execute(
            "SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s::regclass)", (wanted,)
        ).fetchone()
    return int(found[0]) if found else 0


def vacuum(store: Database, tables: Sequence[str]) -> None:
    """``VACUUM (ANALYZE)`` each of ``tables``: space of deleted rows reused, planner statistics fresh."""
    with store.raw() as conn:
        for table in tables:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
