"""The tracks null in parts, for a cluster's router (fpstore_tracks_null_parts).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

A shard votes over its own tracks, which are whole, so each track's evidence (``fpstore_track_log_p``)
is the shard's to compute; the null of a candidate (``fpstore_tracks_null_score``) reads only the 31
largest evidences of the catalogue's voted tracks, which are among the shards' own 31 largest. So
``fpstore_tracks_null_parts`` is ``fpstore_match_tracks`` (0009, same text) returning one row: the ranked
top ``top_k`` with their ``ln p`` as four parallel arrays, and the smallest 31 ``ln p`` of every voted
track. The router merges them into the single database's answer (router revision r0002). A single
database never calls it.
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module, rewritten

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TRACKS_NULL = revision_module("0009_tracks_null.py")

PARTS_COLUMNS = ("top_tracks integer[], top_offsets integer[], top_votes integer[], top_log_p double precision[], "
                 "best_log_p double precision[]")

#: 0009's function, and what in its text becomes the parts (each piece occurs once there).
_REWRITES = (
    ("""CREATE FUNCTION fpstore_match_tracks(zone_names text[], seed_hashes bigint[], t_query integer[],
                                             top_k integer DEFAULT 5, count_anchors boolean DEFAULT true)""",
     """CREATE FUNCTION fpstore_tracks_null_parts(zone_names text[], seed_hashes bigint[], t_query integer[],
                                                  top_k integer, count_anchors boolean)"""),
    ("RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)",
     f"RETURNS TABLE ({PARTS_COLUMNS})"),
    ("""                SELECT ranked.track_id, ranked.offset_frames, ranked.votes,
                       fpstore_tracks_null_score(evidence.log_p, model.all_log_p)
                FROM ranked JOIN evidence ON evidence.track_id = ranked.track_id CROSS JOIN model
                ORDER BY ranked.votes DESC, ranked.track_id;""",
     f"""                SELECT coalesce(array_agg(ranked.track_id ORDER BY ranked.votes DESC, ranked.track_id), '{{}}'),
                       coalesce(array_agg(ranked.offset_frames ORDER BY ranked.votes DESC, ranked.track_id), '{{}}'),
                       coalesce(array_agg(ranked.votes ORDER BY ranked.votes DESC, ranked.track_id), '{{}}'),
                       coalesce(array_agg(evidence.log_p ORDER BY ranked.votes DESC, ranked.track_id), '{{}}'),
                       (SELECT coalesce(array_agg(e.log_p), '{{}}') FROM (SELECT evidence.log_p FROM evidence
                        ORDER BY evidence.log_p LIMIT {_TRACKS_NULL.TRACKS_NULL_DEPTH + 1}) AS e)
                FROM ranked JOIN evidence ON evidence.track_id = ranked.track_id;"""),
)


def tracks_null_parts_sql() -> str:
    """``CREATE FUNCTION fpstore_tracks_null_parts``: 0009's function text with :data:`_REWRITES` applied."""
    return rewritten(_TRACKS_NULL.match_tracks_sql(), _REWRITES)


def upgrade() -> None:
    op.execute(tracks_null_parts_sql())
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_tracks_null_parts(text[], bigint[], integer[], integer, boolean) IS
        'fpstore_match_tracks as parts for a cluster router: the ranked top_k (tracks, offsets, votes, ln p) and'
        ' the 31 smallest ln p of the voted tracks.'
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_tracks_null_parts(text[], bigint[], integer[], integer, boolean)")
