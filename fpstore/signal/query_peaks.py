"""Query-side peak picking for noisy queries: other peaks than the stored side's, the same hashes where it counts.

The stored side's peaks are fixed by parity (the seed's neighbourhood, threshold and five targets per
anchor). A query's hashes only have to coincide with stored ones, so a query may pick its peaks
otherwise. Under loud noise the stored recording's peaks are still in the query's spectrogram, but
outranked: a noise peak is the largest point of their neighbourhood, or a noise peak is among an
anchor's five strongest targets. A :class:`QueryPicking` takes back what noise took:

- a smaller neighbourhood (``dist_freq``, ``dist_time``): more peaks per region, so a true peak that is
  no longer the maximum of the stored neighbourhood can still be a peak;
- more targets per anchor (``top_k_targets``): a true target that noise peaks outrank still pairs;
- a whitened spectrogram (``whiten``): each bin divided by its own floor, a quantile of its magnitude
  over the query's frames (:func:`spectral_floor`; the median, or the lower quartile), so that peaks
  and target strengths are picked on how far the music stands above the noise of its band, not on the
  noise's own loudness (pink noise puts most of its energy in the low bins, where most stored peaks lie);
- a dereverberated spectrogram (``decay``): each bin less the largest of its earlier magnitudes, decayed
  by ``decay`` per frame since (:func:`rising_spectrogram`), so that a room's reverberant tail, which
  prolongs every note, no longer outranks the music's next peaks of its neighbourhood.

The extra hashes cost lookups and chance votes; the matcher's null measures the chance votes
(:mod:`fpstore.matching`, :class:`fpstore.matching.evidence.Evidence`).

Conventions
-----------
- Magnitudes are linear STFT magnitudes, (frequency bins x time frames); times are STFT frames
  (``hop_length`` samples at ``sample_rate`` Hz), frequencies STFT bins.
- A whitened magnitude is a ratio to the bin's floor (dimensionless); ``peak_thresh`` always applies to
  the linear magnitude, as on the stored side, so silence gives no peak either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpstore.errors import ParameterError
from fpstore.signal.analysis import Fingerprint, fingerprint_from_peaks
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import Peaks, constellation_map, extract_peaks, find_peaks
from fpstore.signal.spectrogram import magnitude_spectrogram
from fpstore.signal.validate import valid_int, valid_spectrogram

#: Smallest floor a bin is divided by when ``peak_thresh`` is 0 (a silent bin must not divide by zero).
MIN_FLOOR = 1e-12


@dataclass(frozen=True)
class QueryPicking:
    """How a query picks its peaks and targets (the stored side keeps its parameters' own).

    Attributes
    ----------
    dist_freq, dist_time : int >= 0
        Half-size of the neighbourhood a peak is the maximum of, in bins and frames (the stored side's
        are ``FingerprintParams.peak_dist_freq`` and ``peak_dist_time``, 12 and 6 by default).
    top_k_targets : int >= 1 or None
        Strongest targets kept per anchor and zone; None keeps every target in the zone.
    whiten : bool
        Pick peaks and rank targets on :func:`whiten_spectrogram` instead of the magnitudes.
    floor_quantile : float in (0, 1)
        With ``whiten``: the quantile of a bin's magnitude over the query's frames taken as its floor
        (0.5, the median; a lower one is less raised by the notes music holds in that bin).
    floor_ratio : float >= 0
        With ``whiten``: a peak must stand more than this many times above its bin's floor (0: any
        peak). The largest point of a neighbourhood of stationary noise stands a few times above the
        floor (over the lower quartile, with the seed's neighbourhood: 4.8 at the median for white or
        pink noise, 5.7 at the 90th percentile), so a ratio of 5 drops most peaks noise alone makes.
    decay : float in [0, 1)
        0: off. Else peaks are picked on :func:`rising_spectrogram` with this decay per frame (before
        whitening, when ``whiten`` is set too), and the targets ranked on it.
    shifts : int >= 1 or None
        For a look of its own (:attr:`fpstore.matching.evidence.Evidence.own_picks`): the number of
        sub-hop shifts it is fingerprinted at (None: the evidence's; 2 are the first and the third of
        4, whose spectrograms the look then shares). A pooled selection (``Evidence.picks``) is taken
        at every shift of the evidence.

    Raises
    ------
    ParameterError
        If a half-size is negative, ``top_k_targets`` is not a positive integer or None,
        ``floor_quantile`` is not in (0, 1), ``floor_ratio`` is not a finite number >= 0, ``decay`` is
        not in [0, 1), or ``shifts`` is not a positive integer or None.

    Examples
    --------
    >>> QueryPicking(dist_freq=-1)
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: dist_freq=-1 must be an integer >= 0
    """

    dist_freq: int = 12
    dist_time: int = 6
    top_k_targets: int | None = 5
    whiten: bool = False
    floor_quantile: float = 0.5
    floor_ratio: float = 0.0
    decay: float = 0.0
    shifts: int | None = None

    def __post_init__(self) -> None:
        valid_int("dist_freq", self.dist_freq)
        valid_int("dist_time", self.dist_time)
        if self.top_k_targets is not None:
            valid_int("top_k_targets", self.top_k_targets, minimum=1)
        if not isinstance(self.whiten, bool):
            raise ParameterError(f"whiten={self.whiten!r} must be True or False")
        if isinstance(self.floor_quantile, bool) or not isinstance(self.floor_quantile, (int, float)) or not (
                0 < self.floor_quantile < 1):
            raise ParameterError(f"floor_quantile={self.floor_quantile!r} must be a number in (0, 1)")
        if isinstance(self.floor_ratio, bool) or not isinstance(self.floor_ratio, (int, float)) or not (
                np.isfinite(self.floor_ratio) and self.floor_ratio >= 0):
            raise ParameterError(f"floor_ratio={self.floor_ratio!r} must be a finite number >= 0")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 <= self.decay < 1:
            raise ParameterError(f"decay={self.decay!r} must be a number in [0, 1)")
        if self.shifts is not None:
            valid_int("shifts", self.shifts, minimum=1)

    @classmethod
    def stored(cls, params: FingerprintParams) -> QueryPicking:
        """The stored side's picking: with it, :func:`query_fingerprint` gives the stored fingerprint."""
        return cls(params.peak_dist_freq, params.peak_dist_time, params.top_k_targets, False)


