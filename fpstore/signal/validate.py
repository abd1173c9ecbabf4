"""Boundary checks for the arrays that flow through the signal code.

Each public signal function calls one of these first, so a bad array fails early with a
:class:`~fpstore.errors.ParameterError` naming what is wrong, instead of deep inside numpy.
"""

from __future__ import annotations

import numpy as np

from fpstore.errors import ParameterError


def valid_audio(y: object) -> np.ndarray:
    """Check that ``y`` is a mono floating-point signal with finite samples.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], floating point
        Audio samples.

    Returns
    -------
    y : np.ndarray [shape=(n,)]
        The same array.

    Raises
    ------
    ParameterError
        If ``y`` is not an ndarray, not floating point, not one-dimensional, or holds NaN or inf.

    Examples
    --------
    >>> valid_audio(np.zeros((2, 10), dtype=np.float32))
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: audio must be one-dimensional (mono), got shape (2, 10)
    """
    if not isinstance(y, np.ndarray):
        raise ParameterError(f"audio must be a numpy array, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"audio must be floating point, got dtype={y.dtype}")
    if y.ndim != 1:
        raise ParameterError(f"audio must be one-dimensional (mono), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ParameterError("audio holds non-finite samples (NaN or inf)")
    return y


def valid_spectrogram(magnitudes: object) -> np.ndarray:
    """Check that ``magnitudes`` is a finite, non-negative (freq x time) floating-point matrix.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], floating point

    Returns
    -------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)]

    Raises
    ------
    ParameterError
        If it is not a 2-D floating-point array of finite values.

    Examples
    --------
    >>> valid_spectrogram(np.zeros(5))
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: spectrogram must be two-dimensional (freq x time), got shape (5,)
    """
    if not isinstance(magnitudes, np.ndarray):
        raise ParameterError(f"spectrogram must be a numpy array, got {type(magnitudes).__name__}")
    if not np.issubdtype(magnitudes.dtype, np.floating):
        raise ParameterError(f"spectrogram must be floating point, got dtype={magnitudes.dtype}")
    if magnitudes.ndim != 2:
        raise ParameterError(f"spectrogram must be two-dimensional (freq x time), got shape {magnitudes.shape}")
    if not np.isfinite(magnitudes).all():
        raise ParameterError("spectrogram holds non-finite values (NaN or inf)")
    return magnitudes


def valid_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Check that a size or count parameter is an integer >= ``minimum``; return it.

    Examples
    --------
    >>> valid_int("dist_time", -1)
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: dist_time=-1 must be an integer >= 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def valid_peaks(t_frames: object, f_bins: object, magnitudes: object) -> None:
    """Check that three arrays describe peaks sorted by time, then frequency.

    Parameters
    ----------
    t_frames : np.ndarray [shape=(n_peaks,)], integer, in frames
    f_bins : np.ndarray [shape=(n_peaks,)], integer, in bins
    magnitudes : np.ndarray [shape=(n_peaks,)], floating point

    Raises
    ------
    ParameterError
        If dtypes, shapes or order are wrong, or a value is negative or not finite.

    Examples
    --------
    >>> valid_peaks(np.array([3, 1]), np.array([0, 0]), np.ones(2))
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: peaks must be sorted by t_frames, then f_bins
    """
    for name, array in (("t_frames", t_frames), ("f_bins", f_bins)):
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.integer):
            raise ParameterError(f"{name} must be an integer numpy array")
        if array.ndim != 1:
            raise ParameterError(f"{name} must be one-dimensional, got shape {array.shape}")
        if array.size and array.min() < 0:
            raise ParameterError(f"{name} must not be negative")
    if not isinstance(magnitudes, np.ndarray) or not np.issubdtype(magnitudes.dtype, np.floating):
        raise ParameterError("magnitudes must be a floating-point numpy array")
    if magnitudes.ndim != 1 or not np.isfinite(magnitudes).all():
        raise ParameterError("magnitudes must be one-dimensional and finite")
    assert isinstance(t_frames, np.ndarray) and isinstance(f_bins, np.ndarray)
    if not t_frames.shape == f_bins.shape == magnitudes.shape:
        raise ParameterError(
            f"t_frames, f_bins and magnitudes must have one length, got "
            f"{t_frames.shape}, {f_bins.shape}, {magnitudes.shape}"
        )
    if t_frames.size > 1:
        dt = np.diff(t_frames.astype(np.int64))
        df = np.diff(f_bins.astype(np.int64))
        if (dt < 0).any() or ((dt == 0) & (df <= 0)).any():
            raise ParameterError("peaks must be sorted by t_frames, then f_bins")
