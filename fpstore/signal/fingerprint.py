"""The whole fingerprint pipeline: signal → spectrogram → peaks → per-zone hashes.

Conventions
-----------
- Times are STFT frames (``hop_length`` samples at ``sample_rate`` Hz) unless a name ends in ``_s``.
- Files longer than :data:`STREAM_ABOVE_S` (or read whole, ``duration_s=None``) are decoded and
  fingerprinted block by block (:mod:`fpstore.signal.stream`) when soundfile can read them; the result is the
  same fingerprint, with memory bounded by the block size instead of the file length.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from fpstore.signal.audio import can_stream, load_audio
from fpstore.signal.hashing import ZoneHashes, zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import find_peaks
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.validate import valid_audio


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


#: Requested durations above this many seconds (and ``None``, the whole file) use the streaming path.
STREAM_ABOVE_S = 300.0


def empty_fingerprint(params: FingerprintParams) -> Fingerprint:
    """The fingerprint of an empty signal: no postings in any zone."""
    empty = ZoneHashes(np.empty(0, np.uint32), np.empty(0, np.int32))
    return Fingerprint({zone.name: empty for zone in params.zones}, 0.0, 0, 0)


def fingerprint_signal(y: np.ndarray, params: FingerprintParams) -> Fingerprint:
    """Fingerprint mono audio already sampled at ``params.sample_rate``.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, mono, at ``params.sample_rate`` Hz
    params : FingerprintParams

    Returns
    -------
    fingerprint : Fingerprint

    Raises
    ------
    ParameterError
        If ``y`` is not finite mono floating-point audio.

    Warns
    -----
    UserWarning
        If the signal is empty or yields no peaks (silence): the fingerprint is then empty.
    """
    valid_audio(y)
    duration_s = y.size / params.sample_rate
    if y.size == 0:
        warnings.warn("audio is empty: no hashes", stacklevel=2)
        return empty_fingerprint(params)
    magnitudes = magnitude_spectrogram(
        y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max
    )
    peaks = find_peaks(
        magnitudes,
        dist_freq=params.peak_dist_freq,
        dist_time=params.peak_dist_time,
        thresh=params.peak_thresh,
    )
    if peaks.t_frames.size == 0:
        warnings.warn("no spectral peak above peak_thresh (silence?): no hashes", stacklevel=2)
    return Fingerprint(
        zone_hashes(peaks, params.zones, top_k=params.top_k_targets),
        duration_s,
        int(magnitudes.shape[1]),
        int(peaks.t_frames.size),
    )


def fingerprint_file(path: str | os.PathLike[str], params: FingerprintParams) -> Fingerprint:
    """Decode ``path`` as the seed does and fingerprint it.

    Parameters
    ----------
    path : str or path-like
    params : FingerprintParams

    Returns
    -------
    fingerprint : Fingerprint

    Raises
    ------
    AudioError
        If the file cannot be decoded.
    """
    long_read = params.duration_s is None or params.duration_s > STREAM_ABOVE_S
    if long_read and can_stream(path):
        from fpstore.signal.stream import fingerprint_file_streaming  # stream builds on this module

        return fingerprint_file_streaming(path, params)
    y = load_audio(path, sample_rate=params.sample_rate, duration_s=params.duration_s)
    return fingerprint_signal(y, params)