#: The seed's neighbourhood and five targets per anchor, picked on the whitened spectrogram.
WHITENED = QueryPicking(whiten=True)
#: The same, each bin's floor its lower quartile over the query, and only the peaks more than five times
#: above it: the default's whitened look (:attr:`fpstore.matching.evidence.Evidence.own_picks`; the
#: quartile chosen over the median on devlarge's hard set, benchmarks/results/2026-12-07-recognition-noise.md;
#: the ratio drops the peaks noise alone makes, benchmarks/results/2026-12-07-recognition-looks.md).
WHITENED_LOOK = QueryPicking(whiten=True, floor_quantile=0.25, floor_ratio=5.0)
#: The seed's neighbourhood and four targets per anchor, picked on the dereverberated spectrogram (decay
#: 0.5 per frame, 6 dB per 46 ms frame) at two shifts: a look for reverberant queries, an option
#: (:attr:`fpstore.matching.evidence.Evidence.own_picks` after the whitened look; not in the default:
#: benchmarks/results/2026-12-08-recognition.md).
DEREVERBERATED_LOOK = QueryPicking(top_k_targets=4, decay=0.5, shifts=2)


def spectral_floor(magnitudes: np.ndarray, quantile: float = 0.5) -> np.ndarray:
    """Each bin's noise floor as the query sees it: a quantile of its magnitude over time.

    Music moves from bin to bin while stationary noise stays, so over a few seconds the median of a
    bin is mostly the noise's level there (and the music's own level where it holds a note); a lower
    quantile is less raised by the notes.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        Linear magnitudes, at least one frame.
    quantile : float in (0, 1)
        0.5: the median.

    Returns
    -------
    floor : np.ndarray [shape=(n_bins, 1)], the dtype of ``magnitudes``

    Raises
    ------
    ParameterError
        If ``magnitudes`` is not a finite, non-negative 2-D floating-point array with a frame.

    Examples
    --------
    >>> spectral_floor(np.array([[1.0, 5.0, 2.0], [0.0, 0.0, 4.0]])).ravel().tolist()
    [2.0, 0.0]
    >>> spectral_floor(np.array([[1.0, 5.0, 2.0], [0.0, 0.0, 4.0]]), 0.25).ravel().tolist()
    [1.5, 0.0]
    """
    valid_spectrogram(magnitudes)
    if magnitudes.shape[1] == 0:
        raise ParameterError("magnitudes must hold at least one frame to estimate a floor")
    # np.median for the median: the floors the whitened picks were first measured with, to the last bit.
    floor: np.ndarray = (np.median(magnitudes, axis=1, keepdims=True) if quantile == 0.5
                         else np.quantile(magnitudes, quantile, axis=1, keepdims=True))
    return floor.astype(magnitudes.dtype, copy=False)


