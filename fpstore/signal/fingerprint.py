"""Fingerprint a signal or a file: the entry points of the signal layer.

A signal held in memory goes through :func:`fpstore.signal.analysis.analyze` in one shot; a long file
goes through :mod:`fpstore.signal.stream` block by block. Both end in
:func:`fpstore.signal.analysis.fingerprint_from_peaks` and give the same :class:`Fingerprint`.

Conventions
-----------
- Times are STFT frames (``hop_length`` samples at ``sample_rate`` Hz) unless a name ends in ``_s``.
- Files longer than :data:`STREAM_ABOVE_S` (or read whole, ``duration_s=None``) are decoded and
  fingerprinted block by block (:mod:`fpstore.signal.stream`) when soundfile can read them; the result is the
  same fingerprint, with memory bounded by the block size instead of the file length.
"""

from __future__ import annotations

import os

import numpy as np

from fpstore.signal.analysis import Fingerprint, analyze, fingerprint_from_peaks
from fpstore.signal.audio import can_stream, load_audio
from fpstore.signal.params import FingerprintParams
from fpstore.signal.stream import fingerprint_file_streaming

# Fingerprint is defined in fpstore.signal.analysis and is the result type of this module's functions.
__all__ = ["STREAM_ABOVE_S", "Fingerprint", "fingerprint_file", "fingerprint_signal"]

#: Requested durations above this many seconds (and ``None``, the whole file) use the streaming path.
STREAM_ABOVE_S = 300.0


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

    Examples
    --------
    >>> fingerprint_signal(np.zeros((2, 100), dtype=np.float32), FingerprintParams())
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: audio must be one-dimensional (mono), got shape (2, 100)
    """
    analysis = analyze(y, params)
    return fingerprint_from_peaks(analysis.peaks, analysis.zones, params, n_samples=y.size,
                                  n_frames=analysis.n_frames)


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
        return fingerprint_file_streaming(path, params)
    y = load_audio(path, sample_rate=params.sample_rate, duration_s=params.duration_s)
    return fingerprint_signal(y, params)
