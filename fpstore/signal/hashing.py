"""Anchor→target pairs inside target zones, packed into 32-bit hashes, vectorised.

Conventions
-----------
- A hash packs ``(f_anchor, f_target, dt)`` as ``f_anchor << 22 | f_target << 12 | dt``: 10 bits per
  frequency bin (bins above 1023 are clipped to 1023, as the seed does), 12 bits for ``dt`` in frames.
- ``t_anchor_frames`` is the anchor's STFT frame index.
- For each anchor, the candidate targets are the later peaks (in time-then-frequency order) whose
  ``dt`` lies in ``[dt_min_frames, dt_max_frames]`` and whose ``|f_target - f_anchor| <= df_bins``. With
  ``top_k`` set, only the ``top_k`` strongest candidates are kept; among equal magnitudes the earlier
  peak wins. This is exactly the seed notebook's loop, without the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fpstore.errors import ParameterError
from fpstore.signal.params import BITS_DT, BITS_F, MAX_F, Zone
from fpstore.signal.peaks import Peaks


class ZoneHashes(NamedTuple):
    """The postings of one track in one zone.

    Attributes
    ----------
    hashes : np.ndarray [shape=(n_hashes,), dtype=uint32]
    t_anchor_frames : np.ndarray [shape=(n_hashes,), dtype=int32], in frames
    """

    hashes: np.ndarray
    t_anchor_frames: np.ndarray


def pack_hashes(f_anchor_bins: np.ndarray, f_target_bins: np.ndarray, dt_frames: np.ndarray) -> np.ndarray:
    """Pack frequency bins and time differences into 32-bit hashes.

    Parameters
    ----------
    f_anchor_bins, f_target_bins : np.ndarray [shape=(n,)], integer, in bins
        Clipped to ``0 .. 1023``.
    dt_frames : np.ndarray [shape=(n,)], integer, in frames, each in ``0 .. 4095``

    Returns
    -------
    hashes : np.ndarray [shape=(n,), dtype=uint32]

    Raises
    ------
    ParameterError
        If a ``dt_frames`` value does not fit in 12 bits.

    Examples
    --------
    >>> pack_hashes(np.array([1]), np.array([2]), np.array([3])).tolist()
    [4202499]
    """
    dt = np.asarray(dt_frames, dtype=np.int64)
    if dt.size and (dt.min() < 0 or dt.max() >= 1 << BITS_DT):
        raise ParameterError(f"dt_frames must lie in [0, {(1 << BITS_DT) - 1}]")
    f1 = np.minimum(np.asarray(f_anchor_bins, dtype=np.int64), MAX_F)
    f2 = np.minimum(np.asarray(f_target_bins, dtype=np.int64), MAX_F)
    return ((f1 << (BITS_F + BITS_DT)) | (f2 << BITS_DT) | dt).astype(np.uint32)


def zone_hashes(peaks: Peaks, zones: Sequence[Zone], *, top_k: int | None = 5) -> dict[str, ZoneHashes]:
    """Hashes of every anchor→target pair inside each target zone.

    The candidate pairs of the widest window are built once; each zone then masks them and ranks its
    own targets, so four zones cost little more than one.

    Parameters
    ----------
    peaks : Peaks
        Sorted by time, then frequency.
    zones : sequence of Zone
    top_k : int or None
        Keep the ``top_k`` strongest targets per anchor; None keeps all.

    Returns
    -------
    hashes_by_zone : dict[str, ZoneHashes]
        Keyed by zone name, in the order of ``zones``; postings are ordered by anchor, then by
        decreasing target magnitude.

    Raises
    ------
    ParameterError
        If the peaks are malformed or unsorted, or ``top_k`` is not a positive integer or None.

    Examples
    --------
    >>> p = Peaks(np.array([0, 2], dtype=np.int32), np.array([5, 6], dtype=np.int32), np.ones(2, np.float32))
    >>> zone_hashes(p, [Zone("z", 10, 1, 5)])["z"].hashes.tolist()
    [20996098]
    """
    peaks.validate()
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ParameterError(f"top_k={top_k!r} must be a positive integer or None")
    anchor, target = _candidate_pairs(
        peaks.t_frames,
        dt_min=min(zone.dt_min_frames for zone in zones),
        dt_max=max(zone.dt_max_frames for zone in zones),
    )
    t = peaks.t_frames.astype(np.int64)
    f = peaks.f_bins.astype(np.int64)
    abs_df = np.abs(f[target] - f[anchor])
    # No zone reaches beyond the widest band: dropping those pairs first shrinks the sort below.
    near = abs_df <= max(zone.df_bins for zone in zones)
    anchor, target, abs_df = anchor[near], target[near], abs_df[near]
    if top_k is not None:
        # Strongest target first; ties go to the earlier peak, as in the seed's stable sort. One
        # integer key (anchor, then the target's rank by decreasing magnitude and index) sorts faster
        # than a three-key lexsort and gives the same order.
        strength_rank = np.empty(peaks.magnitudes.size, dtype=np.int64)
        strength_rank[np.lexsort((np.arange(peaks.magnitudes.size), -peaks.magnitudes))] = np.arange(
            peaks.magnitudes.size
        )
        order = np.argsort(anchor * peaks.magnitudes.size + strength_rank[target], kind="stable")
        anchor, target, abs_df = anchor[order], target[order], abs_df[order]
    dt = t[target] - t[anchor]

    result: dict[str, ZoneHashes] = {}
    for zone in zones:
        inside = (dt >= zone.dt_min_frames) & (dt <= zone.dt_max_frames) & (abs_df <= zone.df_bins)
        zone_anchor, zone_target = anchor[inside], target[inside]
        if top_k is not None:
            keep = _rank_within_groups(zone_anchor) < top_k
            zone_anchor, zone_target = zone_anchor[keep], zone_target[keep]
        result[zone.name] = ZoneHashes(
            pack_hashes(f[zone_anchor], f[zone_target], t[zone_target] - t[zone_anchor]),
            peaks.t_frames[zone_anchor].astype(np.int32),
        )
    return result


def _rank_within_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal keys (``sorted_keys`` is sorted), in O(n)."""
    positions = np.arange(sorted_keys.size)
    starts = np.ones(sorted_keys.size, dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return positions - np.maximum.accumulate(np.where(starts, positions, 0))


def _candidate_pairs(t_frames: np.ndarray, *, dt_min: int, dt_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``j > i``, with ``dt_min <= t[j] - t[i] <= dt_max``, ordered by i then j."""
    n = t_frames.size
    t = t_frames.astype(np.int64)
    first = np.maximum(np.searchsorted(t, t + dt_min, side="left"), np.arange(1, n + 1))
    stop = np.searchsorted(t, t + dt_max, side="right")
    counts = np.maximum(stop - first, 0)
    anchor = np.repeat(np.arange(n), counts)
    group_start = np.cumsum(counts) - counts
    target = first[anchor] + (np.arange(anchor.size) - group_start[anchor])
    return anchor, target


def hash_keys(hashes: np.ndarray) -> np.ndarray:
    """The stored form of hashes: the same 32 bits read as signed integers (SQL ``integer``).

    Parameters
    ----------
    hashes : np.ndarray [shape=(n,), dtype=uint32]

    Returns
    -------
    keys : np.ndarray [shape=(n,), dtype=int32]
        A view when ``hashes`` is already uint32.

    Examples
    --------
    >>> hash_keys(np.array([1, 2**32 - 1], dtype=np.uint32)).tolist()
    [1, -1]
    """
    return np.asarray(hashes, dtype=np.uint32).view(np.int32)
