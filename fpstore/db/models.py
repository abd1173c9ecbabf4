"""The database schema as SQLAlchemy Core tables.

The migrations in ``migrations/versions`` create exactly this schema; ``alembic check`` in CI fails when
the two disagree. fpstore never calls ``metadata.create_all``.

Conventions
-----------
- ``hashes.hash`` holds the seed's unsigned 32-bit hash in a signed ``integer`` with the same 32 bits
  (values from 2**31 on appear negative). SQL maps between the two with ``fpstore_hash_key(bigint)``
  and ``fpstore_hash_value(integer)``; Python with :func:`fpstore.signal.hashing.hash_keys`.
- Times in ``hashes`` are STFT frames; durations in tables are seconds (``_s``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

RUN_STATUSES = ("running", "completed", "failed", "interrupted")

profile = Table(
    "profile",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default=text("true")),
    Column("params", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("singleton", name="profile_single_row"),
    comment="The fingerprint profile (every parameter that decides what a hash means) of this database.",
)

zones = Table(
    "zones",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False, unique=True),
    Column("df_bins", Integer, nullable=False),
    Column("dt_min_frames", Integer, nullable=False),
    Column("dt_max_frames", Integer, nullable=False),
    CheckConstraint("df_bins BETWEEN 0 AND 1023", name="zones_df_bins_range"),
    CheckConstraint("0 <= dt_min_frames AND dt_min_frames <= dt_max_frames AND dt_max_frames <= 4095",
                    name="zones_dt_range"),
    comment="Target zones; hashes.zone holds zones.id.",
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("command", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("fpstore_version", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("backend_pid", Integer, nullable=False),
    Column("sample_rate", Integer, nullable=False),
    Column("n_fft", Integer, nullable=False),
    Column("hop_length", Integer, nullable=False),
    Column("bin_max", Integer),
    Column("peak_dist_freq", Integer, nullable=False),
    Column("peak_dist_time", Integer, nullable=False),
    Column("peak_thresh", Double, nullable=False),
    Column("top_k_targets", Integer),
    Column("duration_s", Double, comment="seconds loaded per file; NULL = full tracks"),
    Column("zone_ids", JSONB, nullable=False, comment="zones.id of every zone this run hashed"),
    Column("tracks_added", Integer, nullable=False, server_default="0"),
    Column("tracks_skipped", Integer, nullable=False, server_default="0"),
    Column("tracks_failed", Integer, nullable=False, server_default="0"),
    Column("postings_added", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("status IN ('running', 'completed', 'failed', 'interrupted')", name="runs_status_known"),
    comment="One row per ingest run, with every fingerprint parameter it used.",
)

tracks = Table(
    "tracks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("sha256", LargeBinary, nullable=False, unique=True),
    Column("duration_s", Double, nullable=False, comment="seconds of audio fingerprinted"),
    Column("n_frames", Integer, nullable=False),
    Column("n_peaks", Integer, nullable=False),
    Column("n_postings", Integer, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("octet_length(sha256) = 32", name="tracks_sha256_length"),
    comment="One row per distinct audio content; its postings are in hashes.",
)

failures = Table(
    "failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("failures_run_id", "run_id"),
    comment="Files an ingest run could not fingerprint, with the reason.",
)

# No foreign keys here on purpose: PostgreSQL checks them row by row, which would cost more than the
# COPY itself. fpstore writes a track's postings in the transaction that inserts the track, and removes
# them in the transaction that deletes it.
hashes = Table(
    "hashes",
    metadata,
    Column("zone", SmallInteger, nullable=False, comment="zones.id"),
    Column("hash", Integer, nullable=False, comment="the seed's uint32 hash, same 32 bits, signed"),
    Column("track_id", Integer, nullable=False, comment="tracks.id"),
    Column("t_anchor", Integer, nullable=False, comment="anchor time, in STFT frames"),
    Index("hashes_zone_hash", "zone", "hash"),
    comment="The inverted index: one row per (zone, hash, track, anchor time) posting."
    " Partitioned by track id range: ids below 1e9 in hashes_main; each bulk load attaches its own id block.",
    # Bulk loads attach their own track-id-block partition; small additions go to hashes_main
    # (migration 0003).
    postgresql_partition_by="RANGE (track_id)",
)


def include_in_comparison(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic ``include_name`` hook: leave the partitions of ``hashes`` out of schema comparisons.

    ``hashes_main`` and each bulk load's ``hashes_bulk_*`` partition (with their indexes) are created by
    migration 0003 and by bulk ingests; the model describes only the partitioned parent, which is what
    readers query.
    """
    if type_ == "table" and name is not None:
        return not name.startswith("hashes_")
    if type_ == "index" and name is not None:
        return not name.startswith("hashes_zone_hash_")
    return True
