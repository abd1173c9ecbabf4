"""Duplicates by content: stored pairs of tracks that share most of their hashes aligned at one offset.

Two tracks are copies of one recording (re-encoded, resampled, re-imported from a pickle) when most of
their postings pair up: equal ``(zone, hash)`` at one constant offset ``t_b - t_a``. The measures are

    ratio = aligned / max(sampled postings of a, sampled postings of b)
    containment = aligned / min(sampled postings of a, sampled postings of b)

on a fixed sample of the hash space (:func:`sampled_hashes`: one hash value in
:data:`SAMPLE_EVERY`, the same values for every track, so copies keep the same postings); ``aligned``
counts the sampled posting pairs with equal zone and hash in the fullest offset bin (the matcher's vote,
with one track as the query). Sampling makes the listing's self-join and the check at ingest
(:mod:`fpstore.duplicates`) about ``SAMPLE_EVERY`` times cheaper and barely moves the ratio (thousands of
postings per track stay). The listing returns every pair whose containment reaches the threshold, with
both tracks' sizes and durations: :mod:`fpstore.duplicates` tells a copy (the aligned part covers most
of both tracks) from an excerpt (it covers the shorter one only).

A ``(zone, hash)`` with more than ``max_postings_per_hash`` postings in the tracks compared is left out
of ``aligned`` on both paths: common hashes (many tracks) and hashes a looping track repeats say little
about sameness, and a hash of ``n`` postings costs ``n * (n - 1) / 2`` rows of the self-join.

Conventions
-----------
- Offsets are STFT frames: ``offset_frames = t_anchor(b) - t_anchor(a)`` at the fullest bin, the
  smallest such offset when bins tie.
- ``zone_id`` None compares every zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import text

if TYPE_CHECKING:
    from fpstore.db.database import Database

#: One hash value in this many is in the sample (a power of two: the top bits of a multiplicative mix).
SAMPLE_EVERY = 8
_SAMPLE_SHIFT = 32 - SAMPLE_EVERY.bit_length() + 1
#: Knuth's multiplicative constant: mixes every bit of the hash into the top bits of the low 32.
_MIX = 2654435761

# The sample in SQL: the low 32 bits of hash * _MIX (the same for the signed stored form and the
# unsigned value), top bits zero. Must select what sampled_hashes selects.
_IN_SAMPLE_SQL = f"((hash::bigint * {_MIX}) & 4294967295) >> {_SAMPLE_SHIFT} = 0"


def sampled_hashes(hashes: np.ndarray) -> np.ndarray:
    """Boolean mask of the hashes in the duplicate sample (the SQL listing selects the same).

    Parameters
    ----------
    hashes : np.ndarray, dtype uint32 (or the stored int32 form)

    Examples
    --------
    >>> sampled_hashes(np.array([0, 1, 2, 3, 4, 5, 6, 7], dtype=np.uint32)).tolist()
    [True, False, False, False, False, True, False, False]
    """
    mixed = (np.asarray(hashes).astype(np.uint32).astype(np.uint64) * np.uint64(_MIX)) & np.uint64(0xFFFFFFFF)
    return np.asarray((mixed >> np.uint64(_SAMPLE_SHIFT)) == 0)


# One statement: the sampled postings (of one zone or all), each track's count of them, the (zone, hash)
# keys held by 2 tracks or more in N postings or fewer, their postings self-joined on the key (track
# a < track b), counted per (a, b, offset), each pair's fullest offset kept, divided by the larger
# track's count. Bins of a single posting pair are dropped before the DISTINCT ON: they are most of the
# bins and never make a duplicate.
_PAIRS_SQL = f"""
WITH picked AS (
    SELECT zone, hash, track_id, t_anchor FROM hashes
    WHERE (CAST(:zone AS smallint) IS NULL OR zone = :zone) AND {_IN_SAMPLE_SQL}
), sizes AS (
    SELECT track_id, count(*) AS n FROM picked GROUP BY track_id
), rare AS (
    SELECT zone, hash FROM picked GROUP BY zone, hash
    HAVING count(*) <= :max_postings AND min(track_id) < max(track_id)
), shared AS (
    SELECT p.zone, p.hash, p.track_id, p.t_anchor FROM picked p JOIN rare r ON r.zone = p.zone AND r.hash = p.hash
), aligned AS (
    SELECT a.track_id AS track_a, b.track_id AS track_b, b.t_anchor - a.t_anchor AS offset_frames,
           count(*) AS n_aligned
    FROM shared a JOIN shared b ON b.zone = a.zone AND b.hash = a.hash AND b.track_id > a.track_id
    GROUP BY 1, 2, 3 HAVING count(*) > 1
), best AS (
    SELECT DISTINCT ON (track_a, track_b) track_a, track_b, offset_frames, n_aligned
    FROM aligned ORDER BY track_a, track_b, n_aligned DESC, offset_frames
), rated AS (
    SELECT b.track_a, ta.file_name AS file_a, b.track_b, tb.file_name AS file_b, b.offset_frames, b.n_aligned,
           sa.n AS n_a, sb.n AS n_b, ta.duration_s AS duration_a_s, tb.duration_s AS duration_b_s,
           b.n_aligned::float8 / greatest(sa.n, sb.n) AS ratio
    FROM best b
    JOIN tracks ta ON ta.id = b.track_a
    JOIN tracks tb ON tb.id = b.track_b
    JOIN sizes sa ON sa.track_id = b.track_a
    JOIN sizes sb ON sb.track_id = b.track_b
)
SELECT track_a, file_a, track_b, file_b, offset_frames, n_aligned, n_a, n_b, duration_a_s, duration_b_s, ratio
FROM rated
WHERE n_aligned >= :min_ratio * least(n_a, n_b)
ORDER BY ratio DESC, track_a, track_b
"""


@dataclass(frozen=True)
class DuplicatePair:
    """Two stored tracks whose postings align.

    Attributes
    ----------
    track_a, track_b : int
        Track ids, ``track_a < track_b``.
    file_a, file_b : str
        Their file names.
    offset_frames : int
        Where ``track_a``'s start falls in ``track_b``: ``t_anchor(b) - t_anchor(a)`` of the aligned postings.
    n_aligned : int
        Sampled posting pairs with equal zone and hash at that offset.
    n_a, n_b : int
        Sampled postings of each track.
    duration_a_s, duration_b_s : float
        Seconds of audio stored of each track (``tracks.duration_s``).
    ratio : float
        ``n_aligned / max(n_a, n_b)``, in [0, 1].
    """

    track_a: int
    file_a: str
    track_b: int
    file_b: str
    offset_frames: int
    n_aligned: int
    n_a: int
    n_b: int
    duration_a_s: float
    duration_b_s: float
    ratio: float

    @property
    def containment(self) -> float:
        """``n_aligned / min(n_a, n_b)``: the share of the smaller track's sampled postings aligned."""
        return self.n_aligned / max(1, min(self.n_a, self.n_b))


