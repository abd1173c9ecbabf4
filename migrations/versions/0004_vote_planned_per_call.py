"""The SQL vote plans its lookups with the query's own keys, on every call.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Why: 0002's ``fpstore_match_zones`` was one SQL statement whose key arrays came from a CTE, so the planner
never saw them. Inlined into a statement with constant arguments it chose, on a 12-track database, a
sequential scan of ``hashes`` with ``hash = ANY(array)`` as a join filter: 13.7 s for a 10 s query (every
posting compared with every key). Once a client had run it five times on one connection (psycopg
prepares a statement at its fifth execution), PostgreSQL could switch to a generic plan, with other
estimates again (2.2 s instead of 85 ms at 1,000 tracks, measured in issue 13).

Now ``fpstore_match_zones`` is PL/pgSQL. Per zone, it takes the zone's distinct keys into a variable and
runs the lookup (:func:`fpstore_postings`, the statement fpstore's Python matcher sends,
``zone = $1 AND hash = ANY($2)``) and its join with the query's hashes through ``EXECUTE ... USING``,
which plans the statement afresh on every call with the call's own arrays, whatever ``plan_cache_mode``
is and however the caller prepares its own statement. Its other two statements read only ``zones`` and
the arrays (they group the query's hashes per zone, and vote over the fetched postings), so no plan of
theirs can scan ``hashes``.
The answers are unchanged (same bins, same ranking, same ties); ``fpstore_match`` still calls it.

``fpstore_postings(zone_id, stored_hashes)`` is new and public: the posting lookup, for clients that vote
themselves (stored, signed hash values: ``fpstore_hash_key`` converts the notebook's).
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: The PL/pgSQL vote; migration 0005 replaces it and restores it on downgrade.
MATCH_ZONES_SQL = """
        CREATE OR REPLACE FUNCTION fpstore_match_zones(zone_names text[], seed_hashes bigint[], t_query integer[],
                                                       top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer)
        LANGUAGE plpgsql STABLE PARALLEL SAFE
        AS $$
        #variable_conflict use_column
        DECLARE
            zone_query record;
            zone_tracks integer[];
            zone_offsets integer[];
            all_tracks integer[] := '{}';
            all_offsets integer[] := '{}';
        BEGIN
            FOR zone_query IN
                SELECT z.id AS zone_id, g.keys, g.hashes, g.times
                FROM (
                    SELECT u.zone_name, array_agg(DISTINCT fpstore_hash_key(u.seed_hash)) AS keys,
                           array_agg(fpstore_hash_key(u.seed_hash)) AS hashes, array_agg(u.t) AS times
                    FROM unnest(zone_names, seed_hashes, t_query) AS u(zone_name, seed_hash, t)
                    GROUP BY u.zone_name
                ) AS g
                JOIN zones z ON z.name = g.zone_name
            LOOP
                EXECUTE 'SELECT array_agg(p.track_id), array_agg(p.t_anchor - q.t)
                         FROM fpstore_postings($1, $2) AS p JOIN unnest($3, $4) AS q(hash, t) ON q.hash = p.hash'
                    INTO zone_tracks, zone_offsets
                    USING zone_query.zone_id, zone_query.keys, zone_query.hashes, zone_query.times;
                all_tracks := all_tracks || zone_tracks;
                all_offsets := all_offsets || zone_offsets;
            END LOOP;
            RETURN QUERY
                WITH bins AS (
                    SELECT b.track_id, b.offset_frames, count(*)::integer AS votes
                    FROM unnest(all_tracks, all_offsets) AS b(track_id, offset_frames)
                    GROUP BY b.track_id, b.offset_frames
                ), best AS (
                    SELECT DISTINCT ON (bins.track_id) bins.track_id, bins.offset_frames, bins.votes
                    FROM bins ORDER BY bins.track_id, bins.votes DESC, bins.offset_frames
                )
                SELECT best.track_id, best.offset_frames, best.votes FROM best
                ORDER BY best.votes DESC, best.track_id
                LIMIT top_k;
        END
        $$
        """


#: The posting lookup; migration 0008 hides its keys from the planner and restores this on downgrade.
POSTINGS_SQL = """
        CREATE FUNCTION fpstore_postings(zone_id smallint, stored_hashes integer[])
        RETURNS TABLE (hash integer, track_id integer, t_anchor integer)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT h.hash, h.track_id, h.t_anchor FROM hashes h
            WHERE h.zone = zone_id AND h.hash = ANY(stored_hashes)
        $$
        """


def upgrade() -> None:
    op.execute(POSTINGS_SQL)
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_postings(smallint, integer[]) IS
        'Every posting of zone zone_id whose stored hash is one of stored_hashes (one index scan).'
        """
    )
    op.execute(MATCH_ZONES_SQL)


def downgrade() -> None:
    op.execute(revision_module("0002_match_function.py").MATCH_ZONES_SQL.replace("CREATE FUNCTION",
                                                                                 "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION fpstore_postings(smallint, integer[])")

