"""More evidence from one query: fingerprints at sub-hop shifts and at candidate speed factors.

A query's STFT frames fall anywhere between the stored frames: at half a hop off, the spectral peaks
are found at different frames and magnitudes, and most hashes stop aligning. Fingerprinting the query
again after dropping a quarter, half and three quarters of a hop of samples puts one of the shifts
within an eighth of a hop of the stored grid (:func:`shift_samples`).

Audio played faster by a factor ``f`` has every frequency multiplied by ``f`` and every time divided by
``f``: its hashes are different numbers. Resampling the query so that it lasts ``f`` times longer
(:func:`change_speed`) undoes both, so the stored hashes come back; the matcher tries a few factors.

Conventions
-----------
- Audio is mono float32 at ``params.sample_rate`` Hz; shifts are samples, speed factors are the rate
  at which the query was played relative to the stored recording (1.02: 2 % faster).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from fpstore.errors import ParameterError
from fpstore.signal.analysis import Fingerprint, analyze, fingerprint_from_peaks
from fpstore.signal.audio import RESAMPLE_QUALITY
from fpstore.signal.params import FingerprintParams
from fpstore.signal.query_peaks import QueryPicking, query_fingerprint
from fpstore.signal.validate import valid_audio

#: Speed factors allowed: a few percent either way is what radio speed-ups and tape drift give.
SPEED_RANGE = (0.8, 1.25)
#: Shifts allowed per hop (beyond 16, shifts are closer than the peak picker's resolution).
MAX_SHIFTS = 16


@dataclass(frozen=True)
class SpeedVariant:
    """The query as if played at one speed factor, fingerprinted at each sub-hop shift.

    Attributes
    ----------
    speed : float
        Factor the query is assumed to have been played at (its resampling undoes it).
    fingerprints : tuple of Fingerprint
        One per shift of :func:`shift_samples`, in that order (the unshifted one first), each followed
        by the same shift under every extra peak picking of :func:`speed_variant`.
    """

    speed: float
    fingerprints: tuple[Fingerprint, ...]


def check_variants(shifts: int, speeds: Sequence[float]) -> tuple[float, ...]:
    """Validate the shift count and speed factors once; return the factors with 1.0 first, no repeats.

    Examples
    --------
    >>> check_variants(4, [1.02, 0.98, 1.0, 1.02])
    (1.0, 1.02, 0.98)
    """
    if isinstance(shifts, bool) or not isinstance(shifts, int) or not 1 <= shifts <= MAX_SHIFTS:
        raise ParameterError(f"shifts={shifts!r} must be an integer in [1, {MAX_SHIFTS}]")
    factors: list[float] = [1.0]
    for speed in speeds:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not (
            math.isfinite(speed) and SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]
        ):
            raise ParameterError(f"speed factor {speed!r} must be a number in [{SPEED_RANGE[0]}, {SPEED_RANGE[1]}]")
        if float(speed) not in factors:
            factors.append(float(speed))
    return tuple(factors)


def shift_samples(shifts: int, hop_length: int) -> tuple[int, ...]:
    """Sample offsets of ``shifts`` evenly spaced sub-hop shifts, the first 0.

    Examples
    --------
    >>> shift_samples(4, 1024)
    (0, 256, 512, 768)
    """
    return tuple(round(k * hop_length / shifts) for k in range(shifts))


def change_speed(y: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """Undo a playback at ``speed``: resample so the signal lasts ``speed`` times longer, pitch included.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32
    speed : float
        1.0 returns ``y`` itself.
    sample_rate : int, Hz

    Returns
    -------
    y_slowed : np.ndarray [shape=(~n * speed,)], float32
    """
    if speed == 1.0:
        return y
    resampled: np.ndarray = soxr.resample(y, sample_rate, sample_rate * speed, quality=RESAMPLE_QUALITY)
    return resampled.astype(np.float32, copy=False)


def speed_variant(y: np.ndarray, params: FingerprintParams, speed: float, shifts: int,
                  unshifted: SpeedVariant | None = None, pickings: Sequence[QueryPicking] = (), *,
                  spectrograms: dict[int, np.ndarray] | None = None) -> SpeedVariant:
    """Fingerprint ``y`` as if played at ``speed``, at each of ``shifts`` sub-hop shifts.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, mono, at ``params.sample_rate`` Hz
    params : FingerprintParams
    speed : float
        A factor accepted by :func:`check_variants`.
    shifts : int
        Sub-hop shifts (1: the query as it is).
    unshifted : SpeedVariant or None
        The same speed already fingerprinted without shifts: its fingerprint is reused.
    pickings : sequence of QueryPicking
        Extra peak selections (:mod:`fpstore.signal.query_peaks`): each shift is fingerprinted under
        each of them too, after its fingerprint with the stored side's picking.
    spectrograms : dict or None
        Magnitude spectrograms of this speed's shifts, by the samples dropped (:func:`shift_samples`):
        each shift fingerprinted here adds its own, and :func:`picked_variant` reads them instead of
        computing them again. None keeps none.

    Returns
    -------
    variant : SpeedVariant

    Examples
    --------
    >>> y = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    >>> v = speed_variant(y, FingerprintParams(), 1.0, 2)
    >>> len(v.fingerprints), v.fingerprints[0].n_frames - v.fingerprints[1].n_frames
    (2, 0)
    """
    check_variants(shifts, [speed])
    slowed = change_speed(valid_audio(y), speed, params.sample_rate)
    offsets = shift_samples(shifts, params.hop_length)
    fingerprints: list[Fingerprint] = []
    for offset in offsets:
        if offset == 0 and unshifted is not None:
            assert unshifted.speed == speed, "the unshifted variant must be of the same speed"
            fingerprints.append(unshifted.fingerprints[0])
        else:
            analysis = analyze(slowed[offset:], params)  # fingerprint_signal's steps, its spectrogram kept
            fingerprints.append(fingerprint_from_peaks(analysis.peaks, analysis.zones, params,
                                                       n_samples=slowed[offset:].size, n_frames=analysis.n_frames))
            if spectrograms is not None:
                spectrograms[offset] = analysis.magnitudes
        magnitudes = None if spectrograms is None else spectrograms.get(offset)
        fingerprints.extend(query_fingerprint(slowed[offset:], params, picking, magnitudes=magnitudes)
                            for picking in pickings)
    return SpeedVariant(speed, tuple(fingerprints))


def picked_variant(y: np.ndarray, params: FingerprintParams, shifts: int,
                   pickings: Sequence[QueryPicking], *, spectrograms: dict[int, np.ndarray] | None = None) -> SpeedVariant:
    """Fingerprint ``y`` at speed 1.0, at each of ``shifts`` sub-hop shifts, under the ``pickings`` only.

    Unlike :func:`speed_variant`, the stored side's picking is left out: the variant is a look of its
    own (:attr:`fpstore.matching.evidence.Evidence.own_picks`), not extra hashes pooled with the stored ones.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, mono, at ``params.sample_rate`` Hz
    params : FingerprintParams
    shifts : int
        Sub-hop shifts (1: the query as it is).
    pickings : sequence of QueryPicking
        Peak selections (:mod:`fpstore.signal.query_peaks`), at least one.
    spectrograms : dict or None
        Spectrograms of the shifts already computed at speed 1.0 (:func:`speed_variant`'s), by the
        samples dropped; the others are computed.

    Returns
    -------
    variant : SpeedVariant
        Speed 1.0; per shift, one fingerprint per picking, in that order.

    Examples
    --------
    >>> from fpstore.signal.query_peaks import WHITENED
    >>> y = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    >>> len(picked_variant(y, FingerprintParams(), 4, [WHITENED]).fingerprints)
    4
    """
    check_variants(shifts, [1.0])
    if not pickings:
        raise ParameterError("picked_variant needs at least one peak picking")
    y = valid_audio(y)
    known = {} if spectrograms is None else spectrograms
    return SpeedVariant(1.0, tuple(query_fingerprint(y[offset:], params, picking, magnitudes=known.get(offset))
                                   for offset in shift_samples(shifts, params.hop_length) for picking in pickings))
