"""The chance model of the vote (fpstore.matching.significance), on arrays: bounds, corrections, false alarms."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from fpstore.matching.significance import (
    chance_log10_p,
    chance_scores,
    offset_bins,
    poisson_log_tail,
    track_log_p,
    tracks_null_log10_p,
)
from fpstore.matching.vote import vote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from clumped_chance import alarm_rates, clumped_votes  # noqa: E402  (a benchmark script, not a package)


def _poisson_tail(m: int, lam: float) -> float:
    return 1.0 - sum(math.exp(-lam) * lam**k / math.factorial(k) for k in range(m))


def _binomial_tail(m: int, n: int, p: float) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(m, n + 1))


@pytest.mark.parametrize(("m", "lam"), [(2, 0.5), (3, 0.5), (5, 0.1), (8, 1.0), (12, 3.0), (20, 2.5)])
def test_the_tail_bound_is_above_the_poisson_and_binomial_tails_and_close_when_lambda_is_small(m, lam) -> None:
    bound = float(np.exp(poisson_log_tail(np.array(m), np.array(lam))))
    assert bound >= _poisson_tail(m, lam)
    assert bound >= _binomial_tail(m, 400, lam / 400)
    assert bound <= 1.1 * _poisson_tail(m, lam)  # within 10 % when lam <= m / 4


def test_a_count_within_one_of_the_mean_is_no_evidence() -> None:
    assert poisson_log_tail(np.array([3, 4, 1]), np.array([2.5, 3.2, 0.2])).tolist() == [0.0, 0.0, 0.0]


def test_offset_bins_are_the_track_frames_plus_the_query_span() -> None:
    assert offset_bins(np.array([1000, 0]), np.array([40, 7, 12])).tolist() == [1033, 33]


def test_tracks_short_of_the_count_add_nothing_and_more_tracks_add_more_chance() -> None:
    pairs, bins = np.array([50, 4]), np.array([2000, 2000])
    alone = chance_log10_p(np.array([6]), pairs[:1], bins[:1])
    # A second track with 4 pairs cannot hold 6 in a bin: the same p.
    assert chance_log10_p(np.array([6]), pairs, bins) == pytest.approx(alone)
    # A second track that can: chance grows (the correction counts its bins).
    assert chance_log10_p(np.array([6]), np.array([50, 50]), bins)[0] > alone[0]


def test_scores_grow_with_the_count_and_are_zero_without_evidence() -> None:
    scores = chance_scores(np.array([40, 10, 5, 2]), np.array([300, 80]), np.array([5000, 9000]))
    assert scores[0] > scores[1] > scores[2] > 0 and scores[3] == 0.0
    assert chance_scores(np.array([5]), np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == [0.0]


def test_a_huge_count_gives_a_finite_score() -> None:
    score = chance_scores(np.array([5000]), np.array([6000]), np.array([3000]))[0]
    assert np.isfinite(score) and score > 1000


def _random_votes(rng: np.random.Generator, n_tracks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vote pairs that align with nothing: each track's pairs dropped uniformly over its offset bins."""
    track_frames = rng.integers(500, 6000, n_tracks)
    bins = offset_bins(track_frames, np.array([0, 300]))
    pairs = rng.poisson(rng.uniform(0.01, 0.2) * bins)
    tracks = np.repeat(np.arange(n_tracks), pairs)
    offsets = (rng.random(tracks.size) * bins[tracks]).astype(np.int64) - 300
    return tracks, offsets, pairs, bins


@pytest.mark.parametrize("n_tracks", [3, 200])
def test_random_postings_raise_false_alarms_at_most_at_rate_alpha(n_tracks, rng_factory) -> None:
    rng = rng_factory(7)
    alpha, trials = 0.05, 400
    alarms = 0
    best_counts = []
    for _ in range(trials):
        tracks, offsets, pairs, bins = _random_votes(rng, n_tracks)
        _, votes, _ = vote(tracks, offsets, top_k=1)
        alarms += int(chance_log10_p(votes, pairs, bins)[0] < np.log10(alpha))
        best_counts.append(int(votes[0]))
    # The uncorrected rate of a single bin would flag nearly every trial; the corrected one at most alpha
    # (the binomial 99.9 % bound of 400 draws at 5 % is 33).
    assert alarms <= 33, alarms
    assert max(best_counts) >= 4  # the fullest bins are well above the mean: the test has something to reject


