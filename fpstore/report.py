"""Reports: the seed notebook's per-zone table and storage sizes, computed by SQL aggregates.

Conventions
-----------
- Sizes are bytes on disk as PostgreSQL reports them (:mod:`fpstore.db.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fpstore.db.contract import Catalogue

#: Columns of the per-zone report: the seed's, then what the database adds.
ZONE_COLUMNS = (
    "zone", "df_bins", "dt_min_frames", "dt_max_frames", "total_hashes", "avg_hashes_per_track",
    "num_tracks", "top_k_targets", "db_size_bytes", "unique_hashes", "postings_per_hash",
)

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


def build_report(store: Catalogue) -> Report:
    """Compute the report in the database.

    Parameters
    ----------
    store : Catalogue

    Returns
    -------
    report : Report
    """
    store.check_schema()
    zones = store.stats.zone_rows()
    relations = store.stats.relation_sizes()
    postings = sum(row["total_hashes"] for row in zones)
    hashes_bytes = sum(row["bytes"] for row in relations if row["table_name"] == "hashes")
    return Report(zones, relations, hashes_bytes / postings if postings else None)
