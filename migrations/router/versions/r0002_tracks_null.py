"""A cluster's router scores under the tracks null too: fpstore_match_tracks.

Revision ID: r0002
Revises: r0001
Create Date: 2026-12-04

Every shard runs ``fpstore_tracks_null_parts`` (shard revision 0010) over its own, whole tracks; the
router merges the shards' top ``top_k`` (which hold the catalogue's) and scores each candidate with
``fpstore_tracks_null_score`` (0009's text) over the shards' 31 largest evidences concatenated, which
hold the catalogue's 31 largest: the single database's answer. ``fpstore_track_log_p`` is here too.
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None

_ON_EVERY_SHARD = f"""
        CREATE FUNCTION fpstore_shard_tracks_null_parts(zone_names text[], seed_hashes bigint[], t_query integer[],
                                                        top_k integer, count_anchors boolean)
        RETURNS TABLE ({revision_module("0010_tracks_null_parts.py").PARTS_COLUMNS})
        LANGUAGE plproxy AS $$ CLUSTER 'fpstore'; RUN ON ALL; TARGET fpstore_tracks_null_parts; $$;
        """

_MERGED_VOTE = """
        CREATE FUNCTION fpstore_match_tracks(zone_names text[], seed_hashes bigint[], t_query integer[],
                                             top_k integer DEFAULT 5, count_anchors boolean DEFAULT true)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE sql STABLE
        AS $$
            WITH parts AS (
                SELECT * FROM fpstore_shard_tracks_null_parts(zone_names, seed_hashes, t_query, top_k, count_anchors)
            ), model AS (
                SELECT coalesce(array_agg(m.log_p), '{}') AS all_log_p
                FROM parts, unnest(parts.best_log_p) AS m(log_p)
            ), ranked AS (
                SELECT c.track_id, c.offset_frames, c.votes, c.log_p
                FROM parts, unnest(parts.top_tracks, parts.top_offsets, parts.top_votes, parts.top_log_p)
                    AS c(track_id, offset_frames, votes, log_p)
                ORDER BY c.votes DESC, c.track_id
                LIMIT top_k
            )
            SELECT r.track_id, r.offset_frames, r.votes, fpstore_tracks_null_score(r.log_p, model.all_log_p)
            FROM ranked r CROSS JOIN model
            ORDER BY r.votes DESC, r.track_id
        $$;
        """


def upgrade() -> None:
    tracks_null = revision_module("0009_tracks_null.py")
    for statement in (_ON_EVERY_SHARD, tracks_null._TRACK_LOG_P_SQL, tracks_null._TRACKS_NULL_SCORE_SQL, _MERGED_VOTE):
        op.execute(statement)


def downgrade() -> None:
    for signature in ("fpstore_match_tracks(text[], bigint[], integer[], integer, boolean)",
                      "fpstore_tracks_null_score(double precision, double precision[])",
                      "fpstore_track_log_p(integer, bigint, bigint)",
                      "fpstore_shard_tracks_null_parts(text[], bigint[], integer[], integer, boolean)"):
        op.execute(f"DROP FUNCTION {signature}")
