"""The SQL vote returns the calibrated chance score of every ranked track.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``fpstore_match_zones`` and ``fpstore_match`` take the same arguments as before and return one more
column, ``score double precision``: ``-log10 p``, where ``p`` bounds the probability that chance fills
some tested ``(track, offset)`` bin with the track's votes (``fpstore.matching.significance``: per track ``j``,
``n_j`` vote pairs over ``B_j = tracks.n_frames + (max(t_query) - min(t_query))`` offset bins;
``p = min(1, sum_j B_j * P(Poisson(n_j / B_j) >= votes))``, bounded in closed form). A caller that
names its columns (``SELECT track_id, offset_frames, votes FROM fpstore_match(...)``) reads the same
rows as before. A new return type needs ``DROP`` and ``CREATE``, and ``fpstore_match`` calls
``fpstore_match_zones``: both are dropped and created again (the default privileges that
``fpstore db grant-reader`` sets give a reader role EXECUTE on the new ones).

``fpstore_chance_score(votes, track_pairs bigint[], track_bins bigint[])`` is new and public: the
score alone, for clients that vote themselves over ``fpstore_postings``. fpstore's Python matcher
computes the same numbers (equal to rounding; its answers round scores to 4 decimals).
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CHANCE_SCORE_SQL = """
        CREATE FUNCTION fpstore_chance_score(votes integer, track_pairs bigint[], track_bins bigint[])
        RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
            WITH log_factorial AS (
                SELECT coalesce(sum(ln(i::double precision)), 0) AS value FROM generate_series(1, votes) AS i
            ), tracks_able AS (
                SELECT t.bins::double precision AS bins, t.pairs::double precision / t.bins AS lambda
                FROM unnest(track_pairs, track_bins) AS t(pairs, bins)
                WHERE t.pairs >= votes
            ), terms AS (
                SELECT ln(a.bins) + CASE
                    WHEN votes >= a.lambda + 1 THEN least(
                        -a.lambda + votes * ln(a.lambda) - f.value + ln((votes + 1) / (votes + 1 - a.lambda)), 0.0)
                    ELSE 0.0 END AS log_term
                FROM tracks_able a CROSS JOIN log_factorial f
            ), peaked AS (
                SELECT log_term, max(log_term) OVER () AS peak FROM terms
            )
            -- exp() of PostgreSQL raises on underflow: terms 700 below the largest weigh nothing anyway
            SELECT coalesce(greatest(-(max(peak) + ln(sum(exp(greatest(log_term - peak, -700.0))))) / ln(10.0), 0.0),
                            0.0)
            FROM peaked
        $$
        """

#: The vote with its score; migration 0006 makes it a call of ``fpstore_vote`` and restores it on downgrade.
MATCH_ZONES_SQL = """
        CREATE FUNCTION fpstore_match_zones(zone_names text[], seed_hashes bigint[], t_query integer[],
                                            top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE plpgsql STABLE PARALLEL SAFE
        AS $$
        #variable_conflict use_column
        DECLARE
            zone_query record;
            zone_tracks integer[];
            zone_offsets integer[];
            all_tracks integer[] := '{}';
            all_offsets integer[] := '{}';
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
                EXECUTE 'SELECT array_agg(p.track_id), array_agg(p.t_anchor - q.t)
                         FROM fpstore_postings($1, $2) AS p JOIN unnest($3, $4) AS q(hash, t) ON q.hash = p.hash'
                    INTO zone_tracks, zone_offsets
                    USING zone_query.zone_id, zone_query.keys, zone_query.hashes, zone_query.times;
                all_tracks := all_tracks || zone_tracks;
                all_offsets := all_offsets || zone_offsets;
            END LOOP;
            -- The chance model: each track's vote pairs and the offset bins they can fall in.
            SELECT coalesce(max(q.t) - min(q.t), 0) INTO query_span FROM unnest(t_query) AS q(t);
            SELECT array_agg(c.pairs), array_agg(greatest(coalesce(tr.n_frames, 0) + query_span, 1))
                INTO track_pairs, track_bins
                FROM (SELECT a.track_id, count(*) AS pairs FROM unnest(all_tracks) AS a(track_id)
                      GROUP BY a.track_id) AS c
                LEFT JOIN tracks tr ON tr.id = c.track_id;
            RETURN QUERY
                WITH bins AS (
                    SELECT b.track_id, b.offset_frames, count(*)::integer AS votes
                    FROM unnest(all_tracks, all_offsets) AS b(track_id, offset_frames)
                    GROUP BY b.track_id, b.offset_frames
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

_MATCH_SQL = """
        CREATE FUNCTION fpstore_match(zone_name text, seed_hashes bigint[], t_query integer[],
                                      top_k integer DEFAULT 5)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT * FROM fpstore_match_zones(array_fill(zone_name, ARRAY[cardinality(seed_hashes)]),
                                              seed_hashes, t_query, top_k)
        $$
        """

_COMMENT_CHANCE_SCORE = """
    COMMENT ON FUNCTION fpstore_chance_score(integer, bigint[], bigint[]) IS
    '-log10 of the chance that some (track, offset) bin holds votes pairs: track j received track_pairs[j]'
    ' vote pairs over track_bins[j] offset bins (Poisson bound, Bonferroni over every bin).'
    """
#: The comments of 0002, with what the vote returns filled in.
_COMMENTS_OF_THE_VOTE = (
    """
    COMMENT ON FUNCTION fpstore_match_zones(text[], bigint[], integer[], integer) IS
    'Offset-histogram vote: query hash i (seed unsigned value) at frame t_query[i] in zone zone_names[i];'
    ' returns the top_k tracks with their best offset (frames) and {returns}.'
    """,
    """
    COMMENT ON FUNCTION fpstore_match(text, bigint[], integer[], integer) IS
    'fpstore_match_zones with every query hash in one zone.'
    """,
)


def _comment_the_vote(returns: str) -> None:
    for statement in _COMMENTS_OF_THE_VOTE:
        op.execute(statement.format(returns=returns))


def upgrade() -> None:
    op.execute("DROP FUNCTION fpstore_match(text, bigint[], integer[], integer)")
    op.execute("DROP FUNCTION fpstore_match_zones(text[], bigint[], integer[], integer)")
    for statement in (_CHANCE_SCORE_SQL, _COMMENT_CHANCE_SCORE, MATCH_ZONES_SQL, _MATCH_SQL):
        op.execute(statement)
    _comment_the_vote("aligned-hash count, and its chance score (-log10 p, fpstore_chance_score)")


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_match(text, bigint[], integer[], integer)")
    op.execute("DROP FUNCTION fpstore_match_zones(text[], bigint[], integer[], integer)")
    op.execute("DROP FUNCTION fpstore_chance_score(integer, bigint[], bigint[])")
    op.execute(revision_module("0004_vote_planned_per_call.py").MATCH_ZONES_SQL)
    op.execute(revision_module("0002_match_function.py").MATCH_SQL)
    _comment_the_vote("aligned-hash count")

