"""Matching: a query's hashes → the stored track and where in it the query starts (offset-histogram vote).

For every query hash, the postings of the same hash in the same zone are fetched (one statement for all
zones: the query's distinct ``(zone, hash)`` keys, sorted, sent as two arrays); each posting votes for
the bin ``(track_id, t_anchor - t_query)``.
A true match piles its votes into one bin (the excerpt's start frame in the track); chance collisions
spread theirs. Each track is scored by its fullest bin; tracks are ranked by that score.

The same vote is available in SQL as ``fpstore_match(zone_name, seed_hashes bigint[], t_query int[],
top_k)`` and ``fpstore_match_zones(zone_names text[], ...)`` (one zone per hash; migration 0002);
:func:`match_fingerprint` with ``method="sql"`` calls ``fpstore_match_tracks`` (migration 0009) under the
tracks null, else ``fpstore_match_anchors`` (migration 0006) for distinct anchors and
``fpstore_match_zones`` for pairs, and the tests check that both paths give the same ranking.

:class:`Evidence` says how much a query gives: distinct anchors instead of pairs, sub-hop shifts pooled
into the same bins, speed factors tried when the query as it is names nothing (the vote on arrays is
:mod:`fpstore.vote`, the shifted and resampled fingerprints :mod:`fpstore.signal.variants`). By default
(:data:`ROBUST`, ``DecisionRule()``) a bin counts distinct anchors, the other looks are taken lazily,
and the best track is named when its chance probability under the tracks null is below
:data:`DEFAULT_ALPHA`; :data:`PLAIN` is the notebook's vote.

Conventions
-----------
- Times and offsets are STFT frames (``hop_length`` samples at ``sample_rate`` Hz) unless a name ends
  in ``_s``; ``offset_s = offset_frames * hop_length / sample_rate``.
- ``hashes`` are the seed's unsigned 32-bit values (``uint32``); the database stores the same bits as
  ``int4`` (:func:`fpstore.signal.hashing.hash_keys`).
- Ranking: votes descending, then track id ascending; a track's offset is the smallest offset among
  its fullest bins. The runner-up is the best *other* track.
- Zone ``"all"`` pools the votes of every zone into the same ``(track, offset)`` bins.
- Query files (:func:`match_queries`) are found and checked as ingest finds and checks its files; one
  that cannot be matched gives a result whose ``error`` is its one-line reason, and the rest go on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from fpstore.db.store import Store
from fpstore.errors import AudioError, NotFound, ParameterError
from fpstore.files import discover_audio_files, one_line, unreadable_reason
from fpstore.signal.audio import display_path
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import QueryPicking
from fpstore.signal.variants import SpeedVariant, check_variants, speed_variant
from fpstore.significance import chance_scores, offset_bins, track_log_p, tracks_null_log10_p
from fpstore.vote import distinct_anchor_votes, pair_indices, query_keys, tolerant_times, vote
from fpstore.workers import fingerprint_job, no_hashes_reason, signal_job

#: Zone name meaning "pool the votes of every zone".
ALL_ZONES = "all"

#: The vote-count thresholds measured for the notebook's vote (pairs, ``DecisionRule(min_votes=...)``;
#: benchmarks/results/2026-11-24-recognition-dev.md). On the 12-track corpus, with every zone pooled,
#: true excerpts got >= 52 aligned votes and not-in-database ones <= 23; in zone Fsmall_Tlong >= 20
#: against <= 10. In the 10,000-track benchmark negatives reached 31 pooled and 13 in Fsmall_Tlong, so
#: the thresholds sit above those.
PLAIN_MIN_VOTES_ALL_ZONES = 40
PLAIN_MIN_VOTES_ONE_ZONE = 15
#: The ratio to the runner-up did not separate the classes (a true excerpt at 1.25, a negative at 4.0),
#: so it is off (1.0) by default.
DEFAULT_MIN_RATIO = 1.0
#: False-alarm rate of the default rule, the calibrated one, fixed before any measurement: one query in
#: a thousand that is not in the database may be named, whatever its length and the catalogue's size
#: (score ``-log10 p > 3``).
DEFAULT_ALPHA = 1e-3
#: Zone used when none is named: alone it separated true and false matches best (20 vs 10 votes) and
#: costs a quarter of pooling all four zones (one index scan instead of four).
DEFAULT_ZONE = "Fsmall_Tlong"

#: The query argument that means "the audio on standard input" (when a ``stdin`` stream is given).
STDIN_ARGUMENT = "-"
#: How standard input is named in results and failure reasons.
STDIN_LABEL = "<stdin>"

Method = Literal["python", "sql"]
#: What a vote counts in a ``(track, offset)`` bin: every (posting, query hash) pair, or distinct stored anchors.
Count = Literal["pairs", "anchors"]
#: The chance model behind a candidate's score: the closed-form Poisson bound, or one whose scale each query
#: measures on its other voted tracks (:mod:`fpstore.significance`).
Null = Literal["poisson", "tracks"]
#: Widest offset tolerance (frames) :class:`Evidence` accepts.
MAX_TOLERANCE_FRAMES = 3
#: The speeds step looks at a speed with every shift only when, unshifted, its best track scored at least
#: this (``-log10 p`` after the union bound over the evidence's tests; the rule names a track above 3).
SCREEN_SCORE = 0.5


@dataclass(frozen=True)
class Evidence:
    """What each query contributes to the vote (docs/matching.md; measured in benchmarks/results/).

    Attributes
    ----------
    count : {"pairs", "anchors"}
        ``"pairs"``: a bin counts every (stored posting, query hash) pair that falls in it.
        ``"anchors"``: it counts distinct stored anchor peaks, so that one anchor's five targets, the
        shifts and the zones that see the same anchor, add one vote, not several (the chance score then
        takes its mean from the pairs, an upper bound: see :func:`chance_of_votes`).
    shifts : int
        Fingerprint the query at this many sub-hop shifts (0, 1/n, ... of the hop) and pool their
        votes, when the query as it is names nothing (one more test); needs the query's audio.
    speeds : tuple of float
        Speed factors to try besides 1.0 (e.g. 0.98 for a query played 2 % slower). 1.0 is tried first
        and the others only when it gives no match; the best by score is kept, every factor counted
        as a test. Stored as given, with 1.0 first.
    tolerance : int
        Frames: after the first look, a vote counts in every bin within this many frames of its own
        offset (the query's hashes sent again at ``t - d`` for ``|d| <= tolerance``; with anchors, a
        stored anchor still counts once per bin), for queries whose peaks moved (reverberation).
    picks : tuple of QueryPicking
        Extra peak selections of the query (:mod:`fpstore.signal.query_peaks`: denser peaks, more
        targets per anchor, a whitened spectrogram) pooled, at every shift, into the look at speed 1.0
        after the first, for queries whose peaks noise outranked.
    pool_speeds : bool
        The other speed factors pooled into one look, one test (each stored anchor counted once per
        bin, as the shifts are), instead of a look and a test each; the factor reported is then the
        one whose own look scores best, looked up once more only when the pooled look names a track.
    merge_first : bool
        The look at the query as it is and the pooled look at speed 1.0 count as one test (the pooled
        look holds every hash of the first, so the first is taken as an early answer of the pooled
        one), instead of one test each.
    """

    count: Count = "pairs"
    shifts: int = 1
    speeds: tuple[float, ...] = (1.0,)
    tolerance: int = 0
    picks: tuple[QueryPicking, ...] = ()
    pool_speeds: bool = False
    merge_first: bool = False

    def __post_init__(self) -> None:
        if self.count not in ("pairs", "anchors"):
            raise ParameterError(f"count={self.count!r} must be 'pairs' or 'anchors'")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int) or not (
                0 <= self.tolerance <= MAX_TOLERANCE_FRAMES):
            raise ParameterError(f"tolerance={self.tolerance!r} must be an integer in [0, {MAX_TOLERANCE_FRAMES}]")
        object.__setattr__(self, "speeds", check_variants(self.shifts, self.speeds))
        if not isinstance(self.picks, tuple) or not all(isinstance(p, QueryPicking) for p in self.picks):
            raise ParameterError(f"picks={self.picks!r} must be a tuple of QueryPicking")

    @property
    def needs_audio(self) -> bool:
        """True if the query must be decoded to samples (shifts or speeds), not only fingerprinted."""
        return self.shifts > 1 or len(self.speeds) > 1 or bool(self.picks)

    @property
    def pools(self) -> bool:
        """True if a second look at speed 1.0 pools more evidence (shifts, peak selections, an offset tolerance)."""
        return self.shifts > 1 or self.tolerance > 0 or bool(self.picks)

    @property
    def tests(self) -> int:
        """Tests a query can make (:func:`match_prepared`): as it is, pooled, then the other speed factors."""
        other_speeds = len(self.speeds) - 1
        first = 0 if self.merge_first and self.pools else 1
        return first + int(self.pools) + (min(other_speeds, 1) if self.pool_speeds else other_speeds)


#: The notebook's vote: every pair of the query as it is.
PLAIN = Evidence()
#: The default: distinct anchors; when the query as it is names nothing, four sub-hop shifts with votes
#: tolerant to +-1 frame, then speeds of +-1, 2, 3 % (for short, noisy, reverberant and speed-changed
#: queries; an easy query pays one plain lookup).
ROBUST = Evidence("anchors", 4, (0.99, 1.01, 0.98, 1.02, 0.97, 1.03), tolerance=1)


def evidence_with(base: Evidence, *, speeds: str | None = None, **parts: Any) -> Evidence:
    """``base`` with the parts a command line or a request names changed (a part given as None is kept).

    Parameters
    ----------
    base : Evidence
        ROBUST, PLAIN or another starting point.
    speeds : str or None
        Comma-separated speed factors (``"0.98,1.02"``); None keeps ``base.speeds``.
    **parts
        Other :class:`Evidence` fields (``count``, ``shifts``, ``tolerance``, ...).

    Raises
    ------
    ValueError
        ``speeds`` is not a comma-separated list of numbers (each caller words it for its user).
    """
    factors = tuple(float(factor) for factor in speeds.split(",")) if speeds else None
    given = {**parts, "speeds": factors}
    return dataclasses.replace(base, **{name: value for name, value in given.items() if value is not None})


@dataclass(frozen=True)
class DecisionRule:
    """When the best candidate is credible enough to be named.

    Two kinds of rule: a count of aligned hashes (``min_votes``), or a false-alarm rate (``alpha``):
    the best bin is named when chance would fill a bin that full with probability below ``alpha``,
    corrected for every ``(track, offset)`` bin tested (:mod:`fpstore.significance`; its score is
    ``-log10 p``). Give one or neither; neither is the calibrated rule at :data:`DEFAULT_ALPHA` under the
    tracks null, the default (with :data:`ROBUST` evidence, the best measured: docs/matching.md).

    Attributes
    ----------
    min_votes : int or None
        The vote-count rule: the best track's fullest bin must hold at least this many aligned hashes
        (for the notebook's vote, :data:`PLAIN_MIN_VOTES_ONE_ZONE` and :data:`PLAIN_MIN_VOTES_ALL_ZONES`
        were measured). None: the calibrated rule.
    min_ratio : float
        ... and at least this many times the runner-up's (a missing runner-up counts as 1 vote).
        Applies to either kind.
    alpha : float or None
        In (0, 1): name the best candidate when its corrected chance probability is below it
        (score ``> -log10 alpha``); None (and no ``min_votes``): :data:`DEFAULT_ALPHA`.
    null : {"tracks", "poisson"}
        The chance model behind every candidate's score: ``"tracks"`` (the default), each track's own
        Poisson evidence on a scale the query measures on its other voted tracks
        (:func:`fpstore.significance.tracks_null_log10_p`; in SQL ``fpstore_match_tracks``);
        ``"poisson"``, the closed-form bound over every tested ``(track, offset)`` bin
        (:func:`fpstore.significance.chance_scores`).
    """

    min_votes: int | None = None
    min_ratio: float = DEFAULT_MIN_RATIO
    alpha: float | None = None
    null: Null = "tracks"

    def __post_init__(self) -> None:
        if self.min_votes is not None and (
            isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int) or self.min_votes < 1
        ):
            raise ParameterError(f"min_votes={self.min_votes!r} must be an integer >= 1, or None for the calibrated rule")
        if not isinstance(self.min_ratio, (int, float)) or not np.isfinite(self.min_ratio) or self.min_ratio < 1:
            raise ParameterError(f"min_ratio={self.min_ratio!r} must be a number >= 1")
        if self.alpha is not None and (
            isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1
        ):
            raise ParameterError(f"alpha={self.alpha!r} must be a number in (0, 1), or None")
        if self.null not in ("poisson", "tracks"):
            raise ParameterError(f"null={self.null!r} must be 'poisson' or 'tracks'")
        if self.alpha is not None and self.min_votes is not None:
            raise ParameterError(f"give min_votes={self.min_votes} or alpha={self.alpha}, not both")

    @property
    def calibrated(self) -> bool:
        """True if the rule is a false-alarm rate (``alpha``, given or by default), False if a vote count."""
        return self.min_votes is None

    def score_needed(self) -> float:
        """The score ``-log10 alpha`` a calibrated rule needs (``alpha`` or :data:`DEFAULT_ALPHA`)."""
        return -float(np.log10(self.alpha if self.alpha is not None else DEFAULT_ALPHA))

    def accepts(self, best_votes: int, runner_up_votes: int, score: float = 0.0) -> bool:
        """True if a best bin of ``best_votes`` votes and chance score ``score`` is a match against the runner-up."""
        credible = score > self.score_needed() if self.min_votes is None else best_votes >= self.min_votes
        return credible and best_votes >= self.min_ratio * max(runner_up_votes, 1)


@dataclass(frozen=True)
class Candidate:
    """One ranked track.

    Attributes
    ----------
    track_id : int
    file_name : str
    votes : int
        Aligned hashes in the track's fullest offset bin.
    offset_frames : int
        Where the query starts in the track, in frames.
    offset_s : float
        The same, in seconds.
    score : float
        ``-log10 p`` >= 0: ``p`` bounds the probability that chance fills some tested
        ``(track, offset)`` bin with ``votes`` pairs (:func:`fpstore.significance.chance_scores`),
        rounded to 4 decimals (the Python and the SQL vote then give the same number).
    """

    track_id: int
    file_name: str
    votes: int
    offset_frames: int
    offset_s: float
    score: float


@dataclass(frozen=True)
class MatchResult:
    """The answer for one query.

    Attributes
    ----------
    query : str
        File name or label of the query (``"<stdin>"`` for standard input).
    zone : str
        Zone that voted (or ``"all"``).
    candidates : list of Candidate
        Best first, at most ``top_k``.
    n_query_hashes : int
        Hashes the query sent.
    match : Candidate or None
        ``candidates[0]`` if the decision rule accepts it, else None ("no match").
    confidence : float
        ``1 - runner_up_votes / best_votes`` in [0, 1]; 0 when nothing matched. The runner-up counts
        even when ``top_k=1`` leaves it out of ``candidates``.
    method : str
        ``"python"`` or ``"sql"``.
    error : str or None
        Why the query could not be matched (one line naming the file, the reasons ingest gives); the
        result then has no candidates. None for every answered query.
    speed : float
        Speed factor the answer was found at (1.0 unless :class:`Evidence` tried others and one of
        them scored best): the query played that many times faster than the stored recording.
    """

    query: str
    zone: str
    candidates: list[Candidate]
    n_query_hashes: int
    match: Candidate | None
    confidence: float
    method: str = field(default="python")
    error: str | None = None
    speed: float = 1.0

    @property
    def best(self) -> Candidate | None:
        """Top candidate whether or not it was accepted."""
        return self.candidates[0] if self.candidates else None

    @property
    def score(self) -> float:
        """The top candidate's chance score ``-log10 p`` (0 without candidates)."""
        return self.candidates[0].score if self.candidates else 0.0

    @property
    def runner_up(self) -> Candidate | None:
        """Second-ranked track, if any was listed (``top_k >= 2``)."""
        return self.candidates[1] if len(self.candidates) > 1 else None

    @classmethod
    def failed(cls, query: str, zone: str, reason: str, method: str = "python") -> MatchResult:
        """The result of a query that could not be matched: no candidates, ``error=reason``."""
        return cls(query, zone, [], 0, None, 0.0, method, reason)

    def as_json(self) -> dict[str, Any]:
        """The answer as plain JSON values: what ``fpstore match --json`` prints and ``POST /v1/match`` returns.

        A failed query gives ``query``, ``zone`` and ``error`` only; an answered one ``query, zone,
        n_query_hashes, match`` (a :class:`Candidate` as a dict, or None for "no match"), ``score``,
        ``confidence`` (4 decimals), ``speed`` and ``candidates``.
        """
        if self.error is not None:
            return {"query": self.query, "zone": self.zone, "error": self.error}
        return {
            "query": self.query, "zone": self.zone, "n_query_hashes": self.n_query_hashes,
            "match": None if self.match is None else dataclasses.asdict(self.match),
            "score": self.score, "confidence": round(self.confidence, 4), "speed": self.speed,
            "candidates": [dataclasses.asdict(c) for c in self.candidates],
        }