def whiten_spectrogram(magnitudes: np.ndarray, *, min_floor: float = MIN_FLOOR, quantile: float = 0.5) -> np.ndarray:
    """Each bin divided by its floor (:func:`spectral_floor` at ``quantile``), the floor raised to ``min_floor`` at least.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        Linear magnitudes, at least one frame.
    min_floor : float > 0
        Lowest floor divided by: a bin that is silent most of the time (a band-limited query) is
        then divided by this, not by zero or a rounding error.
    quantile : float in (0, 1)
        Of :func:`spectral_floor`.

    Returns
    -------
    whitened : np.ndarray [shape=(n_bins, n_frames)], the dtype of ``magnitudes``, dimensionless

    Raises
    ------
    ParameterError
        If ``magnitudes`` is not a spectrogram with a frame, or ``min_floor`` is not a positive number.

    Examples
    --------
    >>> whiten_spectrogram(np.array([[1.0, 4.0, 2.0], [0.0, 0.5, 0.0]]), min_floor=0.25).tolist()
    [[0.5, 2.0, 1.0], [0.0, 2.0, 0.0]]
    """
    if isinstance(min_floor, bool) or not isinstance(min_floor, (int, float)) or not (
            np.isfinite(min_floor) and min_floor > 0):
        raise ParameterError(f"min_floor={min_floor!r} must be a positive number")
    floor = np.maximum(spectral_floor(magnitudes, quantile), magnitudes.dtype.type(min_floor))
    return np.asarray(magnitudes / floor, dtype=magnitudes.dtype)


def rising_spectrogram(magnitudes: np.ndarray, decay: float) -> np.ndarray:
    """Each bin less the largest of its earlier magnitudes decayed by ``decay`` per frame since, clipped at 0.

    ``R[f, t] = max(S[f, t] - max_{k < t} S[f, k] * decay ** (t - k), 0)``: a note's reverberant tail
    decays from the note's own peak, so it is taken off, while a bin that rises above the tail keeps
    what it rose by. Computed in the log domain as a running maximum (no loop over frames).

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        Linear magnitudes.
    decay : float in (0, 1)
        Of a tail, per frame.

    Returns
    -------
    rising : np.ndarray [shape=(n_bins, n_frames)], the dtype of ``magnitudes``
        The first frame is the magnitudes' own.

    Raises
    ------
    ParameterError
        If ``magnitudes`` is not a spectrogram, or ``decay`` is not in (0, 1).

    Examples
    --------
    >>> rising_spectrogram(np.array([[4.0, 2.0, 1.0, 3.0]]), 0.5).tolist()
    [[4.0, 0.0, 0.0, 2.5]]
    """
    valid_spectrogram(magnitudes)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise ParameterError(f"decay={decay!r} must be a number in (0, 1)")
    log_magnitudes = np.log(np.maximum(magnitudes.astype(np.float64), MIN_FLOOR))
    frames = np.arange(magnitudes.shape[1])
    log_decay = np.log(decay)
    # max_{k <= t} (log S[k] + (t - k) log a) = t log a + the running maximum of (log S[k] - k log a).
    tail = np.maximum.accumulate(log_magnitudes - frames * log_decay, axis=1) + frames * log_decay
    earlier = np.zeros(magnitudes.shape, dtype=np.float64)
    earlier[:, 1:] = np.exp(tail[:, :-1] + log_decay)
    return np.maximum(magnitudes - earlier, 0).astype(magnitudes.dtype, copy=False)


