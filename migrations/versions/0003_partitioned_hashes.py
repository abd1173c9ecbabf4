"""Partition hashes by track id range, so a bulk ingest loads and indexes only its own partition.

Track ids below 1,000,000,000 (``tracks_id_seq``, the ordinary path) live in the partition
``hashes_main``: it keeps the existing postings and receives small additions, its index maintained row
by row. A bulk ingest reserves a block of ids from ``tracks_bulk_id_seq`` (which starts at 1,000,000,000),
COPYs into a fresh table, builds its (zone, hash) index after the load, and attaches it as the
partition of its id block in the transaction that inserts its tracks. There is no DEFAULT partition, so
attaching scans no other partition; a CHECK constraint equal to the range lets it skip scanning the new
one too. The parent's index ``hashes_zone_hash`` is partitioned: every lookup is an index scan in each
partition.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: First track id of the bulk id space; ordinary ids stay below it.
BULK_FIRST_ID = 1_000_000_000

_POSTINGS_VIEW = """
    CREATE VIEW postings AS
    SELECT z.name AS zone_name, fpstore_hash_value(h.hash) AS seed_hash, h.track_id, t.file_name,
           h.t_anchor, h.zone, h.hash
    FROM hashes h JOIN zones z ON z.id = h.zone JOIN tracks t ON t.id = h.track_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW postings")
    op.execute("ALTER TABLE hashes RENAME TO hashes_main")
    op.execute("ALTER INDEX hashes_zone_hash RENAME TO hashes_zone_hash_main")
    op.execute(
        "CREATE TABLE hashes (zone smallint NOT NULL, hash integer NOT NULL, track_id integer NOT NULL,"
        " t_anchor integer NOT NULL) PARTITION BY RANGE (track_id)"
    )
    op.execute(
        "COMMENT ON TABLE hashes IS 'The inverted index: one row per (zone, hash, track, anchor time) posting."
        " Partitioned by track id range: ids below 1e9 in hashes_main; each bulk load attaches its own id block.'"
    )
    op.execute("COMMENT ON COLUMN hashes.zone IS 'zones.id'")
    op.execute("COMMENT ON COLUMN hashes.hash IS 'the seed''s uint32 hash, same 32 bits, signed'")
    op.execute("COMMENT ON COLUMN hashes.track_id IS 'tracks.id'")
    op.execute("COMMENT ON COLUMN hashes.t_anchor IS 'anchor time, in STFT frames'")
    op.execute(f"ALTER TABLE hashes ATTACH PARTITION hashes_main FOR VALUES FROM (MINVALUE) TO ({BULK_FIRST_ID})")
    op.execute(f"CREATE SEQUENCE tracks_bulk_id_seq AS integer START {BULK_FIRST_ID} MINVALUE {BULK_FIRST_ID}")
    # Creating the partitioned index adopts hashes_main's identical index (no rebuild).
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
    op.execute("DROP SEQUENCE tracks_bulk_id_seq")
    op.execute("CREATE INDEX hashes_zone_hash ON hashes (zone, hash)")
    op.execute(_POSTINGS_VIEW)
