"""The offset-histogram vote on arrays: pairing fetched postings with query hashes, and counting bins.

Pure numpy, no database: :mod:`fpstore.matching.ranking` fetches the postings and calls these.

Conventions
-----------
- Times and offsets are STFT frames; an offset is ``t_anchor - t_query``.
- Ranking: votes descending, then track id ascending; a track's offset is the smallest offset among
  its fullest bins.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fpstore.errors import ParameterError
from fpstore.signal.hashing import hash_keys


def vote(track_ids: np.ndarray, offsets_frames: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offset-histogram vote: count postings per ``(track, offset)`` bin, keep each track's fullest bin.

    Parameters
    ----------
    track_ids : np.ndarray [shape=(n,)], integer
        Track of each matching posting.
    offsets_frames : np.ndarray [shape=(n,)], integer, in frames
        ``t_anchor - t_query`` of each matching posting.
    top_k : int
        How many tracks to return.

    Returns
    -------
    track_ids : np.ndarray [shape=(k,), dtype=int64]
    votes : np.ndarray [shape=(k,), dtype=int64]
    offsets_frames : np.ndarray [shape=(k,), dtype=int64]
        Ranked by votes descending, then track id; ``k <= top_k``.

    Raises
    ------
    ParameterError
        If the arrays differ in shape or ``top_k < 1``.

    Examples
    --------
    >>> vote(np.array([7, 7, 7, 3]), np.array([5, 5, 9, 2]), top_k=2)
    (array([7, 3]), array([2, 1]), array([5, 2]))
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ParameterError(f"top_k={top_k!r} must be an integer >= 1")
    ranked_tracks, votes, offsets, _ = vote_bins(*counted_bins(track_ids, offsets_frames), top_k=top_k)
    return ranked_tracks, votes, offsets


def counted_bins(track_ids: np.ndarray, offsets_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(track, offset)`` bins that got a vote, sorted by track then offset, and the votes in each.

    Parameters
    ----------
    track_ids, offsets_frames : np.ndarray [shape=(n,)], integer
        Track and offset (frames) of each vote.

    Returns
    -------
    bin_tracks, bin_offsets, counts : np.ndarray [shape=(b,), dtype=int64]

    Raises
    ------
    ParameterError
        If the arrays differ in shape or are not 1-d.

    Examples
    --------
    >>> counted_bins(np.array([7, 3, 7]), np.array([5, 2, 5]))
    (array([3, 7]), array([2, 5]), array([1, 2]))
    """
    tracks = np.asarray(track_ids, dtype=np.int64)
    offsets = np.asarray(offsets_frames, dtype=np.int64)
    if tracks.shape != offsets.shape or tracks.ndim != 1:
        raise ParameterError(f"track_ids {tracks.shape} and offsets_frames {offsets.shape} must be 1-d, same shape")
    if tracks.size == 0:
        return tracks, offsets, np.empty(0, np.int64)
    # One int64 key per bin: track in the high half, offset (shifted to be non-negative) in the low half.
    # Sorted, equal keys are runs: a bin per run, and a track's bins are contiguous in offset order.
    shift = offsets.min()
    keys = (tracks << 32) | (offsets - shift)
    if not _is_sorted(keys):
        keys.sort()
    bin_starts = np.flatnonzero(_starts_of_runs(keys))
    bins = keys[bin_starts]
    return bins >> 32, (bins & 0xFFFFFFFF) + shift, _run_lengths(bin_starts, keys.size)


