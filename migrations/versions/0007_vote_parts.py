"""The vote in parts, for a cluster's router (fpstore_vote_parts), and fpstore_tracks(ids).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A shard of a cluster (docs/cluster.md) votes over its own tracks, which are
whole; the router merges the shards' top ``top_k`` and scores them. The chance score of a candidate
sums over every track of the catalogue that received enough vote pairs, so the router needs each
shard's chance model too, not only its scores. ``fpstore_vote_parts`` is ``fpstore_vote`` (0006, same
text) returning one row: the ranked top ``top_k`` as three parallel arrays, and the model (each
track's vote pairs and offset bins) as two. A single database never calls it.

``fpstore_tracks(track_ids)`` gives ``(id, file_name)`` of tracks: the same call names the tracks of
a match on one database and on a router (which has no ``tracks`` table).
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module, rewritten

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PARTS_COLUMNS = ("top_tracks integer[], top_offsets integer[], top_votes integer[], "
                  "model_pairs bigint[], model_bins bigint[]")

#: 0006's vote, and what in its text becomes the parts (each piece occurs once there).
_REWRITES = (
    ("CREATE FUNCTION fpstore_vote(", "CREATE FUNCTION fpstore_vote_parts("),
    ("RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)",
     f"RETURNS TABLE ({_PARTS_COLUMNS})"),
    ("""SELECT ranked.track_id, ranked.offset_frames, ranked.votes,
                       fpstore_chance_score(ranked.votes, track_pairs, track_bins)
                FROM ranked
                ORDER BY ranked.votes DESC, ranked.track_id;""",
     """SELECT coalesce(array_agg(ranked.track_id ORDER BY ranked.votes DESC, ranked.track_id), '{}'),
                       coalesce(array_agg(ranked.offset_frames ORDER BY ranked.votes DESC, ranked.track_id), '{}'),
                       coalesce(array_agg(ranked.votes ORDER BY ranked.votes DESC, ranked.track_id), '{}'),
                       coalesce(track_pairs, '{}'), coalesce(track_bins, '{}')
                FROM ranked;"""),
)


def vote_parts_sql() -> str:
    """``CREATE FUNCTION fpstore_vote_parts``: 0006's vote text with :data:`_REWRITES` applied."""
    return rewritten(revision_module("0006_vote_by_anchors.py")._VOTE_SQL, _REWRITES)


_TRACKS_SQL = """
        CREATE FUNCTION fpstore_tracks(track_ids integer[]) RETURNS TABLE (id integer, file_name text)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT t.id, t.file_name FROM tracks t WHERE t.id = ANY(track_ids) $$
        """


def upgrade() -> None:
    op.execute(vote_parts_sql())
    op.execute(_TRACKS_SQL)
    op.execute(
        """
        COMMENT ON FUNCTION fpstore_vote_parts(text[], bigint[], integer[], integer, boolean) IS
        'fpstore_vote as parts for a cluster router: the ranked top_k (tracks, offsets, votes) and the chance'
        ' model (vote pairs and offset bins of every track that got a pair).'
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION fpstore_tracks(integer[])")
    op.execute("DROP FUNCTION fpstore_vote_parts(text[], bigint[], integer[], integer, boolean)")
