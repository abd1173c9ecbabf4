"""The fingerprint pipeline composed once: signal → spectrogram → peaks → per-zone hashes → Fingerprint.

:func:`analyze` runs the whole pipeline on samples held in memory and keeps every intermediate result
(the one-shot path and ``fpstore plot`` use it); :func:`fingerprint_from_peaks` is the last step, shared
with the block-by-block path of :mod:`fpstore.signal.stream`, which finds the same peaks and hashes
without holding the whole signal.

Conventions
-----------
- Audio is mono floating point (float32 from the decoder) sampled at ``params.sample_rate`` Hz.
- Times are STFT frames (``hop_length`` samples at ``sample_rate`` Hz) unless a name ends in ``_s``
  (seconds); frequencies are STFT bins; magnitudes are linear STFT magnitudes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fpstore.signal.hashing import ZoneHashes, zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import Peaks, find_peaks
from fpstore.signal.spectrogram import magnitude_spectrogram


@dataclass(frozen=True)
class Fingerprint:
    """Everything fpstore stores about one signal.

    Attributes
    ----------
    zones : dict[str, ZoneHashes]
        Postings per zone name.
    duration_s : float
        Seconds of audio that were fingerprinted.
    n_frames : int
        STFT frames.
    n_peaks : int
        Constellation peaks.
    """

    zones: dict[str, ZoneHashes]
    duration_s: float
    n_frames: int
    n_peaks: int

    @property
    def n_postings(self) -> int:
        """Postings over all zones."""
        return sum(len(zh.hashes) for zh in self.zones.values())


class Analysis(NamedTuple):
    """Every intermediate result of the pipeline on one signal.

    Attributes
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float32 for float32 audio
        Linear STFT magnitudes.
    peaks : Peaks
        Constellation peaks, sorted by time, then frequency.
    zones : dict[str, ZoneHashes]
        Postings per zone name, in the order of ``params.zones``.
    """

    magnitudes: np.ndarray
    peaks: Peaks
    zones: dict[str, ZoneHashes]

    @property
    def n_frames(self) -> int:
        """STFT frames."""
        return int(self.magnitudes.shape[1])


def analyze(y: np.ndarray, params: FingerprintParams) -> Analysis:
    """Spectrogram, constellation peaks and per-zone hashes of mono audio.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, mono, at ``params.sample_rate`` Hz
    params : FingerprintParams

    Returns
    -------
    analysis : Analysis
        ``n_frames = 1 + n // params.hop_length``; an empty signal gives one silent frame, no peaks.

    Raises
    ------
    ParameterError
        If ``y`` is not finite mono floating-point audio.

    Examples
    --------
    >>> a = analyze(np.zeros(22050, dtype=np.float32), FingerprintParams())
    >>> a.magnitudes.shape, a.peaks.t_frames.size, a.zones["Flarge_Tlong"].hashes.size
    ((1024, 22), 0, 0)
    """
    magnitudes = magnitude_spectrogram(y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max)
    peaks = find_peaks(magnitudes, dist_freq=params.peak_dist_freq, dist_time=params.peak_dist_time,
                       thresh=params.peak_thresh)
    return Analysis(magnitudes, peaks, zone_hashes(peaks, params.zones, top_k=params.top_k_targets))


def empty_fingerprint(params: FingerprintParams) -> Fingerprint:
    """The fingerprint of an empty signal: no frames, no peaks, no postings in any zone.

    Parameters
    ----------
    params : FingerprintParams

    Returns
    -------
    fingerprint : Fingerprint
        One empty :class:`ZoneHashes` (uint32 hashes, int32 anchor frames) per zone of ``params``.
    """
    empty = ZoneHashes(np.empty(0, np.uint32), np.empty(0, np.int32))
    return Fingerprint({zone.name: empty for zone in params.zones}, 0.0, 0, 0)


def fingerprint_from_peaks(peaks: Peaks, hashes_by_zone: dict[str, ZoneHashes], params: FingerprintParams, *,
                           n_samples: int, n_frames: int) -> Fingerprint:
    """The :class:`Fingerprint` of a signal whose peaks and per-zone hashes are known.

    The last step of both the one-shot and the streaming path: it decides the degenerate cases the same
    way for both.

    Parameters
    ----------
    peaks : Peaks
        The signal's constellation peaks.
    hashes_by_zone : dict[str, ZoneHashes]
        Their postings per zone name.
    params : FingerprintParams
    n_samples : int
        Samples of the signal, at ``params.sample_rate`` Hz.
    n_frames : int
        STFT frames of the signal.

    Returns
    -------
    fingerprint : Fingerprint
        :func:`empty_fingerprint` when ``n_samples`` is 0.

    Warns
    -----
    UserWarning
        If the signal is empty or has no peaks (silence): the fingerprint then has no postings. The
        warning names the line that called the function calling this one (``stacklevel=3``), the user's
        call of :func:`fpstore.signal.fingerprint.fingerprint_signal` or
        :func:`fpstore.signal.stream.fingerprint_blocks`.
    """
    if n_samples == 0:
        warnings.warn("audio is empty: no hashes", stacklevel=3)
        return empty_fingerprint(params)
    if peaks.t_frames.size == 0:
        warnings.warn("no spectral peak above peak_thresh (silence?): no hashes", stacklevel=3)
    return Fingerprint(hashes_by_zone, n_samples / params.sample_rate, n_frames, int(peaks.t_frames.size))