def vote_bins(bin_tracks: np.ndarray, bin_offsets: np.ndarray, counts: np.ndarray, *,
              top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The vote of counted bins: each track's fullest bin, the tracks ranked, and each one's votes in all.

    Parameters
    ----------
    bin_tracks, bin_offsets, counts : np.ndarray [shape=(b,)], int64
        Bins sorted by track, then offset (no bin twice), and the votes each holds
        (:func:`counted_bins`, :func:`anchor_bins`).
    top_k : int
        How many tracks to return.

    Returns
    -------
    track_ids, votes, offsets_frames, total_votes : np.ndarray [shape=(k,), dtype=int64]
        Ranked by votes (the fullest bin's) descending, then track id; the offset is the smallest
        among the track's fullest bins; ``total_votes`` the track's votes over all its bins.

    Examples
    --------
    >>> vote_bins(np.array([3, 7, 7]), np.array([2, 5, 9]), np.array([1, 2, 1]), top_k=2)
    (array([7, 3]), array([2, 1]), array([5, 2]), array([3, 1]))
    """
    if bin_tracks.size == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, empty
    track_starts = np.flatnonzero(_starts_of_runs(bin_tracks))
    fullest = np.maximum.reduceat(counts, track_starts)
    at_fullest = np.flatnonzero(counts == np.repeat(fullest, _run_lengths(track_starts, counts.size)))
    # Per track, its first bin at the maximum: the smallest offset among its fullest bins.
    best_offsets = bin_offsets[at_fullest[_starts_of_runs(bin_tracks[at_fullest])]]
    voted_tracks = bin_tracks[track_starts]
    # Votes descending, then track ascending, as one int64 key per track (both fit in 31 bits).
    ranking = ((fullest.max() - fullest) << 32) | voted_tracks
    k = min(top_k, ranking.size)
    top = np.argpartition(ranking, k - 1)[:k] if k < ranking.size else np.arange(k)
    top = top[np.argsort(ranking[top])]
    return (voted_tracks[top], fullest[top].astype(np.int64), best_offsets[top],
            np.add.reduceat(counts, track_starts)[top])


def _run_lengths(run_starts: np.ndarray, size: int) -> np.ndarray:
    """Lengths of the runs starting at ``run_starts`` (ascending, the first 0) in an array of ``size`` elements."""
    lengths = np.empty(run_starts.size, dtype=np.int64)
    np.subtract(run_starts[1:], run_starts[:-1], out=lengths[:-1])
    lengths[-1:] = size - run_starts[-1:]
    return lengths


def _is_sorted(values: np.ndarray) -> bool:
    """True if the 1-d array is in ascending order (one pass, cheaper than sorting it again)."""
    return bool((values[1:] >= values[:-1]).all())


def _starts_of_runs(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the elements that differ from their predecessor (the first one included)."""
    starts = np.empty(values.size, dtype=bool)
    starts[:1] = True
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    return starts


def query_keys(zone_ids_of_hashes: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``(zone, stored hash)`` keys of a query, sorted, and where each query hash went.

    Sorted keys make the server's index probes walk the B-tree in order (fewer pages touched), and a
    hash repeated in the query is probed once.

    Parameters
    ----------
    zone_ids_of_hashes : np.ndarray [shape=(n,)], integer
        ``zones.id`` of each query hash.
    hashes : np.ndarray [shape=(n,), dtype=uint32]

    Returns
    -------
    key_zones : np.ndarray [shape=(k,), dtype=int16]
    key_hashes : np.ndarray [shape=(k,), dtype=int32]
        The stored (signed) form of the hash.
    key_of_hash : np.ndarray [shape=(n,), dtype=int64]
        Index into the keys of each query hash.
    """
    combined = (np.asarray(zone_ids_of_hashes, dtype=np.int64) << 32) | np.asarray(hashes, dtype=np.uint32).astype(np.int64)
    keys, key_of_hash = np.unique(combined, return_inverse=True)
    key_zones = (keys >> 32).astype(np.int16)
    key_hashes = hash_keys((keys & 0xFFFFFFFF).astype(np.uint32))
    return key_zones, key_hashes, key_of_hash.reshape(-1)


def pair_indices(key_of_posting: np.ndarray, key_of_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (fetched posting, query hash) pair of equal key, as two index arrays.

    Parameters
    ----------
    key_of_posting : np.ndarray [shape=(m,)], integer
        Key index of each fetched posting.
    key_of_hash : np.ndarray [shape=(n,)], integer
        Key index of each query hash (from :func:`query_keys`).

    Returns
    -------
    posting_index, hash_index : np.ndarray [shape=(p,), dtype=int64]

    Examples
    --------
    >>> pair_indices(np.array([1, 0]), np.array([0, 1, 1]))
    (array([0, 0, 1]), array([1, 2, 0]))
    """
    key_of_hash = np.asarray(key_of_hash, dtype=np.int64)
    order = np.argsort(key_of_hash, kind="stable")
    n_keys = int(key_of_hash.max()) + 1 if key_of_hash.size else 0
    per_key = np.bincount(key_of_hash, minlength=n_keys)
    first = np.concatenate([[0], np.cumsum(per_key)[:-1]]) if n_keys else np.empty(0, np.int64)
    key_of_posting = np.asarray(key_of_posting, dtype=np.int64)
    repeats = per_key[key_of_posting]
    posting = np.repeat(np.arange(key_of_posting.size), repeats)
    # k-th repetition of a posting pairs with the k-th query hash of its key
    rank = np.arange(posting.size) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    return posting, order[first[key_of_posting[posting]] + rank]


def pairs_by_hash(key_of_posting: np.ndarray, key_of_hash: np.ndarray,
                  n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of :func:`pair_indices`, ordered by query hash, for postings in key order.

    Each key's postings are then one run, and each query hash pairs with its key's run: no sort.

    Parameters
    ----------
    key_of_posting : np.ndarray [shape=(m,)], integer, ascending
        Key index of each fetched posting.
    key_of_hash : np.ndarray [shape=(n,)], integer
        Key index of each query hash (from :func:`query_keys`).
    n_keys : int
        Number of keys (every index above is below it).

    Returns
    -------
    posting_index, hash_index : np.ndarray [shape=(p,), dtype=int64]
        ``hash_index`` ascending; within a hash, its key's postings in order.

    Examples
    --------
    >>> pairs_by_hash(np.array([0, 1, 1]), np.array([1, 0, 1]), 2)
    (array([1, 2, 0, 1, 2]), array([0, 0, 1, 2, 2]))
    """
    per_key = np.bincount(np.asarray(key_of_posting, dtype=np.int64), minlength=n_keys)
    key_of_hash = np.asarray(key_of_hash, dtype=np.int64)
    repeats = per_key[key_of_hash]
    # The run of hash h's key starts at first[key]; its k-th pair is first[key] + k.
    first_of_hash = (np.cumsum(per_key) - per_key)[key_of_hash]
    pair_starts = np.cumsum(repeats) - repeats
    posting = np.arange(int(repeats.sum()), dtype=np.int64) + np.repeat(first_of_hash - pair_starts, repeats)
    return posting, np.repeat(np.arange(key_of_hash.size, dtype=np.int64), repeats)


def expand_matches(key_of_posting: np.ndarray, t_anchor: np.ndarray, track_ids: np.ndarray,
                   key_of_hash: np.ndarray, t_query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair every fetched posting with every query hash of the same key: ``(track_ids, t_anchor - t_query)``.

    Parameters
    ----------
    key_of_posting : np.ndarray [shape=(m,)], integer
        Key index of each fetched posting.
    t_anchor, track_ids : np.ndarray [shape=(m,)], integer
        The fetched postings; ``t_anchor`` in frames.
    key_of_hash : np.ndarray [shape=(n,)], integer
        Key index of each query hash (from :func:`query_keys`).
    t_query : np.ndarray [shape=(n,)], integer, in frames

    Returns
    -------
    track_ids : np.ndarray [shape=(p,), dtype=int64]
    offsets_frames : np.ndarray [shape=(p,), dtype=int64]
    """
    posting, query_hash = pair_indices(key_of_posting, key_of_hash)
    return (np.asarray(track_ids, dtype=np.int64)[posting],
            np.asarray(t_anchor, dtype=np.int64)[posting] - np.asarray(t_query, dtype=np.int64)[query_hash])


def distinct_anchor_votes(track_ids: np.ndarray, t_anchor_frames: np.ndarray, offsets_frames: np.ndarray, *,
                          tolerance: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One vote per stored anchor and ``(track, offset)`` bin, from every (posting, query hash) pair.

    A stored anchor is a ``(track, t_anchor)``; in a bin it is the same vote whichever of its targets,
    zones or query shifts brought it, so the votes are the distinct ``(track, offset, t_anchor)`` of
    the pairs. With an offset tolerance, each pair votes at ``offset + d`` for every ``|d| <= tolerance``
    too (:func:`tolerant_times` then pairing: the same votes, without pairing each hash again).

    Parameters
    ----------
    track_ids, t_anchor_frames, offsets_frames : np.ndarray [shape=(p,)], integer
        Track, stored anchor time and offset ``t_anchor - t_query`` (frames) of each pair.
    tolerance : int, frames >= 0

    Returns
    -------
    track_ids, offsets_frames : np.ndarray [shape=(d,), dtype=int64]
        Of each distinct vote, sorted by track, then offset.

    Examples
    --------
    >>> distinct_anchor_votes(np.array([4, 4, 5, 4]), np.array([10, 10, 10, 10]), np.array([7, 7, 7, 8]))
    (array([4, 4, 5]), array([7, 8, 7]))
    >>> distinct_anchor_votes(np.array([4, 4]), np.array([10, 10]), np.array([7, 8]), tolerance=1)
    (array([4, 4, 4, 4]), array([6, 7, 8, 9]))
    """
    packed = _distinct_anchor_keys(track_ids, t_anchor_frames, offsets_frames, tolerance)
    if not isinstance(packed, _PackedVotes):
        return packed
    distinct, offset_bits, anchor_bits, low_offset = packed
    return distinct >> (offset_bits + anchor_bits), ((distinct >> anchor_bits) & ((1 << offset_bits) - 1)) + low_offset


def anchor_bins(track_ids: np.ndarray, t_anchor_frames: np.ndarray, offsets_frames: np.ndarray, *,
                tolerance: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`distinct_anchor_votes` counted per bin: :func:`counted_bins` of its votes, without listing them.

    Parameters
    ----------
    track_ids, t_anchor_frames, offsets_frames : np.ndarray [shape=(p,)], integer
        Track, stored anchor time and offset (frames) of each (posting, query hash) pair.
    tolerance : int, frames >= 0

    Returns
    -------
    bin_tracks, bin_offsets, counts : np.ndarray [shape=(b,), dtype=int64]
        Sorted by track, then offset; the distinct anchors in each bin.

    Examples
    --------
    >>> anchor_bins(np.array([4, 4, 5, 4]), np.array([10, 11, 10, 10]), np.array([7, 7, 7, 8]))
    (array([4, 4, 5]), array([7, 8, 7]), array([2, 1, 1]))
    """
    packed = _distinct_anchor_keys(track_ids, t_anchor_frames, offsets_frames, tolerance)
    if not isinstance(packed, _PackedVotes):
        return counted_bins(*packed)
    distinct, offset_bits, anchor_bits, low_offset = packed
    bin_keys = distinct >> anchor_bits  # (track, offset) of each vote, in order
    bin_starts = np.flatnonzero(_starts_of_runs(bin_keys))
    bins = bin_keys[bin_starts]
    return bins >> offset_bits, (bins & ((1 << offset_bits) - 1)) + low_offset, _run_lengths(bin_starts, bin_keys.size)


class _PackedVotes(NamedTuple):
    """Distinct votes packed as sorted int64 keys.

    A key is ``track << (offset_bits + anchor_bits) | (offset - low_offset) << anchor_bits | (t_anchor -
    the least t_anchor)``.
    """

    keys: np.ndarray
    offset_bits: int
    anchor_bits: int
    low_offset: int


def _distinct_anchor_keys(track_ids: np.ndarray, t_anchor_frames: np.ndarray, offsets_frames: np.ndarray,
                          tolerance: int) -> _PackedVotes | tuple[np.ndarray, np.ndarray]:
    """The distinct votes of :func:`distinct_anchor_votes`, packed.

    Too wide to pack in one int64 (or no pair): the votes themselves, ``(track_ids, offsets_frames)``.
    """
    tracks = np.asarray(track_ids, dtype=np.int64)
    anchors = np.asarray(t_anchor_frames, dtype=np.int64)
    offsets = np.asarray(offsets_frames, dtype=np.int64)
    if tracks.size == 0:
        return tracks, offsets
    low_offset, low_anchor = int(offsets.min()) - tolerance, int(anchors.min())
    offset_bits = (int(offsets.max()) + tolerance - low_offset).bit_length()
    anchor_bits = (int(anchors.max()) - low_anchor).bit_length()
    if int(tracks.max()).bit_length() + offset_bits + anchor_bits > 63:
        # Too wide to pack in one int64: sort the three columns instead (slower, never seen in practice).
        anchors = np.tile(anchors, 2 * tolerance + 1)
        tracks, offsets = tolerant_offsets(tracks, offsets, tolerance)
        order = np.lexsort((anchors, offsets, tracks))
        triples = np.stack([tracks[order], offsets[order], anchors[order]])
        first = np.ones(order.size, dtype=bool)
        first[1:] = (triples[:, 1:] != triples[:, :-1]).any(axis=0)
        return triples[0, first], triples[1, first]
    # One int64 per vote, ordered by (track, offset, t_anchor): a plain sort, then the first of each run
    # (np.sort with a mask of runs is faster here than np.unique).
    keys = (tracks << (offset_bits + anchor_bits)) | ((offsets - low_offset) << anchor_bits) | (anchors - low_anchor)
    keys.sort()
    distinct = keys[_starts_of_runs(keys)]
    if tolerance:
        # The votes at offset + d are the same keys plus d in the offset's bits (the bits leave room for
        # it: no carry). Each shifted copy is sorted, so a stable sort (a merge of sorted runs) orders them.
        keys = np.concatenate([distinct + (move << anchor_bits) for move in range(-tolerance, tolerance + 1)])
        keys.sort(kind="stable")
        distinct = keys[_starts_of_runs(keys)]
    return _PackedVotes(distinct, offset_bits, anchor_bits, low_offset)


def tolerant_offsets(track_ids: np.ndarray, offsets_frames: np.ndarray,
                     tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair's vote again at ``offset + d`` for every ``|d| <= tolerance`` (the pairs of :func:`tolerant_times`).

    Parameters
    ----------
    track_ids, offsets_frames : np.ndarray [shape=(p,)], integer
        Track and offset (frames) of each (posting, query hash) pair.
    tolerance : int, frames >= 0

    Returns
    -------
    track_ids, offsets_frames : np.ndarray [shape=((2 tolerance + 1) p,), dtype=int64]

    Examples
    --------
    >>> tolerant_offsets(np.array([3, 4]), np.array([10, 20]), 1)
    (array([3, 4, 3, 4, 3, 4]), array([ 9, 19, 10, 20, 11, 21]))
    """
    tracks = np.asarray(track_ids, dtype=np.int64)
    offsets = np.asarray(offsets_frames, dtype=np.int64)
    if tolerance == 0:
        return tracks, offsets
    moves = np.arange(-tolerance, tolerance + 1)
    return np.tile(tracks, moves.size), (offsets[None, :] + moves[:, None]).reshape(-1)


def tolerant_times(t_query_frames: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query hash again at ``t - d`` for every ``|d| <= tolerance``: its postings then vote at offsets ``+ d``.

    Parameters
    ----------
    t_query_frames : np.ndarray [shape=(n,)], integer, in frames
    tolerance : int, frames >= 0

    Returns
    -------
    hash_index : np.ndarray [shape=((2 tolerance + 1) n,), dtype=int64]
        The query hash each entry repeats.
    t_query_frames : np.ndarray [shape=((2 tolerance + 1) n,), dtype=int64]

    Examples
    --------
    >>> tolerant_times(np.array([5, 9]), 1)
    (array([0, 1, 0, 1, 0, 1]), array([ 6, 10,  5,  9,  4,  8]))
    """
    t_query = np.asarray(t_query_frames, dtype=np.int64)
    moves = np.arange(-tolerance, tolerance + 1)
    return np.tile(np.arange(t_query.size), moves.size), (t_query[None, :] - moves[:, None]).reshape(-1)
