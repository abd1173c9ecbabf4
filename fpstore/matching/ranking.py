"""Ranking the stored tracks for a fingerprinted query: the vote in numpy over fetched postings, or in SQL.

For every query hash, the postings of the same hash in the same zone are fetched (one statement for all
zones: the query's distinct ``(zone, hash)`` keys, sorted, sent as two arrays); each posting votes for
the bin ``(track_id, t_anchor - t_query)``. A true match piles its votes into one bin (the excerpt's start
frame in the track); chance collisions spread theirs. Each track is scored by its fullest bin; tracks are
ranked by that score, and each candidate gets its chance score (:mod:`fpstore.matching.significance`),
which reads the voted tracks' lengths from the store.

The same vote is available in SQL as ``fpstore_match(zone_name, seed_hashes bigint[], t_query int[],
top_k)`` and ``fpstore_match_zones(zone_names text[], ...)`` (one zone per hash; migration 0002);
:func:`match_fingerprint` with ``method="sql"`` calls ``fpstore_match_tracks`` (migration 0009) under the
tracks null, else ``fpstore_match_anchors`` (migration 0006) for distinct anchors and
``fpstore_match_zones`` for pairs, and the tests check that both paths give the same ranking.

Conventions
-----------
- Times and offsets are STFT frames (``hop_length`` samples at ``sample_rate`` Hz) unless a name ends
  in ``_s``; ``offset_s = offset_frames * hop_length / sample_rate``.
- ``hashes`` are the seed's unsigned 32-bit values (``uint32``); the database stores the same bits as
  ``int4`` (:func:`fpstore.signal.hashing.hash_keys`).
- Ranking: votes descending, then track id ascending; a track's offset is the smallest offset among
  its fullest bins. The runner-up is the best *other* track.
- Zone ``"all"`` pools the votes of every zone into the same ``(track, offset)`` bins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.errors import ParameterError
from fpstore.matching.evidence import ALL_ZONES, DEFAULT_ZONE, Count, DecisionRule, Null
from fpstore.matching.results import Candidate, MatchResult
from fpstore.matching.significance import chance_scores, offset_bins, track_log_p, tracks_null_log10_p
from fpstore.matching.vote import (
    anchor_bins,
    counted_bins,
    pairs_by_hash,
    query_keys,
    tolerant_offsets,
    tolerant_times,
    vote_bins,
)
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.params import FingerprintParams
from fpstore.signal.variants import SpeedVariant

#: Where the vote is counted: in numpy over the fetched postings, or by the SQL functions.
Method = Literal["python", "sql"]


def fetch_postings(store: Catalogue, key_zones: np.ndarray, key_hashes: np.ndarray,
                   max_postings_per_key: int | None = None,
                   track_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored posting of the keys (from :func:`query_keys`), or only one track's, in one round trip.

    With ``max_postings_per_key``, each key's list is read up to one posting past the bound, and the
    keys whose list is longer are left out (:attr:`Evidence.max_postings_per_key`).

    Returns
    -------
    key_of_posting, track_ids, t_anchor_frames : np.ndarray [shape=(m,), dtype=int64]
        Index into the keys, track and anchor time (frames) of each posting found.
    """
    caps = None if max_postings_per_key is None else np.full(key_zones.size, max_postings_per_key + 1)
    found_zone, found_hash, track_ids, t_anchor = (
        store.lookup.postings(key_zones, key_hashes, caps) if track_id is None
        else store.lookup.track_postings(key_zones, key_hashes, track_id))
    keys = (key_zones.astype(np.int64) << 32) | key_hashes.view(np.uint32).astype(np.int64)
    found_keys = (found_zone << 32) | found_hash.astype(np.int32).view(np.uint32).astype(np.int64)
    if found_keys.size > 1 and (found_keys[1:] >= found_keys[:-1]).all():
        # In key order (one database answers so): each key's postings are a run, found by a search per key.
        key_of_posting = np.repeat(np.arange(keys.size), np.diff(np.searchsorted(found_keys, keys), append=found_keys.size))
    else:
        key_of_posting = np.searchsorted(keys, found_keys)
    if max_postings_per_key is not None:  # (a cluster's shards each send up to the cap: still more than the bound)
        kept = np.bincount(key_of_posting, minlength=keys.size)[key_of_posting] <= max_postings_per_key
        return key_of_posting[kept], track_ids[kept], t_anchor[kept]
    return key_of_posting, track_ids, t_anchor