def pick_query_peaks(magnitudes: np.ndarray, picking: QueryPicking, *, thresh: float) -> Peaks:
    """The query's peaks under ``picking``: maxima of their neighbourhood, louder than ``thresh``.

    Parameters
    ----------
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float
        Linear magnitudes of the query.
    picking : QueryPicking
    thresh : float
        A peak's linear magnitude must exceed it (``FingerprintParams.peak_thresh``), whitened or not.

    Returns
    -------
    peaks : Peaks
        Sorted by time, then frequency; ``magnitudes`` are the whitened values when ``picking.whiten``
        (they rank the targets), else the linear ones.

    Raises
    ------
    ParameterError
        If ``magnitudes`` is not a spectrogram.

    Examples
    --------
    >>> S = np.zeros((30, 4), dtype=np.float32); S[10, 1] = 1.0; S[2, 2] = 9.0
    >>> pick_query_peaks(S, QueryPicking(5, 1), thresh=0.01).f_bins.tolist()
    [10, 2]
    >>> pick_query_peaks(S, QueryPicking(12, 6), thresh=0.01).f_bins.tolist()
    [2]
    """
    valid_spectrogram(magnitudes)
    if not picking.whiten and not picking.decay:
        return find_peaks(magnitudes, dist_freq=picking.dist_freq, dist_time=picking.dist_time, thresh=thresh)
    picked_on = rising_spectrogram(magnitudes, picking.decay) if picking.decay else magnitudes
    keep = magnitudes > thresh
    if picking.decay:
        keep &= picked_on > 0
    if picking.whiten:
        picked_on = whiten_spectrogram(picked_on, min_floor=max(float(thresh), MIN_FLOOR),
                                       quantile=picking.floor_quantile)
        keep &= picked_on > picking.floor_ratio
    cmap = constellation_map(picked_on, dist_freq=picking.dist_freq, dist_time=picking.dist_time, thresh=0.0)
    return extract_peaks(picked_on, cmap & keep)


def query_fingerprint(y: np.ndarray, params: FingerprintParams, picking: QueryPicking, *,
                      magnitudes: np.ndarray | None = None) -> Fingerprint:
    """Fingerprint a query with its own peak picking; the hashes mean what the stored ones mean.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, mono, at ``params.sample_rate`` Hz
    params : FingerprintParams
        The database's: STFT, zones and threshold (the peak neighbourhood and targets per anchor come
        from ``picking``).
    picking : QueryPicking
    magnitudes : np.ndarray [shape=(n_bins, n_frames)], float32, or None
        ``y``'s spectrogram with ``params`` (:func:`fpstore.signal.spectrogram.magnitude_spectrogram`)
        when it is known already; None computes it.

    Returns
    -------
    fingerprint : Fingerprint
        With ``QueryPicking.stored(params)``, the fingerprint :func:`fpstore.signal.fingerprint.
        fingerprint_signal` gives.

    Raises
    ------
    ParameterError
        As :func:`fpstore.signal.fingerprint.fingerprint_signal` does, for ``y`` that
        :func:`fpstore.signal.validate.valid_audio` refuses; it warns as that function does too.
    """
    if magnitudes is None:
        magnitudes = magnitude_spectrogram(y, n_fft=params.n_fft, hop_length=params.hop_length, bin_max=params.bin_max)
    peaks = pick_query_peaks(magnitudes, picking, thresh=params.peak_thresh)
    hashes = zone_hashes(peaks, params.zones, top_k=picking.top_k_targets)
    return fingerprint_from_peaks(peaks, hashes, params, n_samples=y.size, n_frames=int(magnitudes.shape[1]))
