"""Initial schema: profile, zones, runs, tracks, failures, hashes, and the hash mapping functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


#: The two forms of a hash; a cluster's router (migrations/router) defines the same functions.
HASH_KEY_SQL = """
        CREATE FUNCTION fpstore_hash_key(seed_hash bigint) RETURNS integer
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT (CASE WHEN seed_hash >= 2147483648 THEN seed_hash - 4294967296 ELSE seed_hash END)::integer $$
        """
HASH_VALUE_SQL = """
        CREATE FUNCTION fpstore_hash_value(stored_hash integer) RETURNS bigint
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT stored_hash::bigint & 4294967295 $$
        """


def upgrade() -> None:
    op.create_table(
        "profile",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.text("true")),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("singleton", name="profile_single_row"),
        comment="The fingerprint profile (every parameter that decides what a hash means) of this database.",
    )
    op.create_table(
        "zones",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("df_bins", sa.Integer, nullable=False),
        sa.Column("dt_min_frames", sa.Integer, nullable=False),
        sa.Column("dt_max_frames", sa.Integer, nullable=False),
        sa.CheckConstraint("df_bins BETWEEN 0 AND 1023", name="zones_df_bins_range"),
        sa.CheckConstraint(
            "0 <= dt_min_frames AND dt_min_frames <= dt_max_frames AND dt_max_frames <= 4095",
            name="zones_dt_range",
        ),
        comment="Target zones; hashes.zone holds zones.id.",
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("fpstore_version", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("backend_pid", sa.Integer, nullable=False),
        sa.Column("sample_rate", sa.Integer, nullable=False),
        sa.Column("n_fft", sa.Integer, nullable=False),
        sa.Column("hop_length", sa.Integer, nullable=False),
        sa.Column("bin_max", sa.Integer),
        sa.Column("peak_dist_freq", sa.Integer, nullable=False),
        sa.Column("peak_dist_time", sa.Integer, nullable=False),
        sa.Column("peak_thresh", sa.Double, nullable=False),
        sa.Column("top_k_targets", sa.Integer),
        sa.Column("duration_s", sa.Double, comment="seconds loaded per file; NULL = full tracks"),
        sa.Column("zone_ids", JSONB, nullable=False, comment="zones.id of every zone this run hashed"),
        sa.Column("tracks_added", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tracks_skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tracks_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("postings_added", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'interrupted')", name="runs_status_known"
        ),
        comment="One row per ingest run, with every fingerprint parameter it used.",
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("sha256", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("duration_s", sa.Double, nullable=False, comment="seconds of audio fingerprinted"),
        sa.Column("n_frames", sa.Integer, nullable=False),
        sa.Column("n_peaks", sa.Integer, nullable=False),
        sa.Column("n_postings", sa.Integer, nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("octet_length(sha256) = 32", name="tracks_sha256_length"),
        comment="One row per distinct audio content; its postings are in hashes.",
    )
    op.create_table(
        "failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        comment="Files an ingest run could not fingerprint, with the reason.",
    )
    op.create_index("failures_run_id", "failures", ["run_id"])
    op.create_table(
        "hashes",
        sa.Column("zone", sa.SmallInteger, nullable=False, comment="zones.id"),
        sa.Column("hash", sa.Integer, nullable=False, comment="the seed's uint32 hash, same 32 bits, signed"),
        sa.Column("track_id", sa.Integer, nullable=False, comment="tracks.id"),
        sa.Column("t_anchor", sa.Integer, nullable=False, comment="anchor time, in STFT frames"),
        comment="The inverted index: one row per (zone, hash, track, anchor time) posting.",
    )
    op.create_index("hashes_zone_hash", "hashes", ["zone", "hash"])
    # The seed's hashes are unsigned 32-bit; the column stores the same bits as a signed integer
    # (4 bytes instead of a bigint's 8). These two functions map between the forms; both are
    # IMMUTABLE SQL functions, so `hash = fpstore_hash_key(123456789)` is folded to a constant and
    # stays an index condition.
    op.execute(HASH_KEY_SQL)
    op.execute(HASH_VALUE_SQL)
    op.execute(
        """
        CREATE VIEW postings AS
        SELECT z.name AS zone_name, fpstore_hash_value(h.hash) AS seed_hash, h.track_id, t.file_name,
               h.t_anchor, h.zone, h.hash
        FROM hashes h JOIN zones z ON z.id = h.zone JOIN tracks t ON t.id = h.track_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW postings")
    op.execute("DROP FUNCTION fpstore_hash_value(integer)")
    op.execute("DROP FUNCTION fpstore_hash_key(bigint)")
    for table in ("hashes", "failures", "tracks", "runs", "zones", "profile"):
        op.drop_table(table)
