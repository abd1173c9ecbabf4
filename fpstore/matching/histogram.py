"""The evidence behind an answer: one track's offset histogram for a query (what the web page draws).

A true match piles its votes into one ``(track, offset)`` bin; chance spreads them thin. The histogram
of one track's votes over every offset shows that peak against the floor, as a picture of why the
track was named (or not).

Conventions
-----------
- Offsets are STFT frames (``t_anchor - t_query``); ``seconds_per_frame`` converts them.
- The histogram is of the query as it is at one speed (unshifted, no offset tolerance): the matcher's
  first look, so its peak may hold a few votes fewer than an answer found by a later look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.matching.evidence import ALL_ZONES, Count
from fpstore.matching.ranking import fetch_postings
from fpstore.matching.vote import distinct_anchor_votes, pair_indices, query_keys
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.params import FingerprintParams


@dataclass(frozen=True)
class OffsetHistogram:
    """Votes of one track per offset, for one query.

    Attributes
    ----------
    track_id : int
    offsets_frames : np.ndarray [shape=(b,), dtype=int64]
        Every offset that got a vote, ascending.
    votes : np.ndarray [shape=(b,), dtype=int64]
        Votes at each of them (distinct stored anchors, or pairs, as ``count`` said).
    seconds_per_frame : float
    """

    track_id: int
    offsets_frames: np.ndarray
    votes: np.ndarray
    seconds_per_frame: float

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values: ``track_id``, ``seconds_per_frame``, ``offsets_frames`` and ``votes`` as lists."""
        return {"track_id": self.track_id, "seconds_per_frame": self.seconds_per_frame,
                "offsets_frames": self.offsets_frames.tolist(), "votes": self.votes.tolist()}


def offset_histogram(store: Catalogue, fingerprint: Fingerprint, params: FingerprintParams, *, zone: str,
                     track_id: int, count: Count = "anchors") -> OffsetHistogram:
    """How the query's votes for ``track_id`` spread over offsets (one posting lookup).

    Parameters
    ----------
    store : Catalogue
    fingerprint : Fingerprint
        Of the query, with the database's ``params``.
    params : FingerprintParams
    zone : str
        A zone name, or ``"all"`` to pool every zone.
    track_id : int
    count : {"pairs", "anchors"}
        What a vote is (:class:`fpstore.matching.evidence.Evidence`).

    Returns
    -------
    histogram : OffsetHistogram
        Empty arrays when no hash of the query is stored in that track.
    """
    names = [z.name for z in params.zones] if zone == ALL_ZONES else [params.zone(zone).name]
    ids = store.zone_ids()
    hashes = np.concatenate([fingerprint.zones[name].hashes for name in names])
    t_query = np.concatenate([fingerprint.zones[name].t_anchor_frames for name in names]).astype(np.int64)
    zone_of_hash = np.concatenate([np.full(fingerprint.zones[name].hashes.size, ids[name]) for name in names])
    offsets = np.empty(0, np.int64)
    if hashes.size:
        key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
        key_of_posting, track_ids, t_anchor = fetch_postings(store, key_zones, key_hashes)
        posting, query_hash = pair_indices(key_of_posting, key_of_hash)
        mine = track_ids[posting] == track_id
        offsets = t_anchor[posting[mine]] - t_query[query_hash[mine]]
        if count == "anchors":
            _, offsets = distinct_anchor_votes(track_ids[posting[mine]], t_anchor[posting[mine]], offsets)
    bins, votes = np.unique(offsets, return_counts=True)
    return OffsetHistogram(track_id, bins.astype(np.int64), votes.astype(np.int64), params.seconds_per_frame)