def match_fingerprint(
    store: Catalogue,
    fingerprint: Fingerprint | Sequence[SpeedVariant],
    params: FingerprintParams,
    *,
    zone: str = DEFAULT_ZONE,
    top_k: int = 5,
    rule: DecisionRule = DecisionRule(),
    method: Method = "python",
    query: str = "",
    count: Count = "anchors",
    tests: int = 1,
    tolerance: int = 0,
    max_postings_per_key: int | None = None,
    next_look: Callable[[], Sequence[SpeedVariant]] | None = None,
) -> MatchResult:
    """Rank the stored tracks for one fingerprinted query (or its variants: the best speed's answer).

    With variants, every variant's keys go to the database in one statement (distinct keys, so a key
    shared by shifts, zones and speeds is fetched once); each speed votes alone, its shifts pooled into
    the same ``(track, offset)`` bins, and the speed whose best candidate scores highest answers.

    Parameters
    ----------
    store : Catalogue
    fingerprint : Fingerprint or sequence of SpeedVariant
        Of the query, computed with ``params`` (the database's, :meth:`Store.params`); variants from
        :func:`fpstore.signal.variants.speed_variant`.
    params : FingerprintParams
    zone : str
        A zone name, or ``"all"`` to pool every zone's votes.
    top_k : int
        Candidates listed (at least 1). The confidence and the rule always weigh the runner-up, so
        ``top_k=1`` shortens the listing without changing the answer.
    rule : DecisionRule
    method : {"python", "sql"}
        Vote in numpy over the fetched postings, or call the SQL function ``fpstore_match_zones``
        (``fpstore_match_anchors`` for anchors), once per variant with its shifts' hashes concatenated.
    query : str
        Label carried into the result.
    count : {"pairs", "anchors"}
        What a bin counts (:class:`Evidence`).
    tests : int
        Tests the caller makes in all (:func:`match_prepared`'s steps and speed factors): each score
        is lowered by ``log10(tests)``, the union bound over them.
    tolerance : int
        Offset tolerance in frames (:attr:`Evidence.tolerance`).
    max_postings_per_key : int or None
        Leave out the keys with longer lists (:attr:`Evidence.max_postings_per_key`); Python vote only.
    next_look : callable or None
        The variants of the look likely to be taken after this one: with the Python vote (and every
        posting), they are made and their postings fetched in a thread while this look votes
        (:meth:`fpstore.db.lookup.Lookup.prefetch`). The answer is the same with or without.

    Returns
    -------
    result : MatchResult
        With ``speed`` the factor of the chosen variant (1.0 for a plain fingerprint).

    Raises
    ------
    ParameterError
        If ``zone`` is unknown, ``top_k < 1``, ``method`` or ``count`` is unknown, or
        ``max_postings_per_key`` is given with ``method="sql"``.
    """
    variants = [SpeedVariant(1.0, (fingerprint,))] if isinstance(fingerprint, Fingerprint) else list(fingerprint)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ParameterError(f"top_k={top_k!r} must be an integer >= 1")
    if method not in ("python", "sql"):
        raise ParameterError(f"method={method!r} must be 'python' or 'sql'")
    if count not in ("pairs", "anchors"):
        raise ParameterError(f"count={count!r} must be 'pairs' or 'anchors'")
    if method == "sql" and max_postings_per_key is not None:
        raise ParameterError("max_postings_per_key is for the Python vote: the SQL vote reads every posting")
    # The runner-up decides the confidence and the ratio rule: always rank it, list only top_k.
    ranked_k = max(top_k, 2)
    names = [z.name for z in params.zones] if zone == ALL_ZONES else [params.zone(zone).name]
    rankings = (_python_rankings(store, variants, names, ranked_k, count, rule.null, tolerance, max_postings_per_key,
                                 None if next_look is None or max_postings_per_key is not None
                                 else lambda: look_keys(store, next_look(), names))
                if method == "python"
                else [_sql_ranking(store, variant, names, ranked_k, count, rule.null, tolerance) for variant in variants])
    best: tuple[float, list[tuple[int, int, int, float]], int, float] | None = None
    for variant, (ranked, n_query_hashes) in zip(variants, rankings):
        # Every speed factor tried is a test: the union bound lowers each score by log10(tests).
        ranked = [(track, offset, votes, max(score - math.log10(tests), 0.0)) for track, offset, votes, score in ranked]
        top_score = ranked[0][3] if ranked else 0.0
        if best is None or top_score > best[0]:
            best = (top_score, ranked, n_query_hashes, variant.speed)
    assert best is not None, "match_fingerprint needs at least one variant"
    _, ranked, n_query_hashes, speed = best
    result = _result(store, params, ranked, zone=zone, n_query_hashes=n_query_hashes, rule=rule, method=method,
                     query=query)
    return dataclasses.replace(result, candidates=result.candidates[:top_k], speed=speed)


Ranking = tuple[list[tuple[int, int, int, float]], int]


