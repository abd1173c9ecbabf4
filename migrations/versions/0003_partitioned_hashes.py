"""Partition hashes by track id range, so a bulk ingest loads and indexes only its own partition.

The existing table becomes the DEFAULT partition ``hashes_default``: it keeps the existing postings and
receives small additions (the ordinary path, index maintained row by row). A bulk ingest COPYs into a
fresh table, builds its (zone, hash) index after the load, and attaches it as the partition of its
track id range in the transaction that inserts its tracks. The parent's index ``hashes_zone_hash`` is
a partitioned index: every lookup is an index scan in each partition.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

_POSTINGS_VIEW = """
    CREATE VIEW postings AS
    SELECT z.name AS zone_name, fpstore_hash_value(h.hash) AS seed_hash, h.track_id, t.file_name,
           h.t_anchor, h.zone, h.hash
    FROM hashes h JOIN zones z ON z.id = h.zone JOIN tracks t ON t.id = h.track_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW postings")
    op.execute("ALTER TABLE hashes RENAME TO hashes_default")
    op.execute("ALTER INDEX hashes_zone_hash RENAME TO hashes_zone_hash_default")
    op.execute(
        "CREATE TABLE hashes (zone smallint NOT NULL, hash integer NOT NULL, track_id integer NOT NULL,"
        " t_anchor integer NOT NULL) PARTITION BY RANGE (track_id)"
    )
    op.execute(
        "COMMENT ON TABLE hashes IS 'The inverted index: one row per (zone, hash, track, anchor time) posting."
        " Partitioned by track id range: bulk loads attach their own partition; small additions go to"
        " hashes_default.'"
    )
    op.execute("COMMENT ON COLUMN hashes.zone IS 'zones.id'")
    op.execute("COMMENT ON COLUMN hashes.hash IS 'the seed''s uint32 hash, same 32 bits, signed'")
    op.execute("COMMENT ON COLUMN hashes.track_id IS 'tracks.id'")
    op.execute("COMMENT ON COLUMN hashes.t_anchor IS 'anchor time, in STFT frames'")
    op.execute("ALTER TABLE hashes ATTACH PARTITION hashes_default DEFAULT")
    # Creating the partitioned index adopts the default partition's identical index (no rebuild).
    op.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")
    op.execute(_POSTINGS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW postings")
    op.execute("ALTER TABLE hashes RENAME TO hashes_partitioned")
    op.execute("ALTER INDEX hashes_zone_hash RENAME TO hashes_partitioned_zone_hash")
    op.execute(
        "CREATE TABLE hashes (zone smallint NOT NULL, hash integer NOT NULL, track_id integer NOT NULL,"
        " t_anchor integer NOT NULL)"
    )
    op.execute("INSERT INTO hashes SELECT zone, hash, track_id, t_anchor FROM hashes_partitioned ORDER BY zone, hash")
    op.execute("DROP TABLE hashes_partitioned CASCADE")
    op.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")
    op.execute(_POSTINGS_VIEW)
