"""Query-side peak picking (fpstore.signal.query_peaks): against slow references, and the stored picking unchanged."""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np
import pytest

from fpstore.errors import ParameterError
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import (
    DEREVERBERATED_LOOK,
    WHITENED_LOOK,
    QueryPicking,
    pick_query_peaks,
    query_fingerprint,
    rising_spectrogram,
    spectral_floor,
    whiten_spectrogram,
)
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.synth import synth_tune
from fpstore.signal.variants import picked_variant, speed_variant


def slow_whitened(magnitudes: np.ndarray, min_floor: float, quartile: bool = False) -> np.ndarray:
    """Each bin over the median (or lower quartile) of its values, one bin at a time with the statistics module."""
    out = np.empty_like(magnitudes)
    for k, row in enumerate(magnitudes):
        values = row.tolist()
        floor = statistics.quantiles(values, n=4, method="inclusive")[0] if quartile else statistics.median(values)
        out[k] = row / max(floor, min_floor)
    return out


def slow_peaks(values: np.ndarray, magnitudes: np.ndarray, dist_freq: int, dist_time: int,
               thresh: float, above: float = 0.0) -> list[tuple[int, int]]:
    """(t, f) of every point that is the maximum of its zero-padded neighbourhood in ``values``, loud, above ``above``.

    ``above`` is a whitened picking's floor ratio (0: any positive value).
    """
    n_bins, n_frames = values.shape
    found = []
    for t in range(n_frames):
        for f in range(n_bins):
            window = [values[g, s] if 0 <= g < n_bins and 0 <= s < n_frames else 0.0
                      for g in range(f - dist_freq, f + dist_freq + 1) for s in range(t - dist_time, t + dist_time + 1)]
            if values[f, t] == max(window) and magnitudes[f, t] > thresh and values[f, t] > max(above, 0.0):
                found.append((t, f))
    return found


@pytest.fixture
def noisy_spectrogram(rng_factory) -> np.ndarray:
    """A small spectrogram whose bins have floors a hundredfold apart (pink-like), a few silent bins."""
    rng = rng_factory(27)
    magnitudes = rng.exponential(size=(40, 30)) * np.linspace(10.0, 0.1, 40)[:, None]
    magnitudes[35:] = 0.0
    return magnitudes


def test_whitening_divides_each_bin_by_its_median_as_the_slow_reference_does(noisy_spectrogram) -> None:
    whitened = whiten_spectrogram(noisy_spectrogram, min_floor=1e-3)
    np.testing.assert_allclose(whitened, slow_whitened(noisy_spectrogram, 1e-3), rtol=1e-12)
    np.testing.assert_array_equal(spectral_floor(noisy_spectrogram)[35:], 0.0)
    assert np.median(whitened[:35], axis=1) == pytest.approx(1.0)


def test_a_lower_quartile_floor_is_the_slow_reference_s_and_lies_below_the_median(noisy_spectrogram) -> None:
    whitened = whiten_spectrogram(noisy_spectrogram, min_floor=1e-3, quantile=0.25)
    np.testing.assert_allclose(whitened, slow_whitened(noisy_spectrogram, 1e-3, quartile=True), rtol=1e-12)
    assert np.all(spectral_floor(noisy_spectrogram, 0.25)[:35] < spectral_floor(noisy_spectrogram)[:35])


@pytest.mark.parametrize("picking", [QueryPicking(3, 2, whiten=True), QueryPicking(2, 1), QueryPicking(12, 6, None, True),
                                     QueryPicking(12, 6, 5, True, 0.25), QueryPicking(3, 2, 5, True, 0.25, 3.0)])
def test_query_peaks_equal_the_slow_reference(noisy_spectrogram, picking) -> None:
    thresh = 0.5
    peaks = pick_query_peaks(noisy_spectrogram, picking, thresh=thresh)
    values = (whiten_spectrogram(noisy_spectrogram, min_floor=thresh, quantile=picking.floor_quantile) if picking.whiten
              else noisy_spectrogram)
    expected = slow_peaks(values, noisy_spectrogram, picking.dist_freq, picking.dist_time, thresh,
                          picking.floor_ratio if picking.whiten else 0.0)
    assert list(zip(peaks.t_frames.tolist(), peaks.f_bins.tolist())) == expected
    assert expected  # the reference found something to compare
    np.testing.assert_array_equal(peaks.magnitudes, values[peaks.f_bins, peaks.t_frames].astype(np.float32))