class Duplicates:
    """Duplicates among the stored tracks (``store.duplicates``)."""

    def __init__(self, store: Database) -> None:
        self._store = store

    def pairs(self, *, zone_id: int | None, min_ratio: float, max_postings_per_hash: int) -> list[DuplicatePair]:
        """Every pair of stored tracks whose containment is at least ``min_ratio``, in one statement.

        Parameters
        ----------
        zone_id : int or None
            Compare in this zone only (``zones.id``), or in every zone (None).
        min_ratio : float
            Smallest containment listed; pairs aligning a single posting pair are never listed.
        max_postings_per_hash : int
            Leave out the ``(zone, hash)`` keys with more (sampled) postings than this.

        Returns
        -------
        pairs : list of DuplicatePair
            Ratio descending, then ids.
        """
        values = {"zone": zone_id, "min_ratio": min_ratio, "max_postings": max_postings_per_hash}
        with self._store.connect() as conn:
            rows = conn.execute(text(_PAIRS_SQL), values).all()
        return [DuplicatePair(int(a), str(fa), int(b), str(fb), int(off), int(n), int(na), int(nb), float(da),
                              float(db), float(r))
                for a, fa, b, fb, off, n, na, nb, da, db, r in rows]

    def n_postings(self, track_ids: Sequence[int], *, except_sha256: bytes = b"") -> dict[int, tuple[int, float]]:
        """``(tracks.n_postings, tracks.duration_s)`` of the given tracks, but the one with ``except_sha256``."""
        if not track_ids:
            return {}
        with self._store.connect() as conn:
            rows = conn.execute(text("SELECT id, n_postings, duration_s FROM tracks WHERE id = ANY(:ids) "
                                     "AND sha256 <> :own"), {"ids": list(track_ids), "own": except_sha256}).all()
        return {int(track_id): (int(n), float(seconds)) for track_id, n, seconds in rows}
