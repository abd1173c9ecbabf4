"""The SQL vote can count distinct stored anchors per bin: fpstore_match_anchors.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``fpstore_vote(zone_names, seed_hashes, t_query, top_k, count_anchors)`` is 0005's vote with one more
argument. With ``count_anchors`` false a ``(track, offset)`` bin counts every (posting, query hash)
pair, as before; with it true, distinct stored anchors (``t_anchor``; the offset fixes the query time),
the ``count="anchors"`` of fpstore's Python matcher. The chance score takes its mean per bin from the
pairs either way, as the Python matcher does.

``fpstore_match_zones`` keeps its signature and its answers and now calls ``fpstore_vote(..., false)``;
``fpstore_match_anchors(zone_names, seed_hashes, t_query, top_k)`` is new and public, the same call
with ``true``. A caller pools sub-hop shifts by concatenating their arrays (the shifts' frames share
the query's numbering), and tries a speed factor with one call per factor.
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_VOTE_SQL = """
        CREATE FUNCTION fpstore_vote(zone_names text[], seed_hashes bigint[], t_query integer[], top_k integer,
                                     count_anchors boolean)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE plpgsql STABLE PARALLEL SAFE
        AS $$
        #variable_conflict use_column
        DECLARE
            zone_query record;
            zone_tracks integer[];
            zone_offsets integer[];
            zone_anchors integer[];
            all_tracks integer[] := '{}';
            all_offsets integer[] := '{}';
            all_anchors integer[] := '{}';
            query_span integer;
            track_pairs bigint[];
            track_bins bigint[];
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
                EXECUTE 'SELECT array_agg(p.track_id), array_agg(p.t_anchor - q.t), array_agg(p.t_anchor)
                         FROM fpstore_postings($1, $2) AS p JOIN unnest($3, $4) AS q(hash, t) ON q.hash = p.hash'
                    INTO zone_tracks, zone_offsets, zone_anchors
                    USING zone_query.zone_id, zone_query.keys, zone_query.hashes, zone_query.times;
                all_tracks := all_tracks || zone_tracks;
                all_offsets := all_offsets || zone_offsets;
                all_anchors := all_anchors || zone_anchors;
            END LOOP;
            -- The chance model: each track's vote pairs and the offset bins they can fall in.
            SELECT coalesce(max(q.t) - min(q.t), 0) INTO query_span FROM unnest(t_query) AS q(t);
            SELECT array_agg(c.pairs), array_agg(greatest(coalesce(tr.n_frames, 0) + query_span, 1))
                INTO track_pairs, track_bins
                FROM (SELECT a.track_id, count(*) AS pairs FROM unnest(all_tracks) AS a(track_id)
                      GROUP BY a.track_id) AS c
                LEFT JOIN tracks tr ON tr.id = c.track_id;
            RETURN QUERY
                WITH pairs AS (
                    SELECT b.track_id, b.offset_frames, b.t_anchor
                    FROM unnest(all_tracks, all_offsets, all_anchors) AS b(track_id, offset_frames, t_anchor)
                ), voters AS (
                    SELECT pairs.track_id, pairs.offset_frames FROM pairs WHERE NOT count_anchors
                    UNION ALL
                    SELECT d.track_id, d.offset_frames
                    FROM (SELECT DISTINCT pairs.track_id, pairs.offset_frames, pairs.t_anchor FROM pairs
                          WHERE count_anchors) AS d
                ), bins AS (
                    SELECT voters.track_id, voters.offset_frames, count(*)::integer AS votes
                    FROM voters GROUP BY voters.track_id, voters.offset_frames
                ), best AS (
                    SELECT DISTINCT ON (bins.track_id) bins.track_id, bins.offset_frames, bins.votes
                    FROM bins ORDER BY bins.track_id, bins.votes DESC, bins.offset_frames
                ), ranked AS (
                    SELECT best.track_id, best.offset_frames, best.votes FROM best
                    ORDER BY best.votes DESC, best.track_id
                    LIMIT top_k
                )
                SELECT ranked.track_id, ranked.offset_frames, ranked.votes,
                       fpstore_chance_score(ranked.votes, track_pairs, track_bins)
                FROM ranked
                ORDER BY ranked.votes DESC, ranked.track_id;
        END
        $$
        """


def _vote_call(name: str, count_anchors: bool) -> str:
    """``CREATE OR REPLACE`` of a public vote that calls ``fpstore_vote`` with ``count_anchors``."""
    return f"""
        CREATE OR REPLACE FUNCTION {name}(zone_names text[], seed_hashes bigint[], t_query integer[],
                                          top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT * FROM fpstore_vote(zone_names, seed_hashes, t_query, top_k, {str(count_anchors).lower()})
        $$
        """


def upgrade() -> None:
    op.execute(_VOTE_SQL)
    op.execute(_vote_call("fpstore_match_zones", False))
    op.execute(_vote_call("fpstore_match_anchors", True))
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_match_anchors(text[], bigint[], integer[], integer) IS
        'fpstore_match_zones counting distinct stored anchors per (track, offset) bin instead of hash pairs;'
        ' the score takes its mean per bin from the pairs.'
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_match_anchors(text[], bigint[], integer[], integer)")
    op.execute(revision_module("0005_chance_score.py").MATCH_ZONES_SQL.replace("CREATE FUNCTION",
                                                                               "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION fpstore_vote(text[], bigint[], integer[], integer, boolean)")
