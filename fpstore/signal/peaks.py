"""Constellation map: local maxima of the spectrogram, as time-sorted peak arrays.

Conventions
-----------
- ``t_frames`` are STFT frame indices, ``f_bins`` frequency bin indices, ``magnitudes`` linear STFT
  magnitudes (float32, exactly the spectrogram's values).
- Peaks are ordered by time, then by frequency: the order the seed's stable sort produces, which decides
  which target wins when magnitudes tie.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fpstore.errors import ParameterError
from fpstore.signal.validate import valid_int, valid_peaks, valid_spectrogram


class Peaks(NamedTuple):
    """Spectral peaks, sorted by ``t_frames`` then ``f_bins``.

    Attributes
    ----------
    t_frames : np.ndarray [shape=(n_peaks,), dtype=int32], in frames
    f_bins : np.ndarray [shape=(n_peaks,), dtype=int32], in bins
    magnitudes : np.ndarray [shape=(n_peaks,), dtype=float32]
    """

    t_frames: np.ndarray
    f_bins: np.ndarray
    magnitudes: np.ndarray

    def validate(self) -> Peaks:
        """Raise ParameterError unless the arrays are well-formed peaks; return self."""
        valid_peaks(self.t_frames, self.f_bins, self.magnitudes)
        return self


def constellation_map(
    magnitudes: np.ndarray, *, dist_freq: int = 12, dist_time: int = 6, thresh: float = 0.01
) -> np.ndarray:
    """Mark the points that are the maximum of their neighbourhood and louder than ``thresh``.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        Magnitude spectrogram.
    dist_freq : int
        Half-height of the neighbourhood, in bins (the window is ``2 * dist_freq + 1`` bins).
    dist_time : int
        Half-width of the neighbourhood, in frames.
    thresh : float
        Minimum magnitude of a peak (exclusive).

    Returns
    -------
    cmap : np.ndarray [shape=(n_bins, n_frames), dtype=bool]

    Raises
    ------
    ParameterError
        If ``magnitudes`` is not a finite 2-D floating-point array, or a half-size is negative.

    Examples
    --------
    >>> S = np.zeros((5, 5), dtype=np.float32); S[2, 3] = 1.0
    >>> np.argwhere(constellation_map(S, dist_freq=1, dist_time=1)).tolist()
    [[2, 3]]
    """
    valid_spectrogram(magnitudes)
    return _constellation_map(magnitudes, valid_int("dist_freq", dist_freq),
                              valid_int("dist_time", dist_time), thresh)


def _constellation_map(magnitudes: np.ndarray, dist_freq: int, dist_time: int, thresh: float) -> np.ndarray:
    # On the (time x frequency) view: a spectrogram is stored frames-major, so its frames are contiguous
    # there (the same maxima, read in memory order); the map is handed back as (frequency x time).
    by_frame = magnitudes.T
    neighbourhood_max = sliding_max(sliding_max(by_frame, dist_freq, axis=1), dist_time, axis=0)
    return np.asarray((by_frame == neighbourhood_max) & (neighbourhood_max > thresh)).T


def sliding_max(values: np.ndarray, half_width: int, *, axis: int) -> np.ndarray:
    """Maximum over a centred window of ``2 * half_width + 1`` points along ``axis``, zeros beyond the edges.

    Equal to ``scipy.ndimage.maximum_filter1d(values, 2 * half_width + 1, axis, mode="constant")``
    (the seed's filter, applied one axis at a time), exactly: a maximum involves no rounding. Windows
    double in width (2, 4, 8, ...) and the last step overlaps two of them, so a window of ``w`` points
    takes about ``log2(w)`` whole-array numpy passes (25 x 13 on a 30 s clip: 2 ms against 11 ms for
    ``scipy.ndimage.maximum_filter``; docs/speed.md).

    Parameters
    ----------
    values : np.ndarray, float
    half_width : int >= 0
        Points on each side of the centre.
    axis : int

    Returns
    -------
    window_max : np.ndarray [shape=values.shape, dtype=values.dtype]

    Examples
    --------
    >>> sliding_max(np.array([0.0, 3.0, 1.0, 0.0, 0.0, 2.0]), 1, axis=0).tolist()
    [3.0, 3.0, 3.0, 1.0, 2.0, 2.0]
    """
    n_points = values.shape[axis]
    width = 2 * half_width + 1
    padding = [(0, 0)] * values.ndim
    padding[axis] = (half_width, half_width)
    # Zero padding: out-of-range neighbours count as 0, as with mode="constant" (cval 0) in the seed.
    window_max = np.pad(values, padding)
    # Two buffers taking turns: each doubling writes the other's leading part (no array per step).
    spare = np.empty_like(window_max)
    length = window_max.shape[axis]
    covered = 1  # window_max[i] is the maximum of `covered` padded points starting at i (i < length)
    while 2 * covered <= width:
        length -= covered
        np.maximum(_take(window_max, 0, length, axis), _take(window_max, covered, length + covered, axis),
                   out=_take(spare, 0, length, axis))
        window_max, spare = spare, window_max
        covered *= 2
    return np.asarray(np.maximum(_take(window_max, 0, n_points, axis),
                                 _take(window_max, width - covered, width - covered + n_points, axis)))


def _take(values: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    index = [slice(None)] * values.ndim
    index[axis] = slice(start, stop)
    return values[tuple(index)]


def extract_peaks(magnitudes: np.ndarray, cmap: np.ndarray) -> Peaks:
    """Turn a constellation map into peak arrays sorted by time, then frequency.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        The spectrogram the map was computed from.
    cmap : np.ndarray [shape=(n_bins, n_frames), dtype=bool]
        Peak mask.

    Returns
    -------
    peaks : Peaks

    Raises
    ------
    ParameterError
        If the shapes differ or the inputs are not a spectrogram and a boolean mask.

    Examples
    --------
    >>> S = np.zeros((4, 3), dtype=np.float32); S[3, 0] = S[1, 2] = S[0, 2] = 1.0
    >>> extract_peaks(S, S > 0).f_bins.tolist()
    [3, 0, 1]
    """
    valid_spectrogram(magnitudes)
    if not isinstance(cmap, np.ndarray) or cmap.dtype != np.bool_ or cmap.shape != magnitudes.shape:
        raise ParameterError(f"cmap must be a boolean array of shape {magnitudes.shape}")
    return _extract_peaks(magnitudes, cmap)


def _extract_peaks(magnitudes: np.ndarray, cmap: np.ndarray) -> Peaks:
    # Scanning the transposed mask yields time-major order with rising frequency inside each frame:
    # the same order as the seed's stable sort of (f, t)-ordered peaks by t.
    t_frames, f_bins = np.nonzero(cmap.T)
    return Peaks(
        t_frames.astype(np.int32),
        f_bins.astype(np.int32),
        magnitudes[f_bins, t_frames].astype(np.float32, copy=False),
    )


def find_peaks(
    magnitudes: np.ndarray, *, dist_freq: int = 12, dist_time: int = 6, thresh: float = 0.01
) -> Peaks:
    """:func:`constellation_map` followed by :func:`extract_peaks`.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
    dist_freq, dist_time : int
        Neighbourhood half-sizes, in bins and frames.
    thresh : float
        Minimum peak magnitude.

    Returns
    -------
    peaks : Peaks
    """
    valid_spectrogram(magnitudes)  # once: the two steps below trust it
    neighbourhood = valid_int("dist_freq", dist_freq), valid_int("dist_time", dist_time)
    return _extract_peaks(magnitudes, _constellation_map(magnitudes, *neighbourhood, thresh))
