"""The SQL vote can score under the tracks null: fpstore_match_tracks.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

``fpstore_match_tracks(zone_names, seed_hashes, t_query, top_k DEFAULT 5, count_anchors DEFAULT true)``
is 0006's vote (same text, same ranking) whose ``score`` is the tracks null of ``fpstore.matching.significance``
(``DecisionRule(null="tracks")``, ``fpstore match --null tracks``): every voted track's own Poisson
evidence (``fpstore_track_log_p``: its fullest bin against the mean of the votes it counted over its
offset bins, corrected for those bins), judged on a scale the query measures on its other tracks
(``fpstore_tracks_null_score``: the normalised spacings of the best 31 tracks' evidence below the
second, at least the Poisson model's scale, and the excess over the 31st). The two helpers are public
for a client that votes itself. fpstore's Python matcher computes the same numbers (equal to rounding).
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module, rewritten

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: ``fpstore.matching.significance.TRACKS_NULL_DEPTH`` and ``TRACKS_NULL_SKIP`` when this revision was written (a test
#: checks they still agree: a change there needs a revision of its own).
TRACKS_NULL_DEPTH = 30
TRACKS_NULL_SKIP = 2

_TRACK_LOG_P_SQL = """
        CREATE FUNCTION fpstore_track_log_p(votes integer, counted bigint, bins bigint)
        RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
            WITH log_factorial AS (
                SELECT coalesce(sum(ln(i::double precision)), 0) AS value FROM generate_series(1, votes) AS i
            ), model AS (
                SELECT greatest(bins, 1)::double precision AS bins,
                       counted::double precision / greatest(bins, 1) AS lambda
            )
            SELECT least(ln(m.bins) + CASE
                WHEN votes >= m.lambda + 1 THEN least(
                    -m.lambda + votes * ln(m.lambda) - f.value + ln((votes + 1) / (votes + 1 - m.lambda)), 0.0)
                ELSE 0.0 END, 0.0)
            FROM model m CROSS JOIN log_factorial f
        $$
        """

_TRACKS_NULL_SCORE_SQL = f"""
        CREATE FUNCTION fpstore_tracks_null_score(candidate_log_p double precision, track_log_p double precision[])
        RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
            WITH voted AS (
                SELECT -t.log_p AS evidence FROM unnest(track_log_p) AS t(log_p)
                ORDER BY -t.log_p DESC LIMIT {TRACKS_NULL_DEPTH + 1}
            ), best AS (
                -- with fewer tracks than that, the next track got no vote: no evidence
                SELECT evidence FROM voted
                UNION ALL
                SELECT 0.0 WHERE (SELECT count(*) FROM voted) <= {TRACKS_NULL_DEPTH}
            ), ranked AS (
                SELECT evidence, row_number() OVER (ORDER BY evidence DESC) AS r FROM best
            ), spaced AS (
                SELECT r, evidence, r * (evidence - lead(evidence) OVER (ORDER BY r)) AS spacing FROM ranked
            ), scale AS (
                -- ranks without a track (a small catalogue) count at the Poisson model's scale, 1
                SELECT greatest(1.0, (coalesce(sum(spacing) FILTER (WHERE r > {TRACKS_NULL_SKIP}), 0)
                                      + {TRACKS_NULL_DEPTH - TRACKS_NULL_SKIP}
                                      - count(spacing) FILTER (WHERE r > {TRACKS_NULL_SKIP}))
                                     / {TRACKS_NULL_DEPTH - TRACKS_NULL_SKIP}.0) AS sigma,
                       count(*) - 1 AS k, min(evidence) AS threshold
                FROM spaced
            )
            SELECT greatest(-(ln(k) - {TRACKS_NULL_DEPTH - TRACKS_NULL_SKIP}
                              * ln(1 + greatest(-candidate_log_p - threshold, 0.0)
                                       / ({TRACKS_NULL_DEPTH - TRACKS_NULL_SKIP} * sigma))) / ln(10.0), 0.0)
            FROM scale
        $$
        """

#: 0006's vote, and what in its text becomes the tracks null (each piece occurs once there).
_REWRITES = (
    ("""CREATE FUNCTION fpstore_vote(zone_names text[], seed_hashes bigint[], t_query integer[], top_k integer,
                                     count_anchors boolean)""",
     """CREATE FUNCTION fpstore_match_tracks(zone_names text[], seed_hashes bigint[], t_query integer[],
                                             top_k integer DEFAULT 5, count_anchors boolean DEFAULT true)"""),
    ("-- The chance model: each track's vote pairs and the offset bins they can fall in.",
     "-- A track's offset bins: its frames plus the query's span."),
    ("""            SELECT array_agg(c.pairs), array_agg(greatest(coalesce(tr.n_frames, 0) + query_span, 1))
                INTO track_pairs, track_bins
                FROM (SELECT a.track_id, count(*) AS pairs FROM unnest(all_tracks) AS a(track_id)
                      GROUP BY a.track_id) AS c
                LEFT JOIN tracks tr ON tr.id = c.track_id;
""", ""),
    ("), ranked AS (",
     """), evidence AS (
                    SELECT best.track_id,
                           fpstore_track_log_p(best.votes, c.counted,
                                               greatest(coalesce(tr.n_frames, 0) + query_span, 1)) AS log_p
                    FROM best
                    JOIN (SELECT voters.track_id, count(*) AS counted FROM voters GROUP BY voters.track_id) AS c
                        ON c.track_id = best.track_id
                    LEFT JOIN tracks tr ON tr.id = best.track_id
                ), model AS (
                    SELECT array_agg(evidence.log_p) AS all_log_p FROM evidence
                ), ranked AS ("""),
    ("""fpstore_chance_score(ranked.votes, track_pairs, track_bins)
                FROM ranked
""", """fpstore_tracks_null_score(evidence.log_p, model.all_log_p)
                FROM ranked JOIN evidence ON evidence.track_id = ranked.track_id CROSS JOIN model
"""),
)


def match_tracks_sql() -> str:
    """``CREATE FUNCTION fpstore_match_tracks``: 0006's vote text with :data:`_REWRITES` applied."""
    return rewritten(revision_module("0006_vote_by_anchors.py")._VOTE_SQL, _REWRITES)


def upgrade() -> None:
    for statement in (_TRACK_LOG_P_SQL, _TRACKS_NULL_SCORE_SQL, match_tracks_sql()):
        op.execute(statement)
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_match_tracks(text[], bigint[], integer[], integer, boolean) IS
        'The vote of fpstore_match_anchors (count_anchors) or fpstore_match_zones, scored under the tracks null:'
        ' -log10 p of each track''s own Poisson evidence on a scale measured on the query''s other tracks.'
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_match_tracks(text[], bigint[], integer[], integer, boolean)")
    op.execute("DROP FUNCTION fpstore_tracks_null_score(double precision, double precision[])")
    op.execute("DROP FUNCTION fpstore_track_log_p(integer, bigint, bigint)")
