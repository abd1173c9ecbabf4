"""How likely a vote's fullest bin is under chance: the calibrated score of a match.

A query that is not in the database still fetches postings (hash collisions); their ``(track, offset)``
pairs scatter over the offset bins of their tracks. The chance model takes, per track ``j``, the number
``n_j`` of vote pairs it received and the number ``B_j`` of offset bins they can fall in
(:func:`offset_bins`), and treats the pairs as dropped uniformly at random into those bins: a bin's count
is then binomial ``(n_j, 1/B_j)``, bounded above by a Poisson of mean ``lambda_j = n_j / B_j``
(:func:`poisson_log_tail`). The probability that *some* bin of *some* track reaches ``m`` votes by chance
is at most the sum over every tested ``(track, offset)`` bin (Bonferroni, the union bound):

    p(m) = min(1, sum_j B_j * P(Poisson(lambda_j) >= m)),  over the tracks with n_j >= m

(a track with fewer than ``m`` pairs cannot fill a bin to ``m``: its binomial tail is exactly 0). The
score is ``-log10 p(m)`` (:func:`chance_scores`), 0 for a bin that chance fills easily, 3 for a
one-in-a-thousand event. Accepting a match when ``p < alpha`` (score ``> -log10 alpha``) bounds the
rate of false alarms by ``alpha`` whatever the query length and the catalogue size, as far as the
collisions are independent and uniform (real music repeats itself: docs/matching.md, "The chance models").

The same arithmetic runs in SQL (``fpstore_match_zones``, migration 0005); both use the closed-form
bound below, so the two give the same score to rounding.

Conventions
-----------
- Bins and counts are numbers of STFT frames and of vote pairs; logarithms are natural unless a name
  says ``log10``.
"""

from __future__ import annotations

import numpy as np

_LN10 = float(np.log(10.0))


def offset_bins(track_frames: np.ndarray, t_query_frames: np.ndarray) -> np.ndarray:
    """How many offset bins each track's vote pairs can fall in.

    An offset is ``t_anchor - t_query`` with the anchor in ``[0, track_frames)`` and the query time
    between the query's first and last anchor, so a track has ``track_frames + (t_max - t_min)`` bins.

    Parameters
    ----------
    track_frames : np.ndarray [shape=(k,)], integer
        Frames fingerprinted per track (``tracks.n_frames``).
    t_query_frames : np.ndarray [shape=(n,)], integer
        Anchor frame of every query hash that voted (not empty).

    Returns
    -------
    bins : np.ndarray [shape=(k,), dtype=int64], each >= 1

    Examples
    --------
    >>> offset_bins(np.array([100, 1]), np.array([3, 10, 7]))
    array([107,   8])
    """
    t_query = np.asarray(t_query_frames, dtype=np.int64)
    span = int(t_query.max() - t_query.min()) if t_query.size else 0
    return np.maximum(np.asarray(track_frames, dtype=np.int64) + span, 1)


