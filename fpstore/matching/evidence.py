"""What a query contributes to the vote (:class:`Evidence`) and when its best track is named (:class:`DecisionRule`).

Pure values: nothing here reads the database. :data:`ROBUST` (distinct anchors, the other looks taken
lazily, the tracks null at :data:`DEFAULT_ALPHA`) is the default; :data:`PLAIN` is the notebook's vote.

Conventions
-----------
- Offsets and tolerances are STFT frames (``hop_length`` samples at ``sample_rate`` Hz).
- Scores are ``-log10 p`` (:mod:`fpstore.matching.significance`); a calibrated rule names a track above
  ``-log10 alpha``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fpstore.errors import ParameterError
from fpstore.matching.defaults import ALL_ZONES as ALL_ZONES
from fpstore.matching.defaults import DEFAULT_ALPHA as DEFAULT_ALPHA
from fpstore.matching.defaults import DEFAULT_MIN_RATIO as DEFAULT_MIN_RATIO
from fpstore.matching.defaults import DEFAULT_ZONE as DEFAULT_ZONE
from fpstore.matching.defaults import PLAIN_MIN_VOTES_ALL_ZONES as PLAIN_MIN_VOTES_ALL_ZONES
from fpstore.matching.defaults import PLAIN_MIN_VOTES_ONE_ZONE as PLAIN_MIN_VOTES_ONE_ZONE
from fpstore.signal.query_peaks import WHITENED_LOOK, QueryPicking
from fpstore.signal.variants import check_variants

#: What a vote counts in a ``(track, offset)`` bin: every (posting, query hash) pair, or distinct stored anchors.
Count = Literal["pairs", "anchors"]
#: The chance model behind a candidate's score: the closed-form Poisson bound, or one whose scale each query
#: measures on its other voted tracks (:mod:`fpstore.matching.significance`).
Null = Literal["poisson", "tracks"]
#: Widest offset tolerance (frames) :class:`Evidence` accepts.
MAX_TOLERANCE_FRAMES = 3


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
    own_picks : tuple of QueryPicking
        Peak selections each looked at in a step of its own, after the other steps and in this order
        (one more test each): the query at speed 1.0 picked with it at every shift (or at the
        picking's own ``shifts``), without the stored side's picking and without offset tolerance, for
        queries whose peaks noise or a room's reverberation outranked. Unlike ``picks``, the looks the
        other queries are named by stay as they are.
    max_postings_per_key : int or None
        Leave out a query key whose stored list holds more than this many postings (a hash that many
        recordings share says little; audfprint caps its lists the same way): the lookup reads each
        list only up to one past the bound, so a long list costs what a short one does, and the chance
        scores are computed on the votes that remain. None (the default): every posting. Python vote only.
    """

    count: Count = "pairs"
    shifts: int = 1
    speeds: tuple[float, ...] = (1.0,)
    tolerance: int = 0
    picks: tuple[QueryPicking, ...] = ()
    pool_speeds: bool = False
    merge_first: bool = False
    own_picks: tuple[QueryPicking, ...] = ()
    max_postings_per_key: int | None = None

    def __post_init__(self) -> None:
        if self.count not in ("pairs", "anchors"):
            raise ParameterError(f"count={self.count!r} must be 'pairs' or 'anchors'")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int) or not (
                0 <= self.tolerance <= MAX_TOLERANCE_FRAMES):
            raise ParameterError(f"tolerance={self.tolerance!r} must be an integer in [0, {MAX_TOLERANCE_FRAMES}]")
        object.__setattr__(self, "speeds", check_variants(self.shifts, self.speeds))
        for name in ("picks", "own_picks"):
            pickings = getattr(self, name)
            if not isinstance(pickings, tuple) or not all(isinstance(p, QueryPicking) for p in pickings):
                raise ParameterError(f"{name}={pickings!r} must be a tuple of QueryPicking")
        bound = self.max_postings_per_key
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 1):
            raise ParameterError(f"max_postings_per_key={bound!r} must be an integer >= 1, or None")

    @property
    def needs_audio(self) -> bool:
        """True if the query must be decoded to samples (shifts or speeds), not only fingerprinted."""
        return self.shifts > 1 or len(self.speeds) > 1 or bool(self.picks) or bool(self.own_picks)

    @property
    def pools(self) -> bool:
        """True if a second look at speed 1.0 pools more evidence (shifts, peak selections, an offset tolerance)."""
        return self.shifts > 1 or self.tolerance > 0 or bool(self.picks)

    @property
    def tests(self) -> int:
        """Tests a query can make (:func:`match_prepared`): as it is, pooled, the other speed factors, its own picks."""
        other_speeds = len(self.speeds) - 1
        first = 0 if self.merge_first and self.pools else 1
        speeds = min(other_speeds, 1) if self.pool_speeds else other_speeds
        return first + int(self.pools) + speeds + len(self.own_picks)


#: The notebook's vote: every pair of the query as it is.
PLAIN = Evidence()
#: The default: distinct anchors; when the query as it is names nothing, four sub-hop shifts with votes
#: tolerant to +-1 frame, then speeds of +-1, 2, 3 %, then the whitened peaks at the four shifts (for
#: short, noisy, reverberant and speed-changed queries; an easy query pays one plain lookup).
ROBUST = Evidence("anchors", 4, (0.99, 1.01, 0.98, 1.02, 0.97, 1.03), tolerance=1, own_picks=(WHITENED_LOOK,))


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
    corrected for every ``(track, offset)`` bin tested (:mod:`fpstore.matching.significance`; its score is
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
        (:func:`fpstore.matching.significance.tracks_null_log10_p`; in SQL ``fpstore_match_tracks``);
        ``"poisson"``, the closed-form bound over every tested ``(track, offset)`` bin
        (:func:`fpstore.matching.significance.chance_scores`).
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
