"""The vectorised pipeline against the seed port (the oracle), on synthetic and real signals."""

from __future__ import annotations

import numpy as np
import pytest
import seed_port
from helpers import sorted_pairs
from hypothesis import given, settings
from hypothesis import strategies as st

from fpstore.signal.fingerprint import fingerprint_file, fingerprint_signal
from fpstore.signal.hashing import pack_hashes, zone_hashes
from fpstore.signal.params import NOTEBOOK_PARAMS, Zone
from fpstore.signal.peaks import Peaks, constellation_map, find_peaks
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.synth import synth_tune

PARAMS = NOTEBOOK_PARAMS


def assert_same_as_seed(fp_zones, seed_zones) -> None:
    assert set(fp_zones) == set(seed_zones)
    for name, postings in fp_zones.items():
        assert sorted_pairs(postings.hashes, postings.t_anchor_frames) == sorted(seed_zones[name]), name


def test_seed_defaults_are_the_notebooks() -> None:
    assert (PARAMS.sample_rate, PARAMS.n_fft, PARAMS.hop_length, PARAMS.bin_max) == (22050, 2048, 1024, 1024)
    assert (PARAMS.peak_dist_freq, PARAMS.peak_dist_time, PARAMS.peak_thresh) == (12, 6, 0.01)
    assert PARAMS.top_k_targets == 5 and PARAMS.duration_s == 30.0
    assert [(z.name, z.df_bins, z.dt_min_frames, z.dt_max_frames) for z in PARAMS.zones] == [
        (z["name"], z["df"], z["dt_min"], z["dt_max"]) for z in seed_port.SEED_ZONES
    ]


@pytest.mark.parametrize("kind", ["tune", "noise", "chirp", "clicks"])
def test_signal_parity_with_seed(kind: str, rng_factory) -> None:
    rng = rng_factory(1)
    n = 22050 * 12
    if kind == "tune":
        y = synth_tune(7, duration_s=12.0)
    elif kind == "noise":
        y = (0.2 * rng.standard_normal(n)).astype(np.float32)
    elif kind == "chirp":
        t = np.arange(n) / 22050
        y = (0.5 * np.sin(2 * np.pi * (100 + 400 * t) * t)).astype(np.float32)
    else:
        y = np.zeros(n, dtype=np.float32)
        y[rng.integers(0, n, 300)] = 1.0
    fp = fingerprint_signal(y, PARAMS)
    assert fp.n_postings > 0
    assert_same_as_seed(fp.zones, seed_port.seed_pairs_of_signal(y))


def test_file_parity_with_seed_decoding(tmp_path) -> None:
    from helpers import oracle_pairs, write_tunes

    (path,) = write_tunes(tmp_path, [3], duration_s=35.0)  # longer than LOAD_DURATION: the 30 s cut matters
    fp = fingerprint_file(path, PARAMS)
    assert fp.n_frames == 1 + (30 * 22050) // 1024
    assert_same_as_seed(fp.zones, oracle_pairs(path))


def test_magnitude_ties_keep_the_earlier_target() -> None:
    # Eight equal-magnitude targets after one anchor: top-5 must keep the five earliest (time, then bin).
    spectrogram = np.zeros((1024, 40), dtype=np.float32)
    spectrogram[100, 0] = 2.0
    for t, f in [(5, 90), (5, 130), (9, 60), (9, 100), (9, 140), (14, 80), (14, 120), (18, 100)]:
        spectrogram[f, t] = 1.0
    peaks = find_peaks(spectrogram, dist_freq=2, dist_time=2, thresh=0.01)
    ours = zone_hashes(peaks, PARAMS.zones, top_k=5)
    seed_peaks = seed_port.extract_peaks(spectrogram, seed_port.compute_constellation_map(spectrogram, 2, 2, 0.01))
    for zone in seed_port.SEED_ZONES:
        expected = seed_port.generate_hashes_from_peaks(seed_peaks, zone, top_k=5)
        assert sorted_pairs(*ours[zone["name"]]) == sorted(expected)
    kept_targets = {(h >> 12) & 1023 for h, t in sorted_pairs(*ours["Flarge_Tlong"]) if t == 0}
    assert kept_targets == {90, 130, 60, 100, 140}


peak_sets = st.lists(
    st.tuples(st.integers(0, 120), st.integers(0, 1100), st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.25])),
    max_size=120,
    unique_by=lambda p: (p[0], p[1]),
)
zones_strategy = st.builds(
    lambda df, lo, span: Zone("z", df, lo, lo + span), st.integers(0, 1023), st.integers(0, 30), st.integers(0, 80)
)


@settings(max_examples=300, deadline=None)
@given(peak_sets, zones_strategy, st.one_of(st.none(), st.integers(1, 8)))
def test_random_peak_sets_match_seed_loop(raw_peaks, zone, top_k) -> None:
    raw_peaks.sort(key=lambda p: (p[0], p[1]))
    peaks = Peaks(
        np.array([p[0] for p in raw_peaks], dtype=np.int32),
        np.array([p[1] for p in raw_peaks], dtype=np.int32),
        np.array([p[2] for p in raw_peaks], dtype=np.float32),
    )
    seed_zone = {"name": "z", "df": zone.df_bins, "dt_min": zone.dt_min_frames, "dt_max": zone.dt_max_frames}
    expected = seed_port.generate_hashes_from_peaks([tuple(p) for p in raw_peaks], seed_zone, top_k=top_k)
    assert sorted_pairs(*zone_hashes(peaks, [zone], top_k=top_k)["z"]) == sorted(expected)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 25), st.integers(0, 25), st.integers(0, 2**32 - 1))
def test_constellation_map_matches_seed_filter(n_bins, n_frames, dist_freq, dist_time, seed) -> None:
    # Few distinct values: plateaus and ties against the window's edge, windows wider than the array.
    rng = np.random.default_rng(seed)
    magnitudes = rng.integers(0, 4, size=(n_bins, n_frames)).astype(np.float32) / 3
    expected = seed_port.compute_constellation_map(magnitudes, dist_freq, dist_time, 0.01)
    assert np.array_equal(constellation_map(magnitudes, dist_freq=dist_freq, dist_time=dist_time), expected)


def test_pack_hashes_matches_make_hash() -> None:
    cases = [(0, 0, 0), (1023, 1023, 4095), (1024, 5, 7), (2000, 2000, 1), (512, 3, 60)]
    packed = pack_hashes(*(np.array(column) for column in zip(*cases)))
    assert packed.dtype == np.uint32
    assert packed.tolist() == [seed_port.make_hash(*case) for case in cases]


@pytest.mark.corpus
def test_real_music_parity(corpus_clips) -> None:
    from helpers import oracle_pairs

    for path in corpus_clips[:4]:
        assert_same_as_seed(fingerprint_file(path, PARAMS).zones, oracle_pairs(path))


def test_full_track_duration_none_reads_everything(tmp_path) -> None:
    from helpers import oracle_pairs, write_tunes

    (path,) = write_tunes(tmp_path, [4], duration_s=41.0)
    params = PARAMS.replace(duration_s=None)
    fp = fingerprint_file(path, params)
    assert fp.duration_s == pytest.approx(41.0, abs=1e-3)
    assert_same_as_seed(fp.zones, oracle_pairs(path, duration=None))


def test_spectrogram_shape_and_units() -> None:
    S = magnitude_spectrogram(np.zeros(22050 * 2, dtype=np.float32))
    assert S.shape == (1024, 1 + 2 * 22050 // 1024) and S.dtype == np.float32