def poisson_log_tail(m: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Natural log of an upper bound of ``P(X >= m)`` for ``X ~ Poisson(lam)`` (and for a binomial of that mean).

    For ``m >= lam + 1`` the terms of the tail fall by at least ``q = lam / (m + 1)`` each, so
    ``P(X >= m) <= P(X = m) / (1 - q)``; within ~``q**2`` of the exact tail when ``lam << m``, the
    case that matters. There the binomial tail of the same mean is below the Poisson one
    (Anderson and Samuels, 1967). Below ``m = lam + 1`` the bound is 1 (log 0): such a bin is no
    evidence.

    Parameters
    ----------
    m : np.ndarray, integer >= 1
        Counts; broadcast against ``lam``.
    lam : np.ndarray, float > 0
        Mean count per bin.

    Returns
    -------
    log_tail : np.ndarray, float64, <= 0

    Examples
    --------
    >>> round(float(np.exp(poisson_log_tail(np.array(3), np.array(0.5)))), 5)  # exact 0.01439
    0.01444
    """
    m_float = np.asarray(m, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    evidence = m_float >= lam + 1
    m_safe = np.where(evidence, m_float, 1.0)
    lam_safe = np.where(evidence, lam, 0.5)
    log_point = -lam_safe + m_safe * np.log(lam_safe) - log_factorial(m_safe)
    log_tail = log_point + np.log((m_safe + 1) / (m_safe + 1 - lam_safe))
    return np.where(evidence, np.minimum(log_tail, 0.0), 0.0)


def log_factorial(m: np.ndarray) -> np.ndarray:
    """``ln(m!)`` for integers ``m >= 0`` (given as floats): the running sum of ``ln 1 .. ln m``, as the SQL side sums it."""
    m = np.asarray(m, dtype=np.float64)
    table = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(m.max(initial=0)) + 1, dtype=np.float64)))])
    return table[m.astype(np.int64)]


def chance_log10_p(counts: np.ndarray, pairs_per_track: np.ndarray, bins_per_track: np.ndarray) -> np.ndarray:
    """``log10`` of the corrected chance probability that some tested bin holds at least each count.

    Parameters
    ----------
    counts : np.ndarray [shape=(c,)], integer >= 1
        Bin counts to judge (e.g. the votes of the ranked candidates).
    pairs_per_track : np.ndarray [shape=(k,)], integer
        Vote pairs each track received (``n_j``; tracks that received none may be left out).
    bins_per_track : np.ndarray [shape=(k,)], integer >= 1
        Their offset bins (``B_j``, :func:`offset_bins`).

    Returns
    -------
    log10_p : np.ndarray [shape=(c,), dtype=float64], <= 0
        ``log10 min(1, sum_j B_j * tail(count, n_j / B_j))`` over the tracks with ``n_j >= count``;
        0 for a count that no track has pairs enough for (no such bin was tested).

    Examples
    --------
    One track, 1,000 pairs over 10,000 bins: 5 in a bin is rare (p ~ 7.6e-4), 2 is not.

    >>> np.round(chance_log10_p(np.array([5, 2]), np.array([1000]), np.array([10000])), 2)
    array([-3.12,  0.  ])
    """
    counts = np.asarray(counts, dtype=np.int64)
    pairs = np.asarray(pairs_per_track, dtype=np.int64)
    bins = np.asarray(bins_per_track, dtype=np.float64)
    if counts.size == 0 or pairs.size == 0:
        return np.zeros(counts.shape)
    # One row per count, one column per track; a track short of the count adds nothing (-inf).
    log_terms = np.log(bins) + poisson_log_tail(counts[:, None], (pairs / bins)[None, :])
    log_terms = np.where(pairs[None, :] >= counts[:, None], log_terms, -np.inf)
    peak = log_terms.max(axis=1, keepdims=True)
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    # A count no track has pairs enough for is not a count of this vote: it gets p = 1, as in SQL.
    log_p = np.where(np.isfinite(peak[:, 0]), finite_peak[:, 0] + np.log(np.exp(log_terms - finite_peak).sum(axis=1)
                                                                          .clip(min=np.finfo(float).tiny)), 0.0)
    log10_p: np.ndarray = np.minimum(log_p, 0.0) / _LN10
    return log10_p


def chance_scores(counts: np.ndarray, pairs_per_track: np.ndarray, bins_per_track: np.ndarray) -> np.ndarray:
    """The score ``-log10 p`` of each count (:func:`chance_log10_p`): 0 = chance explains it, 3 = p of 1e-3.

    Examples
    --------
    >>> chance_scores(np.array([5]), np.array([1000]), np.array([10000])).round(2)
    array([3.12])
    """
    scores: np.ndarray = np.abs(chance_log10_p(counts, pairs_per_track, bins_per_track))
    return scores


#: How many of the query's best-scoring tracks measure its chance scale (``K`` of :func:`tracks_null_log10_p`).
TRACKS_NULL_DEPTH = 30
#: The best ranks left out of that measure: the candidate itself and one more, so that a stored duplicate
#: of the matching recording (an equal second) does not hide the match.
TRACKS_NULL_SKIP = 2


def track_log_p(votes: np.ndarray, counts_per_track: np.ndarray, bins_per_track: np.ndarray) -> np.ndarray:
    """Natural log of each track's own chance probability of its fullest bin, corrected for its bins.

    ``min(1, B_j * P(Poisson(n_j / B_j) >= m_j))`` for the fullest bin ``m_j`` of a track whose ``n_j``
    counted votes (pairs, or distinct anchors) fall in ``B_j`` bins: the Poisson bound of
    :func:`chance_log10_p` for one track. A track with one vote gets 0 (``p = 1``).

    Parameters
    ----------
    votes : np.ndarray [shape=(k,)], integer >= 1
        Fullest-bin count of each track.
    counts_per_track : np.ndarray [shape=(k,)], integer >= votes
        Votes of each track over all its bins (``n_j``).
    bins_per_track : np.ndarray [shape=(k,)], integer >= 1
        Its offset bins (:func:`offset_bins`).

    Returns
    -------
    log_p : np.ndarray [shape=(k,), dtype=float64], <= 0

    Examples
    --------
    >>> np.round(track_log_p(np.array([6, 1]), np.array([20, 9]), np.array([1000, 1000])), 2)
    array([-23.16,   0.  ])
    """
    bins = np.asarray(bins_per_track, dtype=np.float64)
    lam = np.asarray(counts_per_track, dtype=np.float64) / bins
    log_p: np.ndarray = np.minimum(np.log(bins) + poisson_log_tail(np.asarray(votes), lam), 0.0)
    return log_p


def tracks_null_log10_p(candidate_log_p: np.ndarray, track_log_p_values: np.ndarray, *,
                        depth: int = TRACKS_NULL_DEPTH, skip: int = TRACKS_NULL_SKIP) -> np.ndarray:
    """``log10`` of the chance probability of each candidate, measured against the query's other tracks.

    Chance alignments of real music come in clumps (repeated bars, chords), so a track's Poisson
    evidence ``E_j = -ln p_j`` (:func:`track_log_p`) overstates what chance can do by an amount that
    differs from query to query. Each query measures it on its own voted tracks, most of which only
    chance filled: above the ``(K+1)``-th largest evidence ``u`` (``K = depth``, fewer when fewer
    tracks voted), the ``K`` largest exceed ``u`` by independent exponentials of one scale (peaks over
    a threshold), and their normalised spacings ``r (E_(r) - E_(r+1))`` are exponentials of that scale
    too (Rényi). The scale is estimated from the spacings of ranks ``skip + 1 .. K`` (``m = depth -
    skip`` of them; the best ranks, which a match and a stored duplicate of it fill, are left out) and
    kept at least 1 (chance is never taken to be thinner than the Poisson model says). With fewer
    than ``depth + 1`` voted tracks, the next track has no evidence (``u = 0``) and the ranks without
    a track count at the scale 1. A candidate's ``p`` is the chance that one of the ``K`` exceeds
    ``u`` by as much as it does, with the predictive tail of an exponential whose scale was estimated
    from ``m`` draws:

        p = min(1, K * (1 + max(E - u, 0) / (m * sigma_hat)) ** -m),   sigma_hat = max(1, mean spacing)

    Parameters
    ----------
    candidate_log_p : np.ndarray [shape=(c,)], float <= 0
        ``ln p_j`` of the tracks to judge.
    track_log_p_values : np.ndarray [shape=(N,)], float <= 0
        ``ln p_j`` of every track that received a vote (the candidates among them).
    depth, skip : int
        ``K``, and the best ranks left out of the scale.

    Returns
    -------
    log10_p : np.ndarray [shape=(c,), dtype=float64], <= 0

    Examples
    --------
    A candidate with ``ln p = -20`` among forty tracks spread as the Poisson model spreads chance
    (``ln p_j = ln(j / 40)``), then among tracks whose chance evidence is three times as wide:

    >>> chance = np.log(np.arange(1, 41) / 40)
    >>> np.round(tracks_null_log10_p(np.array([-20.0]), np.append(chance, -20.0)), 2)
    array([-4.76])
    >>> np.round(tracks_null_log10_p(np.array([-20.0]), np.append(3 * chance, -20.0)), 2)
    array([-0.91])
    """
    candidates = -np.asarray(candidate_log_p, dtype=np.float64)
    if candidates.size == 0:
        return np.zeros(0)
    evidence = np.sort(-np.asarray(track_log_p_values, dtype=np.float64))[::-1][:depth + 1]
    if evidence.size <= depth:  # the next track got no vote: no evidence
        evidence = np.append(evidence, 0.0)
    ranks = np.arange(1, evidence.size)
    spacings = (ranks * (evidence[:-1] - evidence[1:]))[skip:]
    m = depth - skip
    # Ranks without a track (a small catalogue) are taken at the Poisson model's scale, 1.
    scale = max(1.0, (float(spacings.sum()) + (m - spacings.size)) / m)
    excess = np.maximum(candidates - evidence[-1], 0.0)
    log_p = np.log(ranks.size) - m * np.log1p(excess / (m * scale))
    log10_p: np.ndarray = np.minimum(log_p, 0.0) / _LN10
    return log10_p
