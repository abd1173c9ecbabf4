"""A cluster's router: the shards, PL/Proxy's cluster ``fpstore``, and matching through it.

Revision ID: r0001
Revises:
Create Date: 2026-12-03

``cluster_shards`` lists the shards (``fpstore cluster init`` fills it); PL/Proxy reads it through
``plproxy.get_cluster_partitions`` (the configuration-by-functions interface), and re-reads it when
``cluster_version_seq`` moves. Shard ``k`` holds the tracks whose content digest picks ``k`` and the
track ids ``id % n_shards == k``.

The matching team's functions keep their single-database signatures and answers:
``fpstore_match``, ``fpstore_match_zones``, ``fpstore_match_anchors`` (every shard votes over its own,
whole tracks with ``fpstore_vote_parts``; the router merges their top ``top_k`` and scores them with
the whole catalogue's chance model), ``fpstore_postings`` (every shard's postings of the keys),
``fpstore_hash_key``, ``fpstore_hash_value``, ``fpstore_chance_score``, and ``fpstore_tracks(ids)``
for the file names of tracks.
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

_CLUSTER = """
        CREATE TABLE cluster_shards (
            shard_index smallint PRIMARY KEY CHECK (shard_index >= 0),
            url text NOT NULL,
            conninfo text NOT NULL
        );
        COMMENT ON TABLE cluster_shards IS 'The shards of this router: an SQLAlchemy URL for fpstore, a libpq'
            ' conninfo for PL/Proxy (both may hold a password: readable by its owner only).';
        REVOKE ALL ON cluster_shards FROM PUBLIC;
        CREATE SEQUENCE cluster_version_seq;
        CREATE SCHEMA plproxy;
        CREATE FUNCTION plproxy.get_cluster_partitions(cluster_name text) RETURNS SETOF text
        LANGUAGE sql SECURITY DEFINER SET search_path = public
        AS $$ SELECT conninfo FROM cluster_shards WHERE cluster_name = 'fpstore' ORDER BY shard_index $$;
        CREATE FUNCTION plproxy.get_cluster_version(cluster_name text) RETURNS integer
        LANGUAGE sql SECURITY DEFINER SET search_path = public
        AS $$ SELECT last_value::integer FROM cluster_version_seq $$;
        CREATE FUNCTION plproxy.get_cluster_config(IN cluster_name text, OUT key text, OUT val text)
        RETURNS SETOF record
        LANGUAGE sql AS $$ SELECT 'connection_lifetime'::text, '1800'::text $$;
        """

#: The shards' vote in parts, postings and track names (migrations 0004 and 0007).
_ON_EVERY_SHARD = """
        CREATE FUNCTION fpstore_shard_vote_parts(zone_names text[], seed_hashes bigint[], t_query integer[],
                                                 top_k integer, count_anchors boolean)
        RETURNS TABLE (top_tracks integer[], top_offsets integer[], top_votes integer[],
                       model_pairs bigint[], model_bins bigint[])
        LANGUAGE plproxy AS $$ CLUSTER 'fpstore'; RUN ON ALL; TARGET fpstore_vote_parts; $$;
        CREATE FUNCTION fpstore_postings(zone_id smallint, stored_hashes integer[])
        RETURNS TABLE (hash integer, track_id integer, t_anchor integer)
        LANGUAGE plproxy AS $$ CLUSTER 'fpstore'; RUN ON ALL; $$;
        CREATE FUNCTION fpstore_tracks(track_ids integer[]) RETURNS TABLE (id integer, file_name text)
        LANGUAGE plproxy AS $$ CLUSTER 'fpstore'; RUN ON ALL; $$;
        """

# The union of the shards' top top_k holds the catalogue's top top_k (a shard's tracks are whole); the
# chance model is each track's own numbers, so the shards' models concatenated are the catalogue's.
_MERGED_VOTE = """
        CREATE FUNCTION fpstore_vote(zone_names text[], seed_hashes bigint[], t_query integer[], top_k integer,
                                     count_anchors boolean)
        RETURNS TABLE (track_id integer, offset_frames integer, votes integer, score double precision)
        LANGUAGE sql STABLE
        AS $$
            WITH parts AS (
                SELECT * FROM fpstore_shard_vote_parts(zone_names, seed_hashes, t_query, top_k, count_anchors)
            ), model AS (
                SELECT coalesce(array_agg(m.pairs), '{}') AS pairs, coalesce(array_agg(m.bins), '{}') AS bins
                FROM parts, unnest(parts.model_pairs, parts.model_bins) AS m(pairs, bins)
            ), ranked AS (
                SELECT c.track_id, c.offset_frames, c.votes
                FROM parts, unnest(parts.top_tracks, parts.top_offsets, parts.top_votes) AS c(track_id, offset_frames, votes)
                ORDER BY c.votes DESC, c.track_id
                LIMIT top_k
            )
            SELECT r.track_id, r.offset_frames, r.votes, fpstore_chance_score(r.votes, model.pairs, model.bins)
            FROM ranked r CROSS JOIN model
            ORDER BY r.votes DESC, r.track_id
        $$;
        """


def upgrade() -> None:
    initial = revision_module("0001_initial.py")
    chance = revision_module("0005_chance_score.py")
    by_anchors = revision_module("0006_vote_by_anchors.py")
    op.execute("CREATE EXTENSION IF NOT EXISTS plproxy")
    for statement in (_CLUSTER, _ON_EVERY_SHARD, initial.HASH_KEY_SQL, initial.HASH_VALUE_SQL,
                      chance._CHANCE_SCORE_SQL, _MERGED_VOTE, by_anchors._vote_call("fpstore_match_zones", False),
                      by_anchors._vote_call("fpstore_match_anchors", True), chance._MATCH_SQL):
        op.execute(statement)


def downgrade() -> None:
    for signature in ("fpstore_match(text, bigint[], integer[], integer)",
                      "fpstore_match_anchors(text[], bigint[], integer[], integer)",
                      "fpstore_match_zones(text[], bigint[], integer[], integer)",
                      "fpstore_vote(text[], bigint[], integer[], integer, boolean)",
                      "fpstore_chance_score(integer, bigint[], bigint[])",
                      "fpstore_hash_value(integer)", "fpstore_hash_key(bigint)",
                      "fpstore_tracks(integer[])", "fpstore_postings(smallint, integer[])",
                      "fpstore_shard_vote_parts(text[], bigint[], integer[], integer, boolean)"):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("DROP SCHEMA plproxy CASCADE")
    op.execute("DROP SEQUENCE cluster_version_seq")
    op.execute("DROP TABLE cluster_shards")
    op.execute("DROP EXTENSION IF EXISTS plproxy")