def fetch_postings(store: Store, key_zones: np.ndarray,
                   key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored posting of the keys (from :func:`query_keys`), in one round trip.

    Returns
    -------
    key_of_posting, track_ids, t_anchor_frames : np.ndarray [shape=(m,), dtype=int64]
        Index into the keys, track and anchor time (frames) of each posting found.
    """
    found_zone, found_hash, track_ids, t_anchor = store.lookup.postings(key_zones, key_hashes)
    keys = (key_zones.astype(np.int64) << 32) | key_hashes.view(np.uint32).astype(np.int64)
    found_keys = (found_zone << 32) | found_hash.astype(np.int32).view(np.uint32).astype(np.int64)
    return np.searchsorted(keys, found_keys), track_ids, t_anchor


def match_fingerprint(
    store: Store,
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
) -> MatchResult:
    """Rank the stored tracks for one fingerprinted query (or its variants: the best speed's answer).

    With variants, every variant's keys go to the database in one statement (distinct keys, so a key
    shared by shifts, zones and speeds is fetched once); each speed votes alone, its shifts pooled into
    the same ``(track, offset)`` bins, and the speed whose best candidate scores highest answers.

    Parameters
    ----------
    store : Store
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

    Returns
    -------
    result : MatchResult
        With ``speed`` the factor of the chosen variant (1.0 for a plain fingerprint).

    Raises
    ------
    ParameterError
        If ``zone`` is unknown, ``top_k < 1``, ``method`` or ``count`` is unknown.
    """
    variants = [SpeedVariant(1.0, (fingerprint,))] if isinstance(fingerprint, Fingerprint) else list(fingerprint)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ParameterError(f"top_k={top_k!r} must be an integer >= 1")
    if method not in ("python", "sql"):
        raise ParameterError(f"method={method!r} must be 'python' or 'sql'")
    if count not in ("pairs", "anchors"):
        raise ParameterError(f"count={count!r} must be 'pairs' or 'anchors'")
    # The runner-up decides the confidence and the ratio rule: always rank it, list only top_k.
    ranked_k = max(top_k, 2)
    names = [z.name for z in params.zones] if zone == ALL_ZONES else [params.zone(zone).name]
    rankings = (_python_rankings(store, variants, names, ranked_k, count, rule.null, tolerance) if method == "python"
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


def _python_rankings(store: Store, variants: Sequence[SpeedVariant], names: list[str], ranked_k: int,
                     count: Count, null: Null, tolerance: int) -> list[Ranking]:
    """Each variant's ranked ``(track, offset, votes, score)`` and hash count, from one posting lookup for all."""
    ids = store.zone_ids()
    parts = [(v, fp.zones[name], ids[name]) for v, variant in enumerate(variants)
             for fp in variant.fingerprints for name in names]
    hashes = np.concatenate([zh.hashes for _, zh, _ in parts] or [np.empty(0, np.uint32)])
    t_query = np.concatenate([zh.t_anchor_frames for _, zh, _ in parts] or [np.empty(0, np.int64)]).astype(np.int64)
    zone_of_hash = np.concatenate([np.full(zh.hashes.size, zone_id) for _, zh, zone_id in parts] or [np.empty(0)])
    variant_of_hash = np.concatenate([np.full(zh.hashes.size, v) for v, zh, _ in parts] or [np.empty(0, np.int64)])
    n_query_hashes = np.bincount(variant_of_hash.astype(np.int64), minlength=len(variants))
    again, t_query = tolerant_times(t_query, tolerance)
    hashes, zone_of_hash, variant_of_hash = hashes[again], zone_of_hash[again], variant_of_hash[again]
    if hashes.size:
        key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
        key_of_posting, track_ids, t_anchor = fetch_postings(store, key_zones, key_hashes)
        posting, query_hash = pair_indices(key_of_posting, key_of_hash)
    else:
        track_ids = t_anchor = posting = query_hash = np.empty(0, np.int64)
    rankings = []
    for v in range(len(variants)):
        of_variant = variant_of_hash == v
        mine = of_variant[query_hash]
        pair_tracks = track_ids[posting[mine]]
        pair_t_anchor = t_anchor[posting[mine]]
        pair_offsets = pair_t_anchor - t_query[query_hash[mine]]
        if count == "anchors":
            vote_tracks, vote_offsets = distinct_anchor_votes(pair_tracks, pair_t_anchor, pair_offsets)
        else:
            vote_tracks, vote_offsets = pair_tracks, pair_offsets
        if null == "tracks":
            ranked_tracks, ranked_votes, ranked_offsets, scores = tracks_null_vote(
                store, vote_tracks, vote_offsets, t_query[of_variant], ranked_k)
        else:
            ranked_tracks, ranked_votes, ranked_offsets = vote(vote_tracks, vote_offsets, top_k=ranked_k)
            scores = chance_of_votes(store, ranked_votes, pair_tracks, t_query[of_variant])
        rankings.append((list(zip(ranked_tracks.tolist(), ranked_offsets.tolist(), ranked_votes.tolist(),
                                  scores.tolist())), int(n_query_hashes[v])))
    return rankings


def _sql_ranking(store: Store, variant: SpeedVariant, names: list[str], ranked_k: int, count: Count,
                 null: Null, tolerance: int) -> Ranking:
    """One variant's ranking from the SQL vote: its shifts' hashes concatenated (they share the frame numbering)."""
    zones = [zh for fp in variant.fingerprints for zh in (fp.zones[name] for name in names)]
    hashes = np.concatenate([zh.hashes for zh in zones])
    per_hash_zone = np.array([name for fp in variant.fingerprints for name in names
                              for _ in range(fp.zones[name].hashes.size)], dtype=object)
    again, t_query = tolerant_times(np.concatenate([zh.t_anchor_frames for zh in zones]), tolerance)
    return (store.lookup.sql_vote(per_hash_zone[again].tolist(), hashes[again], t_query, top_k=ranked_k, count=count,
                                  null=null), int(hashes.size))


def tracks_null_vote(store: Store, track_ids: np.ndarray, offsets_frames: np.ndarray, t_query: np.ndarray,
                     ranked_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vote's ranked ``ranked_k`` tracks and their scores under the tracks null.

    Every voted track is ranked (the null measures its scale on them, :func:`fpstore.significance.
    tracks_null_log10_p`); a track's own chance probability (:func:`fpstore.significance.track_log_p`)
    takes its mean per bin from the votes it counted over all its bins. Only the tracks with two votes
    or more can have evidence (one vote is ``p = 1``), so only their frame counts are read.

    Parameters
    ----------
    store : Store
    track_ids, offsets_frames : np.ndarray [shape=(p,)], integer
        The counted votes (pairs, or the pairs that first bring an anchor into a bin).
    t_query : np.ndarray [shape=(n,)], integer, in frames
        Anchor frame of every query hash that voted.
    ranked_k : int

    Returns
    -------
    track_ids, votes, offsets_frames : np.ndarray [shape=(k,), dtype=int64]
        As :func:`fpstore.vote.vote` ranks them, ``k <= ranked_k``.
    scores : np.ndarray [shape=(k,), dtype=float64]
    """
    every_track, every_votes, every_offset = vote(track_ids, offsets_frames, top_k=max(int(track_ids.size), 1))
    log_p = np.zeros(every_track.size)
    several = np.flatnonzero(every_votes >= 2)
    if several.size:
        counted = np.bincount(np.asarray(track_ids, dtype=np.int64))[every_track[several]]
        frames = store.lookup.track_frames(every_track[several])
        log_p[several] = track_log_p(every_votes[several], counted, offset_bins(frames, t_query))
    k = min(ranked_k, every_track.size)
    scores = 0.0 - tracks_null_log10_p(log_p[:k], log_p)  # 0.0 - x: no -0.0 scores
    return every_track[:k], every_votes[:k], every_offset[:k], scores


def chance_of_votes(store: Store, votes: np.ndarray, track_ids: np.ndarray, t_query: np.ndarray) -> np.ndarray:
    """The chance score ``-log10 p`` of each of the ranked ``votes``, given every vote pair the query fetched.

    Only the tracks with at least ``votes.min()`` pairs can fill a bin that full, so only their
    frame counts are read (:func:`fpstore.significance.chance_scores` does the arithmetic).

    Parameters
    ----------
    store : Store
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


def _result(store: Store, params: FingerprintParams, ranked: list[tuple[int, int, int, float]], *, zone: str,
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


def match_signal(store: Store, y: np.ndarray, *, evidence: Evidence = ROBUST, **options: object) -> MatchResult:
    """Fingerprint mono audio at the database's sample rate and match it (options of :func:`match_fingerprint`).

    Parameters
    ----------
    store : Store
    y : np.ndarray [shape=(n,)], float32, mono, at the database's ``sample_rate`` Hz
    evidence : Evidence
        Shifts and speeds to fingerprint ``y`` at, and what a vote counts.
    """
    params = store.params(duration_s=None)
    prepared = PreparedQuery(speed_variant(y, params, 1.0, 1), y if evidence.needs_audio else None)
    return match_prepared(store, prepared, params, evidence=evidence, **options)  # type: ignore[arg-type]


def _quiet_variant(audio: np.ndarray, params: FingerprintParams, speed: float, shifts: int,
                   first: SpeedVariant | None = None, picks: Sequence[QueryPicking] = ()) -> SpeedVariant:
    """:func:`fpstore.signal.variants.speed_variant` without its warnings.

    A query without peaks gets its one-line reason instead (:func:`prepare_query`), and a variant
    without them simply votes for nothing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return speed_variant(audio, params, speed, shifts, first, picks)


@dataclass
class PreparedQuery:
    """A query ready to be matched: as it is, and its audio while shifts or other speeds may be tried.

    Attributes
    ----------
    first : SpeedVariant
        The query as it is (speed 1.0, unshifted).
    audio : np.ndarray or None
        Its samples, kept when :class:`Evidence` has shifts or speeds besides 1.0.
    """

    first: SpeedVariant
    audio: np.ndarray | None = None
    _shifted: SpeedVariant | None = field(default=None, repr=False)
    _screen: tuple[SpeedVariant, ...] | None = field(default=None, repr=False)

    def _samples(self) -> np.ndarray:
        assert self.audio is not None, "a query prepared with shifts or speeds keeps its audio"
        return self.audio

    def shifted(self, params: FingerprintParams, evidence: Evidence) -> SpeedVariant:
        """Speed 1.0 at every shift and peak selection, fingerprinted on first use (the first look's reused)."""
        if evidence.shifts == 1 and not evidence.picks:
            return self.first
        if self._shifted is None:
            self._shifted = _quiet_variant(self._samples(), params, 1.0, evidence.shifts, self.first, evidence.picks)
        return self._shifted

    def screen(self, params: FingerprintParams, evidence: Evidence) -> tuple[SpeedVariant, ...]:
        """The other speeds unshifted (the speeds step's screen), fingerprinted on first use."""
        if self._screen is None:
            self._screen = tuple(_quiet_variant(self._samples(), params, speed, 1) for speed in evidence.speeds[1:])
        return self._screen

    def at_speed(self, params: FingerprintParams, evidence: Evidence, speed: float) -> SpeedVariant:
        """One of the other speeds at every shift (its unshifted fingerprint taken from the screen)."""
        unshifted = next(variant for variant in self.screen(params, evidence) if variant.speed == speed)
        if evidence.shifts == 1:
            return unshifted
        return _quiet_variant(self._samples(), params, speed, evidence.shifts, unshifted)


def prepare_query(path: str | os.PathLike[str], params: FingerprintParams,
                  evidence: Evidence = ROBUST) -> PreparedQuery | str:
    """The query file fingerprinted for ``evidence``, or why it cannot be: one line naming the file.

    The file is checked before it is opened (:func:`fpstore.files.unreadable_reason`: a named pipe
    would block), then decoded and fingerprinted as a worker of ingest does
    (:func:`fpstore.workers.fingerprint_job`), so a file fails a match for the same reason it fails
    an ingest (``empty file (0 bytes)``, ``cannot decode audio (...)``, ``no hashes: ...``). With
    shifts or speeds, the samples are decoded whole and each shift fingerprinted from them.

    Parameters
    ----------
    path : str or path-like
    params : FingerprintParams
        The database's (:meth:`Store.params` with ``duration_s=None``).
    evidence : Evidence

    Returns
    -------
    prepared : PreparedQuery or str
    """
    path = Path(path)
    reason = unreadable_reason(path)
    if reason is not None:
        return one_line(reason)
    if not evidence.needs_audio:
        fingerprint = fingerprint_job(path, params)
        return one_line(fingerprint) if isinstance(fingerprint, str) else PreparedQuery(SpeedVariant(1.0, (fingerprint,)))
    audio = signal_job(path, params)
    if isinstance(audio, str):
        return one_line(audio)
    first = _quiet_variant(audio, params, 1.0, 1)
    if first.fingerprints[0].n_postings == 0:
        return one_line(no_hashes_reason(path, first.fingerprints[0], params))
    return PreparedQuery(first, audio)


def match_prepared(store: Store, prepared: PreparedQuery, params: FingerprintParams, *, evidence: Evidence = ROBUST,
                   zone: str = DEFAULT_ZONE, top_k: int = 5, rule: DecisionRule = DecisionRule(),
                   method: Method = "python", query: str = "") -> MatchResult:
    """Match a prepared query as it is; if that names nothing, at every shift; then at the other speeds.

    Each step is one statement and is taken only when the steps before it named nothing, so an easy
    query costs what a plain one does. The steps after the first use the offset tolerance too. Every
    step counts as a test (the union bound over the query as it is, then each speed factor at every
    shift). The speeds step screens the factors unshifted first, and looks at every shift only at the
    factor whose best track scored at least :data:`SCREEN_SCORE` (a second statement).

    Parameters
    ----------
    store : Store
    prepared : PreparedQuery
        From :func:`prepare_query` with the same ``evidence``.
    params : FingerprintParams
    evidence : Evidence
    zone, top_k, rule, method, query
        As in :func:`match_fingerprint`.

    Returns
    -------
    result : MatchResult
        The first step's answer the rule accepts; else the best-scoring one.
    """
    def answer(variants: Sequence[SpeedVariant], tolerance: int) -> MatchResult:
        return match_fingerprint(store, variants, params, zone=zone, top_k=top_k, rule=rule, method=method,
                                 query=query, count=evidence.count, tests=evidence.tests, tolerance=tolerance)

    def other_speeds() -> MatchResult:
        # The screen: every other speed unshifted, one statement. Only the speed whose best track stood
        # out (SCREEN_SCORE) is then looked at with every shift, and that look is the step's answer: a query
        # that names nothing seldom pays the other speeds' shifts (a quarter of the keys looked up).
        screened = answer(prepared.screen(params, evidence), evidence.tolerance)
        if evidence.shifts == 1 or (screened.match is None and screened.score < SCREEN_SCORE):
            return screened  # unshifted is every shift, or no speed stood out
        return answer([prepared.at_speed(params, evidence, screened.speed)], evidence.tolerance)

    def pooled_other_speeds() -> MatchResult:
        # One look and one test for every other speed at every shift; the factor reported is the one
        # whose own look scores best, looked up only when the pooled look names a track.
        others = [prepared.at_speed(params, evidence, speed) for speed in evidence.speeds[1:]]
        pooled = answer([pooled_speeds(others)], evidence.tolerance)
        if pooled.match is None:
            return pooled
        return dataclasses.replace(pooled, speed=answer(others, evidence.tolerance).speed)

    steps: list[Callable[[], MatchResult]] = []
    if evidence.pools:
        steps.append(lambda: answer([prepared.shifted(params, evidence)], evidence.tolerance))
    if len(evidence.speeds) > 1:
        steps.append(pooled_other_speeds if evidence.pool_speeds else other_speeds)

    result = answer([prepared.first], 0)
    for step in steps:
        if result.match is not None:
            break
        tried = step()
        result = tried if tried.score > result.score else result
    return result


#: ``SpeedVariant.speed`` of the other speed factors pooled into one look (no factor of its own).
POOLED_SPEEDS = 0.0


def pooled_speeds(variants: Sequence[SpeedVariant]) -> SpeedVariant:
    """One look of every variant's fingerprints, voting into the same bins (:attr:`Evidence.pool_speeds`).

    A query played at factor ``f`` and resampled by it starts at the same stored frame whatever ``f``
    was tried, so the right factor's votes fall in the bin the others' would: the factors can share bins
    as the shifts do.

    Parameters
    ----------
    variants : sequence of SpeedVariant

    Returns
    -------
    variant : SpeedVariant
        With ``speed`` :data:`POOLED_SPEEDS`.
    """
    return SpeedVariant(POOLED_SPEEDS, tuple(fp for variant in variants for fp in variant.fingerprints))


def match_queries(
    store: Store,
    queries: Sequence[str | os.PathLike[str]],
    *,
    zone: str = DEFAULT_ZONE,
    top_k: int = 5,
    rule: DecisionRule = DecisionRule(),
    method: Method = "python",
    stdin: BinaryIO | None = None,
    evidence: Evidence = ROBUST,
) -> Iterator[MatchResult]:
    """Match every query file as it comes, one result each; a query that cannot be read does not stop the rest.

    A folder is walked as ingest walks it (:func:`fpstore.files.discover_audio_files`: audio files by
    extension, recursively, in sorted path order); a file is taken whatever its extension. Each file is
    fingerprinted whole with the database's parameters (:func:`prepare_query`).

    Parameters
    ----------
    store : Store
    queries : sequence of path-like
        Files and folders; ``"-"`` reads one query from ``stdin`` when it is given.
    zone, top_k, rule, method
        As in :func:`match_fingerprint`.
    stdin : binary stream or None
        Read to its end, spooled to a temporary file and decoded like a file (any format libsndfile or
        ffmpeg reads), for each ``"-"``; its result and reason say ``<stdin>``.
    evidence : Evidence
        Shifts, speeds and what a vote counts (:data:`ROBUST` by default).

    Yields
    ------
    result : MatchResult
        In the order of ``queries`` (a folder's files in sorted order); ``error`` holds the one-line
        reason of a query that could not be matched (a missing path, a folder without audio files,
        an unreadable or undecodable file, a file without hashes).

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    ParameterError
        If ``zone``, ``top_k`` or ``method`` is invalid.
    """
    store.check_schema()
    params = store.params(duration_s=None)
    if zone != ALL_ZONES:
        params.zone(zone)

    def answer(label: str, outcome: PreparedQuery | str) -> MatchResult:
        if isinstance(outcome, str):
            return MatchResult.failed(label, zone, outcome, method)
        return match_prepared(store, outcome, params, evidence=evidence, zone=zone, top_k=top_k, rule=rule,
                              method=method, query=label)

    for query in queries:
        if stdin is not None and os.fspath(query) == STDIN_ARGUMENT:
            yield answer(STDIN_LABEL, prepare_stream(stdin, params, evidence))
            continue
        try:
            files = discover_audio_files(query)
        except NotFound as exc:
            label = one_line(display_path(os.path.basename(os.path.normpath(query))))
            yield MatchResult.failed(label, zone, one_line(str(exc)), method)
            continue
        if not files:
            label = one_line(display_path(query))
            yield MatchResult.failed(label, zone, f"{label}: no audio files in this folder", method)
        for path in files:
            yield answer(one_line(display_path(path.name)), prepare_query(path, params, evidence))


def prepare_stream(stream: BinaryIO, params: FingerprintParams, evidence: Evidence = ROBUST, *,
                   label: str = STDIN_LABEL) -> PreparedQuery | str:
    """:func:`prepare_query` of the stream's bytes (any format a file may have), spooled to a temporary file.

    Parameters
    ----------
    stream : binary stream
        Read to its end (standard input, an HTTP request's body).
    params : FingerprintParams
        The database's (:meth:`Store.params` with ``duration_s=None``).
    evidence : Evidence
    label : str
        How the stream is named in a failure reason (``"<stdin>"``, an uploaded file's name).

    Returns
    -------
    prepared : PreparedQuery or str
        The prepared query, or why it cannot be matched (one line naming ``label``).
    """
    with tempfile.TemporaryDirectory(prefix="fpstore-stdin-") as folder:
        spooled = Path(folder) / "stdin"
        with open(spooled, "wb") as handle:
            shutil.copyfileobj(stream, handle)
        outcome = prepare_query(spooled, params, evidence)
    return outcome.replace(display_path(spooled), label) if isinstance(outcome, str) else outcome


def match_files(
    store: Store,
    paths: Sequence[str | os.PathLike[str]],
    *,
    zone: str = DEFAULT_ZONE,
    top_k: int = 5,
    rule: DecisionRule = DecisionRule(),
    method: Method = "python",
    errors: Literal["raise", "report"] = "raise",
    evidence: Evidence = ROBUST,
) -> list[MatchResult]:
    """Match each file (folders walked as ingest walks them), fingerprinted whole with the database's parameters.

    Parameters
    ----------
    store : Store
    paths : sequence of path-like
        Files and folders.
    zone, top_k, rule, method
        As in :func:`match_fingerprint`.
    errors : {"raise", "report"}
        ``"raise"``: the first query that cannot be matched raises AudioError with its reason (the
        queries after it are not matched). ``"report"``: it gets a result whose ``error`` holds the
        reason, and the rest go on (see :func:`match_queries`, which also yields as it goes).
    evidence : Evidence
        Shifts, speeds and what a vote counts (:data:`ROBUST` by default).

    Returns
    -------
    results : list of MatchResult, in the order of ``paths``

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    AudioError
        With ``errors="raise"``, if a query cannot be read, decoded or gives no hashes.
    """
    if errors not in ("raise", "report"):
        raise ParameterError(f"errors={errors!r} must be 'raise' or 'report'")
    results = []
    for result in match_queries(store, paths, zone=zone, top_k=top_k, rule=rule, method=method, evidence=evidence):
        if result.error is not None and errors == "raise":
            raise AudioError(result.error)
        results.append(result)
    return results