def test_a_planted_alignment_among_random_postings_is_found(rng_factory) -> None:
    rng = rng_factory(8)
    tracks, offsets, pairs, bins = _random_votes(rng, 200)
    planted = 25
    tracks = np.concatenate([tracks, np.full(planted, 17)])
    offsets = np.concatenate([offsets, np.full(planted, 321)])
    pairs[17] += planted
    best_tracks, votes, best_offsets = vote(tracks, offsets, top_k=2)
    scores = chance_scores(votes, pairs, bins)
    assert best_tracks[0] == 17 and best_offsets[0] == 321
    assert scores[0] > 3 > scores[1]


# -- the tracks null: on benchmarks/clumped_chance.py's chance votes, which come in clumps -------------------
@pytest.mark.parametrize(("n_tracks", "rate"), [(60, 0.01), (600, 0.002), (600, 0.03)])
def test_the_tracks_null_keeps_its_rate_on_chance_without_clumps(n_tracks, rate, rng_factory) -> None:
    tracks_rate, _ = alarm_rates(rng_factory(11), 300, 0.05, n_tracks, rate, 1)
    assert tracks_rate <= 28 / 300, tracks_rate  # 300 draws at 5 %: the binomial 99.9 % bound is 28


def test_on_clumped_chance_the_tracks_null_alarms_far_less_often_than_the_poisson_bound(rng_factory) -> None:
    tracks_rate, poisson_rate = alarm_rates(rng_factory(12), 200, 0.05, 200, 0.01, 3)
    assert poisson_rate > 0.9, poisson_rate  # clumps of 1-3 votes defeat the fixed model
    assert tracks_rate < poisson_rate / 3, (tracks_rate, poisson_rate)


def test_a_planted_match_stands_out_and_a_stored_duplicate_does_not_hide_it(rng_factory) -> None:
    rng = rng_factory(13)
    tracks, offsets, counted, bins = clumped_votes(rng, 200, 0.01, 2)
    planted = 14
    for track in (17, 18):  # the match and a stored duplicate of it
        tracks = np.concatenate([tracks, np.full(planted, track)])
        offsets = np.concatenate([offsets, np.full(planted, 321)])
        counted[track] += planted
    voted, votes, _ = vote(tracks, offsets, top_k=tracks.size)
    log_p = track_log_p(votes, counted[voted], bins[voted])
    assert set(voted[:2].tolist()) == {17, 18}
    assert tracks_null_log10_p(log_p[:1], log_p)[0] < -3
    # Measured from the best ranks too, the duplicate's spacing would widen the scale and hide the match.
    assert tracks_null_log10_p(log_p[:1], log_p, skip=0)[0] > tracks_null_log10_p(log_p[:1], log_p)[0] + 1
    assert tracks_null_log10_p(log_p[2:3], log_p)[0] > -1.3  # the best chance track is no match at 5 %


def test_the_tracks_null_is_never_thinner_than_poisson_and_takes_a_small_catalogue_at_its_scale() -> None:
    m = 30 - 2
    # Other tracks without any evidence: the scale stays 1 (the Poisson model's), p = K (1 + E/m)^-m.
    log_p = np.append(-30.0, np.zeros(40))
    assert tracks_null_log10_p(log_p[:1], log_p)[0] == pytest.approx((np.log(30) - m * np.log1p(30 / m)) / np.log(10))
    # Three voted tracks: the next has no evidence (u = 0), the missing ranks count at scale 1.
    scale = (3 * 0.5 + (m - 1)) / m
    expected = (np.log(3) - m * np.log1p(50 / (m * scale))) / np.log(10)
    assert tracks_null_log10_p(np.array([-50.0]), np.array([-50.0, -1.0, -0.5]))[0] == pytest.approx(expected)
    # One voted track: judged alone at the Poisson scale.
    alone = tracks_null_log10_p(np.array([-20.0]), np.array([-20.0]))[0]
    assert alone == pytest.approx(-m * np.log1p(20 / m) / np.log(10)) and alone < -3