def test_a_smaller_neighbourhood_keeps_every_stored_peak_and_adds_others(noisy_spectrogram) -> None:
    stored = pick_query_peaks(noisy_spectrogram, QueryPicking(6, 4), thresh=0.01)
    denser = pick_query_peaks(noisy_spectrogram, QueryPicking(3, 2), thresh=0.01)
    as_set = set(zip(denser.t_frames.tolist(), denser.f_bins.tolist()))
    assert set(zip(stored.t_frames.tolist(), stored.f_bins.tolist())) < as_set


def test_a_floor_ratio_drops_most_peaks_of_noise_alone_and_keeps_a_tone_over_it(rng_factory) -> None:
    params = FingerprintParams()
    rng = rng_factory(5)
    n = params.sample_rate * 4
    noise = (0.05 * rng.standard_normal(n)).astype(np.float32)
    tone = (0.05 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / params.sample_rate)).astype(np.float32)
    bin_of_tone = round(1000.0 * params.n_fft / params.sample_rate)

    def peaks(y: np.ndarray, floor_ratio: float) -> tuple[int, set[int]]:
        magnitudes = magnitude_spectrogram(y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max)
        found = pick_query_peaks(magnitudes, QueryPicking(whiten=True, floor_quantile=0.25, floor_ratio=floor_ratio),
                                 thresh=params.peak_thresh)
        return found.f_bins.size, set(found.f_bins.tolist())

    every, _ = peaks(noise, 0.0)
    kept, _ = peaks(noise, 5.0)
    assert every > 100 and kept < every / 2  # noise's own peaks mostly stand less than 5 times above the floor
    # A tone steady over the whole query raises its bin's floor as well: it stands out where it starts.
    gated = np.where(np.arange(n) > n // 2, tone, 0).astype(np.float32)
    _, bins = peaks(noise + gated, 5.0)
    assert any(abs(f - bin_of_tone) <= 1 for f in bins)


def test_the_stored_picking_gives_the_stored_fingerprint() -> None:
    params = FingerprintParams()
    y = synth_tune(5, duration_s=3.0)
    stored, query = fingerprint_signal(y, params), query_fingerprint(y, params, QueryPicking.stored(params))
    assert stored.n_peaks == query.n_peaks > 0
    for name, hashes in stored.zones.items():
        np.testing.assert_array_equal(query.zones[name].hashes, hashes.hashes)
        np.testing.assert_array_equal(query.zones[name].t_anchor_frames, hashes.t_anchor_frames)


def test_a_variant_pools_each_shift_under_every_picking() -> None:
    params = FingerprintParams()
    y = synth_tune(6, duration_s=2.0)
    dense = QueryPicking(4, 2, 20)
    variant = speed_variant(y, params, 1.0, 2, pickings=(dense,))
    assert len(variant.fingerprints) == 4
    assert variant.fingerprints[0].n_postings == fingerprint_signal(y, params).n_postings
    assert variant.fingerprints[1].n_postings == query_fingerprint(y, params, dense).n_postings
    assert variant.fingerprints[1].n_postings > variant.fingerprints[0].n_postings


def slow_rising(magnitudes: np.ndarray, decay: float) -> np.ndarray:
    """Each bin less the largest earlier magnitude decayed per frame since, one point at a time."""
    out = np.empty_like(magnitudes)
    for f, t in np.ndindex(*magnitudes.shape):
        tail = max((magnitudes[f, k] * decay ** (t - k) for k in range(t)), default=0.0)
        out[f, t] = max(magnitudes[f, t] - tail, 0.0)
    return out


def test_the_rising_spectrogram_equals_the_slow_reference(noisy_spectrogram) -> None:
    for decay in (0.3, 0.5, 0.9):
        np.testing.assert_allclose(rising_spectrogram(noisy_spectrogram, decay), slow_rising(noisy_spectrogram, decay),
                                   rtol=1e-9, atol=1e-12)


def test_a_dereverberated_picking_finds_the_peak_a_reverberant_tail_outranks() -> None:
    # A loud note in bin 10 at frame 2 rings on (0.8 per frame, a reverberant room); a softer note in bin 12
    # at frame 10 is inside the tail's neighbourhood and below it, so the stored picking does not see it.
    magnitudes = np.zeros((30, 20))
    magnitudes[10, 2:] = 10.0 * 0.8 ** np.arange(18)
    magnitudes[12, 10] = 4.0
    stored = pick_query_peaks(magnitudes, QueryPicking(), thresh=0.01)
    rising = pick_query_peaks(magnitudes, QueryPicking(decay=0.5), thresh=0.01)
    assert list(zip(stored.f_bins.tolist(), stored.t_frames.tolist())) == [(10, 2)]
    assert list(zip(rising.f_bins.tolist(), rising.t_frames.tolist())) == [(10, 2), (12, 10)]
    np.testing.assert_allclose(rising.magnitudes, [10.0, 4.0])  # the targets are ranked on the rise


def test_the_dereverberated_look_takes_two_of_the_four_shifts_spectrograms() -> None:
    params = FingerprintParams()
    y = synth_tune(8, duration_s=3.0)
    spectrograms: dict[int, np.ndarray] = {}
    speed_variant(y, params, 1.0, 4, spectrograms=spectrograms)
    look = picked_variant(y, params, DEREVERBERATED_LOOK.shifts or 4, (DEREVERBERATED_LOOK,), spectrograms=spectrograms)
    reference = [query_fingerprint(y[offset:], params, DEREVERBERATED_LOOK) for offset in (0, 512)]
    assert len(look.fingerprints) == 2
    for fingerprint, expected in zip(look.fingerprints, reference):
        got, want = fingerprint.zones["Fsmall_Tlong"], expected.zones["Fsmall_Tlong"]
        assert want.hashes.size > 0
        np.testing.assert_array_equal(got.hashes, want.hashes)


def test_the_whitened_look_on_the_shifts_spectrograms_and_one_zone_gives_the_same_hashes() -> None:
    # The matcher fingerprints its later looks in the voting zone only and picks the whitened look's peaks
    # on the spectrograms the shifted look computed: the hashes must be those computed from scratch.
    params = FingerprintParams()
    one_zone = dataclasses.replace(params, zones=(params.zone("Fsmall_Tlong"),))
    y = synth_tune(7, duration_s=3.0)
    spectrograms: dict[int, np.ndarray] = {}
    shifted = speed_variant(y, one_zone, 1.0, 4, spectrograms=spectrograms)
    assert sorted(spectrograms) == [0, 256, 512, 768]
    reference_shifted = speed_variant(y, params, 1.0, 4)
    picked = picked_variant(y, one_zone, 4, (WHITENED_LOOK,), spectrograms=spectrograms)
    reference_picked = picked_variant(y, params, 4, (WHITENED_LOOK,))
    for variant, reference in ((shifted, reference_shifted), (picked, reference_picked)):
        assert len(variant.fingerprints) == len(reference.fingerprints) == 4
        for fingerprint, expected in zip(variant.fingerprints, reference.fingerprints):
            assert list(fingerprint.zones) == ["Fsmall_Tlong"] and fingerprint.n_peaks == expected.n_peaks
            got, want = fingerprint.zones["Fsmall_Tlong"], expected.zones["Fsmall_Tlong"]
            assert want.hashes.size > 0
            np.testing.assert_array_equal(got.hashes, want.hashes)
            np.testing.assert_array_equal(got.t_anchor_frames, want.t_anchor_frames)


@pytest.mark.parametrize("call, message", [
    (lambda: QueryPicking(dist_time=-2), r"dist_time=-2 must be an integer >= 0"),
    (lambda: QueryPicking(top_k_targets=0), r"top_k_targets=0 must be an integer >= 1"),
    (lambda: QueryPicking(whiten=1), r"whiten=1 must be True or False"),  # type: ignore[arg-type]
    (lambda: QueryPicking(floor_quantile=1.0), r"floor_quantile=1.0 must be a number in \(0, 1\)"),
    (lambda: QueryPicking(floor_ratio=-1.0), r"floor_ratio=-1.0 must be a finite number >= 0"),
    (lambda: QueryPicking(floor_ratio=float("nan")), r"floor_ratio=nan must be a finite number >= 0"),
    (lambda: QueryPicking(decay=1.0), r"decay=1.0 must be a number in \[0, 1\)"),
    (lambda: QueryPicking(shifts=0), r"shifts=0 must be an integer >= 1"),
    (lambda: rising_spectrogram(np.ones((4, 4)), 0.0), r"decay=0.0 must be a number in \(0, 1\)"),
    (lambda: whiten_spectrogram(np.ones((4, 4)), min_floor=0.0), r"min_floor=0.0 must be a positive number"),
    (lambda: spectral_floor(np.ones((4, 0))), r"at least one frame"),
    (lambda: spectral_floor(np.ones((4, 4), dtype=np.int32)), r"floating point"),
    (lambda: pick_query_peaks(np.full((4, 4), np.nan), QueryPicking(), thresh=0.0), r"non-finite"),
    (lambda: query_fingerprint(np.zeros((2, 10), np.float32), FingerprintParams(), QueryPicking()), r"mono"),
])
def test_query_peak_functions_reject_bad_input(call, message) -> None:
    with pytest.raises(ParameterError, match=message):
        call()