def _look_hashes(store: Catalogue, variants: Sequence[SpeedVariant],
                 names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every query hash of a look (the variants' fingerprints' zones ``names``): hash, t_query, zone id, variant."""
    ids = store.zone_ids()
    parts = [(v, fp.zones[name], ids[name]) for v, variant in enumerate(variants)
             for fp in variant.fingerprints for name in names]
    hashes = np.concatenate([zh.hashes for _, zh, _ in parts] or [np.empty(0, np.uint32)])
    t_query = np.concatenate([zh.t_anchor_frames for _, zh, _ in parts] or [np.empty(0, np.int64)]).astype(np.int64)
    zone_of_hash = np.concatenate([np.full(zh.hashes.size, zone_id) for _, zh, zone_id in parts] or [np.empty(0)])
    variant_of_hash = np.concatenate([np.full(zh.hashes.size, v) for v, zh, _ in parts] or [np.empty(0, np.int64)])
    return hashes, t_query, zone_of_hash, variant_of_hash


def look_keys(store: Catalogue, variants: Sequence[SpeedVariant], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``(zone, hash)`` keys a look of these variants looks up (as :func:`match_fingerprint` sends them)."""
    hashes, _, zone_of_hash, _ = _look_hashes(store, variants, names)
    key_zones, key_hashes, _ = query_keys(zone_of_hash, hashes)
    return key_zones, key_hashes


def _python_rankings(store: Catalogue, variants: Sequence[SpeedVariant], names: list[str], ranked_k: int,
                     count: Count, null: Null, tolerance: int, max_postings_per_key: int | None,
                     next_keys: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> list[Ranking]:
    """Each variant's ranked ``(track, offset, votes, score)`` and hash count, from one posting lookup for all.

    ``next_keys``: the keys of the look likely to come next, fetched ahead once this look's postings are in.
    """
    hashes, t_query, zone_of_hash, variant_of_hash = _look_hashes(store, variants, names)
    n_query_hashes = np.bincount(variant_of_hash.astype(np.int64), minlength=len(variants))
    if hashes.size:
        # The keys and pairs of the hashes as they are; the offset tolerance repeats each pair's vote at
        # offsets + d afterwards (as if each hash were sent again at t - d, with no more keys or pairs to build).
        key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
        key_of_posting, track_ids, t_anchor = fetch_postings(store, key_zones, key_hashes, max_postings_per_key)
        if next_keys is not None:
            store.lookup.prefetch(next_keys)
        if key_of_posting.size > 1 and not (key_of_posting[1:] >= key_of_posting[:-1]).all():  # a cluster's shards
            in_key_order = np.argsort(key_of_posting, kind="stable")
            key_of_posting, track_ids, t_anchor = (key_of_posting[in_key_order], track_ids[in_key_order],
                                                   t_anchor[in_key_order])
        # Pairs in query hash order, so in variant order: each variant's pairs are a slice.
        posting, query_hash = pairs_by_hash(key_of_posting, key_of_hash, key_zones.size)
    else:
        track_ids = t_anchor = posting = query_hash = np.empty(0, np.int64)
    pair_bounds = np.searchsorted(query_hash, np.searchsorted(variant_of_hash, np.arange(len(variants) + 1)))
    rankings = []
    for v in range(len(variants)):
        pairs = slice(pair_bounds[v], pair_bounds[v + 1])
        pair_tracks = track_ids[posting[pairs]]
        pair_t_anchor = t_anchor[posting[pairs]]
        pair_offsets = pair_t_anchor - t_query[query_hash[pairs]]
        voted_times = tolerant_times(t_query[variant_of_hash == v], tolerance)[1]
        bins = (anchor_bins(pair_tracks, pair_t_anchor, pair_offsets, tolerance=tolerance) if count == "anchors"
                else counted_bins(*tolerant_offsets(pair_tracks, pair_offsets, tolerance)))
        if null == "tracks":
            ranked_tracks, ranked_votes, ranked_offsets, scores = tracks_null_vote(store, *bins, voted_times,
                                                                                   ranked_k)
        else:
            ranked_tracks, ranked_votes, ranked_offsets, _ = vote_bins(*bins, top_k=ranked_k)
            every_pair_track = tolerant_offsets(pair_tracks, pair_offsets, tolerance)[0]
            scores = chance_of_votes(store, ranked_votes, every_pair_track, voted_times)
        rankings.append((list(zip(ranked_tracks.tolist(), ranked_offsets.tolist(), ranked_votes.tolist(),
                                  scores.tolist())), int(n_query_hashes[v])))
    return rankings


def _sql_ranking(store: Catalogue, variant: SpeedVariant, names: list[str], ranked_k: int, count: Count,
                 null: Null, tolerance: int) -> Ranking:
    """One variant's ranking from the SQL vote: its shifts' hashes concatenated (they share the frame numbering)."""
    zones = [zh for fp in variant.fingerprints for zh in (fp.zones[name] for name in names)]
    hashes = np.concatenate([zh.hashes for zh in zones])
    per_hash_zone = np.array([name for fp in variant.fingerprints for name in names
                              for _ in range(fp.zones[name].hashes.size)], dtype=object)
    again, t_query = tolerant_times(np.concatenate([zh.t_anchor_frames for zh in zones]), tolerance)
    return (store.lookup.sql_vote(per_hash_zone[again].tolist(), hashes[again], t_query, top_k=ranked_k, count=count,
                                  null=null), int(hashes.size))


def tracks_null_vote(store: Catalogue, bin_tracks: np.ndarray, bin_offsets: np.ndarray, counts: np.ndarray,
                     t_query: np.ndarray, ranked_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vote's ranked ``ranked_k`` tracks and their scores under the tracks null.

    Every voted track is ranked (the null measures its scale on them, :func:`fpstore.matching.significance.
    tracks_null_log10_p`); a track's own chance probability (:func:`fpstore.matching.significance.track_log_p`)
    takes its mean per bin from the votes it counted over all its bins. Only the tracks with two votes
    or more can have evidence (one vote is ``p = 1``), so only their frame counts are read.

    Parameters
    ----------
    store : Catalogue
    bin_tracks, bin_offsets, counts : np.ndarray [shape=(b,)], int64
        The bins that got a vote, sorted by track then offset, and the votes counted in each (pairs, or
        distinct anchors: :func:`fpstore.matching.vote.counted_bins`, :func:`fpstore.matching.vote.anchor_bins`).
    t_query : np.ndarray [shape=(n,)], integer, in frames
        Anchor frame of every query hash that voted.
    ranked_k : int

    Returns
    -------
    track_ids, votes, offsets_frames : np.ndarray [shape=(k,), dtype=int64]
        As :func:`fpstore.matching.vote.vote` ranks them, ``k <= ranked_k``.
    scores : np.ndarray [shape=(k,), dtype=float64]
    """
    every_track, every_votes, every_offset, every_total = vote_bins(bin_tracks, bin_offsets, counts,
                                                                    top_k=max(int(bin_tracks.size), 1))
    log_p = np.zeros(every_track.size)
    several = np.flatnonzero(every_votes >= 2)
    if several.size:
        frames = store.lookup.track_frames(every_track[several])
        log_p[several] = track_log_p(every_votes[several], every_total[several], offset_bins(frames, t_query))
    k = min(ranked_k, every_track.size)
    scores = 0.0 - tracks_null_log10_p(log_p[:k], log_p)  # 0.0 - x: no -0.0 scores
    return every_track[:k], every_votes[:k], every_offset[:k], scores


def chance_of_votes(store: Catalogue, votes: np.ndarray, track_ids: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """The chance score ``-log10 p`` of each of the ranked ``votes``, given every vote pair the query fetched.

    Only the tracks with at least ``votes.min()`` pairs can fill a bin that full, so only their
    frame counts are read (:func:`fpstore.matching.significance.chance_scores` does the arithmetic).

    Parameters
    ----------
    store : Catalogue
    votes : np.ndarray [shape=(c,)], integer
        Fullest-bin counts of the ranked candidates.
    track_ids : np.ndarray [shape=(p,)], integer
        Track of every (posting, query hash) pair: with ``count="anchors"`` too, where the votes are
        distinct anchors, so the mean per bin is that of the pairs, at least that of the anchors, and
        the score a lower bound of the anchors' own.
    t_query : np.ndarray [shape=(n,)], integer, in frames
        Anchor frame of every query hash that voted.

    Returns
    -------
    scores : np.ndarray [shape=(c,), dtype=float64]
    """
    if votes.size == 0:
        return np.zeros(0)
    pairs = np.bincount(np.asarray(track_ids, dtype=np.int64))
    tested = np.flatnonzero(pairs >= votes.min())
    frames = store.lookup.track_frames(tested)
    return chance_scores(votes, pairs[tested], offset_bins(frames, t_query))


def _result(store: Catalogue, params: FingerprintParams, ranked: list[tuple[int, int, int, float]], *, zone: str,
            n_query_hashes: int, rule: DecisionRule, method: str, query: str) -> MatchResult:
    names = store.tracks.names([track_id for track_id, _, _, _ in ranked])
    candidates = [
        Candidate(track_id, names.get(track_id, ""), votes, offset, offset * params.seconds_per_frame, round(score, 4))
        for track_id, offset, votes, score in ranked
    ]
    best_votes = candidates[0].votes if candidates else 0
    runner_votes = candidates[1].votes if len(candidates) > 1 else 0
    confidence = 1.0 - runner_votes / best_votes if best_votes else 0.0
    accepted = (candidates[0] if candidates and rule.accepts(best_votes, runner_votes, candidates[0].score)
                else None)
    return MatchResult(query, zone, candidates, n_query_hashes, accepted, confidence, method)
