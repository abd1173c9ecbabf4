"""The matcher in SQL: fpstore_match_zones and fpstore_match (offset-histogram vote).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Both functions take the query's hashes as the seed's unsigned values (``bigint``, as the notebook's
``make_hash`` gives them) and their anchor times in frames, look them up through the ``(zone, hash)``
index (one index scan per zone over the query's distinct hashes, ``hash = ANY(array)``), count postings
per ``(track_id, t_anchor - t_query)`` and
return, per track, its fullest bin, ranked by votes descending, then track id; a track's offset is the
smallest among its fullest bins. fpstore's Python matcher (fpstore.matching.ranking) ranks the same way.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


#: The SQL-language vote; migration 0004 replaces it and restores it on downgrade.
MATCH_ZONES_SQL = """
        CREATE FUNCTION fpstore_match_zones(zone_names text[], seed_hashes bigint[], t_query integer[],
                                            top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            WITH q AS (
                SELECT z.id AS zone, fpstore_hash_key(u.seed_hash) AS hash, u.t
                FROM unnest(zone_names, seed_hashes, t_query) AS u(zone_name, seed_hash, t)
                JOIN zones z ON z.name = u.zone_name
            ), keys AS (
                SELECT q.zone, array_agg(DISTINCT q.hash) AS hashes FROM q GROUP BY q.zone
            ), found AS (
                SELECT p.zone, p.hash, p.track_id, p.t_anchor
                FROM keys k
                CROSS JOIN LATERAL (
                    SELECT h.zone, h.hash, h.track_id, h.t_anchor FROM hashes h
                    WHERE h.zone = k.zone AND h.hash = ANY(k.hashes)
                ) AS p
            ), bins AS (
                SELECT f.track_id, f.t_anchor - q.t AS offset_frames, count(*)::integer AS votes
                FROM found f JOIN q ON q.zone = f.zone AND q.hash = f.hash
                GROUP BY f.track_id, f.t_anchor - q.t
            ), best AS (
                SELECT DISTINCT ON (b.track_id) b.track_id, b.offset_frames, b.votes
                FROM bins b ORDER BY b.track_id, b.votes DESC, b.offset_frames
            )
            SELECT best.track_id, best.offset_frames, best.votes FROM best
            ORDER BY best.votes DESC, best.track_id
            LIMIT top_k
        $$
        """


#: fpstore_match over fpstore_match_zones; migration 0005 replaces it and restores it on downgrade.
MATCH_SQL = """
        CREATE FUNCTION fpstore_match(zone_name text, seed_hashes bigint[], t_query integer[],
                                      top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT * FROM fpstore_match_zones(array_fill(zone_name, ARRAY[cardinality(seed_hashes)]),
                                              seed_hashes, t_query, top_k)
        $$
        """


def upgrade() -> None:
    op.execute(MATCH_ZONES_SQL)
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_match_zones(text[], bigint[], integer[], integer) IS
        'Offset-histogram vote: query hash i (seed unsigned value) at frame t_query[i] in zone zone_names[i];'
        ' returns the top_k tracks with their best offset (frames) and aligned-hash count.'
        """
    )
    op.execute(MATCH_SQL)
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_match(text, bigint[], integer[], integer) IS
        'fpstore_match_zones with every query hash in one zone.'
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_match(text, bigint[], integer[], integer)")
    op.execute("DROP FUNCTION fpstore_match_zones(text[], bigint[], integer[], integer)")
