"""Every public signal function rejects malformed arrays with ParameterError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from fpstore.errors import ParameterError
from fpstore.signal.analysis import analyze
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams, Zone
from fpstore.signal.peaks import Peaks, constellation_map, extract_peaks, find_peaks
from fpstore.signal.spectrogram import frame_magnitudes, magnitude_spectrogram
from fpstore.signal.stream import fingerprint_blocks, stream_peaks

BAD_AUDIO = {
    "int dtype": (np.zeros(4096, dtype=np.int16), r"floating point"),
    "nan": (np.array([0.0, np.nan] * 2048, dtype=np.float32), r"non-finite"),
    "0-d": (np.ones((), dtype=np.float32), r"one-dimensional"),
    "2-d": (np.zeros((2, 4096), dtype=np.float32), r"one-dimensional"),
    "list": ([0.0] * 4096, r"numpy array"),
}
BAD_SPECTROGRAMS = {
    "int dtype": (np.zeros((8, 8), dtype=np.int32), r"floating point"),
    "nan": (np.full((8, 8), np.nan, dtype=np.float32), r"non-finite"),
    "0-d": (np.ones(()), r"two-dimensional"),
    "1-d": (np.ones(8), r"two-dimensional"),
}


@pytest.mark.parametrize("case", BAD_AUDIO, ids=list(BAD_AUDIO))
@pytest.mark.parametrize("function", [
    lambda y: magnitude_spectrogram(y), lambda y: analyze(y, FingerprintParams()),
    lambda y: fingerprint_signal(y, FingerprintParams()),
], ids=["magnitude_spectrogram", "analyze", "fingerprint_signal"])
def test_audio_functions_reject_bad_arrays(function, case) -> None:
    y, message = BAD_AUDIO[case]
    with pytest.raises(ParameterError, match=message):
        function(y)


@pytest.mark.parametrize("case", BAD_AUDIO, ids=list(BAD_AUDIO))
@pytest.mark.parametrize("function", [stream_peaks, fingerprint_blocks], ids=["stream_peaks", "fingerprint_blocks"])
@pytest.mark.parametrize("position", ["first", "after a good block"])
def test_streaming_rejects_bad_blocks(function, position, case) -> None:
    """Each block is checked as one-shot audio is: the same ParameterError, wherever the bad block comes."""
    block, message = BAD_AUDIO[case]
    good = [np.zeros(5000, dtype=np.float32)] if position != "first" else []
    with pytest.raises(ParameterError, match=message):
        function(iter([*good, block, np.zeros(5000, dtype=np.float32)]), FingerprintParams())


@pytest.mark.parametrize("case", BAD_SPECTROGRAMS, ids=list(BAD_SPECTROGRAMS))
@pytest.mark.parametrize("function", [
    constellation_map, find_peaks, lambda S: extract_peaks(S, np.zeros((8, 8), dtype=bool))
], ids=["constellation_map", "find_peaks", "extract_peaks"])
def test_spectrogram_functions_reject_bad_arrays(function, case) -> None:
    S, message = BAD_SPECTROGRAMS[case]
    with pytest.raises(ParameterError, match=message):
        function(S)


@pytest.mark.parametrize("call, message", [
    (lambda: magnitude_spectrogram(np.zeros(100, np.float32), n_fft=0), r"n_fft=0 must be an integer >= 1"),
    (lambda: magnitude_spectrogram(np.zeros(100, np.float32), hop_length=2.5), r"hop_length=2.5 must be an integer"),
    (lambda: magnitude_spectrogram(np.zeros(100, np.float32), bin_max=-3), r"bin_max=-3 must be an integer >= 1"),
    (lambda: frame_magnitudes(np.zeros(100, np.float32)), r"n_fft=2048 is longer than the 100 samples"),
    (lambda: find_peaks(np.ones((8, 8)), dist_freq=-1), r"dist_freq=-1 must be an integer >= 0"),
    (lambda: constellation_map(np.ones((8, 8)), dist_time=True), r"dist_time=True must be an integer >= 0"),
])
def test_signal_functions_reject_bad_sizes(call, message) -> None:
    with pytest.raises(ParameterError, match=message):
        call()


@pytest.mark.parametrize("peaks, message", [
    (Peaks(np.array([2, 1]), np.array([0, 0]), np.ones(2, np.float32)), r"sorted"),
    (Peaks(np.array([1, 1]), np.array([5, 5]), np.ones(2, np.float32)), r"sorted"),
    (Peaks(np.array([1.0]), np.array([0]), np.ones(1, np.float32)), r"t_frames must be an integer"),
    (Peaks(np.array([1]), np.array([0, 1]), np.ones(1, np.float32)), r"one length"),
    (Peaks(np.array([1]), np.array([0]), np.array([np.nan], np.float32)), r"finite"),
    (Peaks(np.array([[1]]), np.array([[0]]), np.ones((1, 1), np.float32)), r"one-dimensional"),
])
def test_zone_hashes_rejects_bad_peaks(peaks, message) -> None:
    with pytest.raises(ParameterError, match=message):
        zone_hashes(peaks, [Zone("z", 10, 1, 5)])


@pytest.mark.parametrize("changes, message", [
    ({"hop_length": 0}, r"hop_length=0"),
    ({"n_fft": "2048"}, r"n_fft='2048'"),
    ({"bin_max": 5000}, r"bin_max=5000"),
    ({"peak_thresh": float("nan")}, r"peak_thresh=nan"),
    ({"duration_s": -1.0}, r"duration_s=-1.0"),
    ({"top_k_targets": 0}, r"top_k_targets=0"),
    ({"zones": ()}, r"at least one"),
    ({"zones": (Zone("a", 1, 1, 2), Zone("a", 1, 1, 2))}, r"unique"),
])
def test_params_reject_out_of_range(changes, message) -> None:
    with pytest.raises(ParameterError, match=message):
        FingerprintParams(**changes)


@pytest.mark.parametrize("args, message", [
    (("z", 1024, 1, 2), r"df_bins=1024"),
    (("z", 10, 1, 4096), r"dt_max_frames=4096"),
    (("z", 10, 9, 2), r"dt_min_frames=9 must not exceed dt_max_frames=2"),
    (("", 10, 1, 2), r"name"),
])
def test_zone_rejects_out_of_range(args, message) -> None:
    with pytest.raises(ParameterError, match=message):
        Zone(*args)


def test_silence_warns_and_gives_empty_fingerprint() -> None:
    with pytest.warns(UserWarning, match="no spectral peak"):
        fp = fingerprint_signal(np.zeros(22050 * 3, dtype=np.float32), FingerprintParams())
    assert fp.n_peaks == 0 and fp.n_postings == 0 and fp.n_frames == 65


def test_empty_audio_warns_and_gives_empty_fingerprint() -> None:
    with pytest.warns(UserWarning, match="empty"):
        fp = fingerprint_signal(np.zeros(0, dtype=np.float32), FingerprintParams())
    assert fp.n_postings == 0 and set(fp.zones) == {z.name for z in FingerprintParams().zones}
