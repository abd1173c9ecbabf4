"""Duplicates by content: copies of one recording (re-encoded, resampled, re-imported) and excerpts among the tracks.

Two tracks relate when their postings align at one offset (the measures are defined in
:mod:`fpstore.db.duplicates`), and :func:`relation` says how:

- a **duplicate** (the same recording): the aligned part covers most of *both* tracks
  (:data:`MIN_COVERAGE` of each one's duration, at the aligned offset) and ``ratio`` (aligned over the
  larger track's postings) reaches the threshold;
- an **excerpt** (a clip of a longer track, or a whole track cut to its first 30 s): the shorter track
  lies inside the longer one (:data:`MIN_COVERAGE` of it covered) but covers too little of the longer
  one, and ``containment`` (aligned over the smaller track's postings) reaches the threshold.

The same rule serves twice:

- :func:`find_duplicates` lists the stored pairs, computed in the database in one statement
  (``fpstore tracks duplicates``), and groups the duplicates (copies of copies);
- :class:`DuplicateCheck` looks a new track up before it is written (ingest, import-pickle): one
  lookup of its sampled postings in every zone, the matcher's vote with the new track as the query, then the
  ``--on-duplicate`` rule (skip, keep, or replace the stored copy in the new track's transaction) and the
  ``--on-excerpt`` rule (keep it, the default, or skip it).

Conventions
-----------
- Ratios are fractions in [0, 1]; offsets are STFT frames unless a name ends in ``_s``.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fpstore.db.cluster import shard_of_digest, shard_of_track
from fpstore.db.contract import Catalogue
from fpstore.db.duplicates import DuplicatePair, sampled_hashes
from fpstore.db.tracks import TrackRecord
from fpstore.errors import ParameterError
from fpstore.matching.evidence import ALL_ZONES
from fpstore.matching.vote import expand_matches, query_keys, vote
from fpstore.signal.fingerprint import Fingerprint

#: Default smallest ratio of a duplicate, measured on the real-music dev corpus (docs/tracks.md, "Duplicates";
#: benchmarks/duplicates.py): copies scored FLAC at 16 kHz >= 0.63, MP3 128k >= 0.49, MP3 64k >= 0.18,
#: MP3 32k 0.07-0.13; different tracks at most 0.004, a track's 30-s clip against its 150 s at most 0.044.
DEFAULT_MIN_RATIO = 0.10
#: A (zone, hash) with more postings than this in the tracks compared is left out of the measure
#: (:mod:`fpstore.db.duplicates`): it bounds the listing's self-join at 496 rows per hash.
MAX_POSTINGS_PER_HASH = 32
#: Candidates the vote of the check ranks (more than one: two stored copies can both pass).
_CANDIDATES = 5

#: Smallest share of the *shorter* track's sampled postings aligned for an excerpt, measured on the
#: real-music dev corpora (docs/tracks.md, benchmarks/duplicate_relations.py): the 30-s clips of the
#: devlarge corpus, cut between frames, aligned 0.027 to 0.38 of theirs with their whole track; two different
#: tracks (7,140 pairs, loops and instruments shared) at most 0.0020.
DEFAULT_MIN_CONTAINMENT = 0.02
#: Share of each track's duration that the aligned part must cover for a duplicate (of the shorter one
#: only, for an excerpt): a copy spans its original, a 30-s clip a small part of its 4-minute track.
MIN_COVERAGE = 0.8

OnDuplicate = Literal["skip", "keep", "replace"]
ON_DUPLICATE_CHOICES: tuple[OnDuplicate, ...] = ("skip", "keep", "replace")
OnExcerpt = Literal["keep", "skip"]
ON_EXCERPT_CHOICES: tuple[OnExcerpt, ...] = ("keep", "skip")
Relation = Literal["duplicate", "excerpt"]


def coverage(duration_a_s: float, duration_b_s: float, offset_s: float) -> tuple[float, float]:
    """Shares of track a and of track b that overlap when a starts ``offset_s`` seconds into b.

    Examples
    --------
    >>> coverage(30.0, 240.0, 120.0)
    (1.0, 0.125)
    """
    overlap = max(0.0, min(duration_b_s, offset_s + duration_a_s) - max(0.0, offset_s))
    return overlap / duration_a_s if duration_a_s > 0 else 0.0, overlap / duration_b_s if duration_b_s > 0 else 0.0


def relation(n_aligned: float, n_a: float, n_b: float, duration_a_s: float, duration_b_s: float, offset_s: float,
             min_ratio: float, min_containment: float = DEFAULT_MIN_CONTAINMENT) -> Relation | None:
    """What two aligned tracks are to each other: ``"duplicate"``, ``"excerpt"`` or None (unrelated).

    Parameters
    ----------
    n_aligned : float
        Sampled posting pairs aligned at the best offset.
    n_a, n_b : float
        Sampled postings of each track.
    duration_a_s, duration_b_s : float
        Seconds stored of each track.
    offset_s : float
        Where track a starts in track b, seconds.
    min_ratio : float
        Threshold of ``n_aligned / max(n_a, n_b)`` for a duplicate.
    min_containment : float
        Threshold of ``n_aligned / min(n_a, n_b)`` for an excerpt.

    Examples
    --------
    >>> relation(600, 1000, 1100, 150.0, 150.1, 0.0, 0.1), relation(600, 1000, 8000, 30.0, 240.0, 120.0, 0.1)
    ('duplicate', 'excerpt')
    """
    cover_a, cover_b = coverage(duration_a_s, duration_b_s, offset_s)
    if min(cover_a, cover_b) >= MIN_COVERAGE and n_aligned >= min_ratio * max(n_a, n_b):
        return "duplicate"
    if max(cover_a, cover_b) >= MIN_COVERAGE and n_aligned >= min_containment * min(n_a, n_b):
        return "excerpt"
    return None


def minutes(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on), rounded to the second.

    Examples
    --------
    >>> minutes(83.4), minutes(3725.0)
    ('1:23', '1:02:05')
    """
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


@dataclass(frozen=True)
class DuplicateOf:
    """A stored track that a new track duplicates, is an excerpt of, or holds as an excerpt.

    Attributes
    ----------
    track_id : int
    n_aligned : int
        Sampled posting pairs aligned at ``offset_frames``.
    ratio : float
        ``n_aligned / max(new sampled postings, stored sampled postings)``.
    offset_frames : int
        Where the new track starts in the stored one.
    relation : {"duplicate", "excerpt"}
        See :func:`relation`.
    offset_s : float
        ``offset_frames`` in seconds.
    new_is_shorter : bool
        Whether the new track is the shorter one (the excerpt, for an excerpt).
    containment : float
        ``n_aligned / min(new sampled postings, stored sampled postings)``.
    """

    track_id: int
    n_aligned: int
    ratio: float
    offset_frames: int
    relation: Relation = "duplicate"
    offset_s: float = 0.0
    new_is_shorter: bool = True
    containment: float = 0.0

    def describe(self) -> str:
        """One line: ``duplicate of track 12 (97% of hashes aligned)`` or ``excerpt of track 12 at 1:23``.

        When the stored track is the excerpt: ``track 12 is an excerpt of it at 1:23``.
        """
        if self.relation == "duplicate":
            return f"duplicate of track {self.track_id} ({100 * self.ratio:.0f}% of hashes aligned)"
        if self.new_is_shorter:
            return f"excerpt of track {self.track_id} at {minutes(self.offset_s)}"
        return f"track {self.track_id} is an excerpt of it at {minutes(-self.offset_s)}"


@dataclass(frozen=True)
class DuplicateListing:
    """Stored duplicates: the pairs, and the groups they form; and the excerpts.

    Attributes
    ----------
    pairs : list of DuplicatePair
        Duplicates (:func:`relation`), ratio descending.
    groups : list of list of int
        Track ids linked by pairs (each group sorted, groups by their first id); a pair is a group of two.
    excerpts : list of DuplicatePair
        Excerpts: the shorter track lies inside the longer one (containment descending).
    zone : str
        Zone compared, or ``"all"``.
    min_ratio : float
    seconds_per_frame : float
        To turn ``offset_frames`` into seconds.
    """

    pairs: list[DuplicatePair]
    groups: list[list[int]]
    zone: str
    min_ratio: float
    seconds_per_frame: float
    excerpts: list[DuplicatePair] = dataclasses.field(default_factory=list)


def check_min_ratio(min_ratio: float) -> float:
    """``min_ratio`` if it is a fraction in (0, 1], else ParameterError."""
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or not 0 < min_ratio <= 1:
        raise ParameterError(f"min_ratio={min_ratio!r} must be a fraction of hashes in (0, 1]")
    return float(min_ratio)


def find_duplicates(store: Catalogue, *, zone: str = ALL_ZONES, min_ratio: float = DEFAULT_MIN_RATIO) -> DuplicateListing:
    """The stored duplicates and excerpts (:func:`relation` with ``min_ratio`` for duplicates), computed in the database.

    Parameters
    ----------
    store : Catalogue
    zone : str
        A zone name (cheaper: one zone's postings), or ``"all"``.
    min_ratio : float
        In (0, 1].

    Returns
    -------
    listing : DuplicateListing

    Raises
    ------
    ParameterError
        If ``zone`` is unknown or ``min_ratio`` is out of range.
    NotFound
        If the database holds no fingerprints yet.
    """
    check_min_ratio(min_ratio)
    store.one_database("listing stored duplicates (`fpstore tracks duplicates`)")
    store.check_schema()
    params = store.params(duration_s=None)
    zone_id = None if zone == ALL_ZONES else store.zone_ids()[params.zone(zone).name]
    # The listing's filter is on containment (never below ratio): the lower threshold keeps both kinds.
    found = store.duplicates.pairs(zone_id=zone_id, min_ratio=min(min_ratio, DEFAULT_MIN_CONTAINMENT),
                                   max_postings_per_hash=MAX_POSTINGS_PER_HASH)
    kinds = [relation(p.n_aligned, p.n_a, p.n_b, p.duration_a_s, p.duration_b_s,
                      p.offset_frames * params.seconds_per_frame, min_ratio) for p in found]
    pairs = [p for p, kind in zip(found, kinds) if kind == "duplicate"]
    excerpts = sorted((p for p, kind in zip(found, kinds) if kind == "excerpt"),
                      key=lambda p: (-p.containment, p.track_a, p.track_b))
    return DuplicateListing(pairs, linked_groups([(p.track_a, p.track_b) for p in pairs]), zone, min_ratio,
                            params.seconds_per_frame, excerpts)


def linked_groups(links: list[tuple[int, int]]) -> list[list[int]]:
    """The connected groups of ids that ``links`` join.

    Examples
    --------
    >>> linked_groups([(3, 4), (1, 2), (2, 5)])
    [[1, 2, 5], [3, 4]]
    """
    parent: dict[int, int] = {}

    def root(track_id: int) -> int:
        while parent.setdefault(track_id, track_id) != track_id:
            parent[track_id] = parent[parent[track_id]]  # path halving keeps the chains short
            track_id = parent[track_id]
        return track_id

    for a, b in links:
        parent[max(root(a), root(b))] = min(root(a), root(b))
    groups: dict[int, list[int]] = {}
    for track_id in sorted(parent):
        groups.setdefault(root(track_id), []).append(track_id)
    return sorted(groups.values())


def _combined(zones: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """One sortable int64 per ``(zone, stored hash)`` key, in :func:`fpstore.vote.query_keys`'s order."""
    return (np.asarray(zones, dtype=np.int64) << 32) | (np.asarray(hashes, dtype=np.int64) & 0xFFFFFFFF)


class CommonKeys:
    """The keys that a run's checks found common, each with a lower bound on its stored postings (thread-safe).

    A key whose stored postings and the new track's own exceed :data:`MAX_POSTINGS_PER_HASH` is left out
    of the check. While a run adds tracks, a key's stored postings only grow: a key found common stays
    common for every later file of the run with as many own postings or more, and its lookup is spared
    (the same answers). About half of a new file's sampled keys are common on a catalogue of 10,000
    recordings (docs/scale.md), and a long run meets the same ones again and again. Tracks deleted
    during the run (the copies a new track replaces) can shorten a list: :meth:`forget` then empties
    the memory for the rest of the run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (sorted combined keys, stored postings at least), replaced as one tuple: a reader in another
        # thread sees one or the other.
        self._known = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._forgotten = False

    def left_out(self, keys: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Which keys are known to be common for a track with ``own`` postings of each.

        Parameters
        ----------
        keys : np.ndarray [shape=(k,), dtype=int64]
            Combined ``(zone, hash)`` keys (:func:`_combined`).
        own : np.ndarray [shape=(k,)], integer
            The new track's sampled postings of each key.

        Returns
        -------
        left_out : np.ndarray [shape=(k,), dtype=bool]
        """
        known, at_least = self._known
        if not known.size:
            return np.zeros(keys.size, dtype=bool)
        where = np.minimum(np.searchsorted(known, keys), known.size - 1)
        return np.asarray((known[where] == keys) & (at_least[where] + own > MAX_POSTINGS_PER_HASH))

    def learn(self, keys: np.ndarray, stored_at_least: np.ndarray) -> None:
        """Remember that each of ``keys`` (sorted, distinct) has at least ``stored_at_least`` stored postings."""
        with self._lock:
            if self._forgotten or not keys.size:
                return
            known, at_least = self._known
            where = np.searchsorted(known, keys)
            hit = np.zeros(keys.size, dtype=bool)
            hit[where < known.size] = known[where[where < known.size]] == keys[where < known.size]
            at_least = np.array(at_least)  # a new array: readers may hold the old one
            at_least[where[hit]] = np.maximum(at_least[where[hit]], stored_at_least[hit])
            self._known = (np.insert(known, where[~hit], keys[~hit]),
                           np.insert(at_least, where[~hit], stored_at_least[~hit]))

    def forget(self) -> None:
        """Empty the memory for good: stored postings were deleted, a known bound may no longer hold."""
        with self._lock:
            self._forgotten = True
            self._known = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _aligned_candidates(store: Catalogue, zone_of_hash: np.ndarray, hashes: np.ndarray, t_query: np.ndarray, *,
                        top_k: int, common: CommonKeys | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored tracks with the most postings aligned with these at one offset: ``(track_ids, votes, offsets)``.

    One posting lookup; a key with more than :data:`MAX_POSTINGS_PER_HASH` postings, the new track's
    included, is left out (the listing's rule). With ``common``, the keys it knows to be common are not
    looked up, and those found common are added to it.
    """
    key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
    keys = _combined(key_zones, key_hashes)
    # A key is common when its stored postings and the new track's exceed the bound: fetching one more
    # than the bound leaves says so (a cluster's shards each send that many at most, which still tells).
    own = np.bincount(key_of_hash, minlength=key_zones.size)
    looked_up = own <= MAX_POSTINGS_PER_HASH
    if common is not None:
        looked_up &= ~common.left_out(keys, own)
    found_zone, found_hash, track_ids, t_anchor = store.lookup.postings(
        key_zones[looked_up], key_hashes[looked_up], MAX_POSTINGS_PER_HASH + 1 - own[looked_up])
    key_of_posting = np.searchsorted(keys, _combined(found_zone, found_hash))
    n_postings_of_key = np.bincount(key_of_posting, minlength=key_zones.size) + own
    is_common = n_postings_of_key > MAX_POSTINGS_PER_HASH
    if common is not None:
        found_common = looked_up & is_common
        common.learn(keys[found_common], (n_postings_of_key - own)[found_common])
    kept = ~is_common[key_of_posting]
    ranked: tuple[np.ndarray, np.ndarray, np.ndarray] = vote(*expand_matches(
        key_of_posting[kept], t_anchor[kept], track_ids[kept], key_of_hash, t_query), top_k=top_k)
    return ranked


def duplicates_of(store: Catalogue, fingerprint: Fingerprint, zone_ids: dict[str, int], *, min_ratio: float,
                  own_sha256: bytes = b"", common: CommonKeys | None = None) -> list[DuplicateOf]:
    """The stored tracks that ``fingerprint`` duplicates or shares an excerpt with, best first, with one posting lookup.

    The new track's sampled postings (:func:`fpstore.db.duplicates.sampled_hashes`) are looked up in
    every zone (a key's list only up to the length that makes it common: :data:`MAX_POSTINGS_PER_HASH`)
    and voted on as a query; a stored track's sampled postings are estimated from its
    ``n_postings`` at the new track's sampling rate (exact enough for copies, which is what passes).
    Each candidate's :func:`relation` decides.

    Parameters
    ----------
    store : Catalogue
    fingerprint : Fingerprint
        Of the new track, every zone of the database.
    zone_ids : dict[str, int]
        ``zones.id`` by zone name.
    min_ratio : float
    own_sha256 : bytes
        The new track's content digest: the stored track with the same content is not its duplicate
        (re-ingesting it with ``--force`` replaces it).
    common : CommonKeys or None
        The keys known to be common (not looked up), learning the ones found common.

    Returns
    -------
    found : list of DuplicateOf
        Duplicates first, then excerpts, each ratio descending; empty when nothing relates.
    """
    names = list(fingerprint.zones)
    zone_of_hash = np.concatenate([np.full(fingerprint.zones[name].hashes.size, zone_ids[name]) for name in names])
    hashes = np.concatenate([fingerprint.zones[name].hashes for name in names])
    t_query = np.concatenate([fingerprint.zones[name].t_anchor_frames for name in names])
    in_sample = sampled_hashes(hashes)
    n_sampled = int(in_sample.sum())
    if n_sampled == 0:
        return []
    ranked_tracks, votes, offsets = _aligned_candidates(store, zone_of_hash[in_sample], hashes[in_sample],
                                                        t_query[in_sample], top_k=_CANDIDATES, common=common)
    sizes = store.duplicates.n_postings(ranked_tracks.tolist(), except_sha256=own_sha256)
    sampling_rate = n_sampled / hashes.size
    seconds_per_frame = fingerprint.duration_s / max(1, fingerprint.n_frames)
    found = []
    for track_id, n, offset in zip(ranked_tracks.tolist(), votes.tolist(), offsets.tolist()):
        if track_id not in sizes:
            continue
        n_stored, stored_s = sizes[track_id][0] * sampling_rate, sizes[track_id][1]
        offset_s = offset * seconds_per_frame
        kind = relation(n, n_sampled, n_stored, fingerprint.duration_s, stored_s, offset_s, min_ratio)
        if kind is not None:
            found.append(DuplicateOf(track_id, n, n / max(n_sampled, n_stored), offset, kind, offset_s,
                                     fingerprint.duration_s <= stored_s, n / max(1.0, min(n_sampled, n_stored))))
    return sorted(found, key=lambda d: (d.relation != "duplicate", -d.ratio, d.track_id))


@dataclass(frozen=True)
class DuplicateCheck:
    """What to do with a new track that duplicates stored ones (ingest, import-pickle).

    Attributes
    ----------
    store : Catalogue
    on_duplicate : {"skip", "keep", "replace"}
        Skip the new track, keep both, or write the new one and delete the stored copies in its transaction.
    min_ratio : float
    on_excerpt : {"keep", "skip"}
        A new track that is an excerpt of a stored one, or holds one: store it (saying so), or skip it.
    common : CommonKeys
        The keys this check's lookups found common, not looked up again (one run's; forgotten once a
        new track replaces stored ones).

    Raises
    ------
    ParameterError
        If ``on_duplicate`` or ``min_ratio`` is out of range (when made, before any run starts).
    """

    store: Catalogue
    on_duplicate: OnDuplicate = "skip"
    min_ratio: float = DEFAULT_MIN_RATIO
    on_excerpt: OnExcerpt = "keep"
    common: CommonKeys = dataclasses.field(default_factory=CommonKeys, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.on_duplicate not in ON_DUPLICATE_CHOICES:
            raise ParameterError(f"on_duplicate={self.on_duplicate!r} must be one of {', '.join(ON_DUPLICATE_CHOICES)}")
        if self.on_excerpt not in ON_EXCERPT_CHOICES:
            raise ParameterError(f"on_excerpt={self.on_excerpt!r} must be one of {', '.join(ON_EXCERPT_CHOICES)}")
        check_min_ratio(self.min_ratio)

    def apply(self, record: TrackRecord, zone_ids: dict[str, int]) -> tuple[TrackRecord | None, str]:
        """The record to write (None: skip it) and a note saying why (empty when it duplicates nothing).

        ``zone_ids`` gives ``zones.id`` by zone name (the run's). On a cluster every shard is asked, and
        only stored copies on the track's own shard can be replaced in its transaction (the others are
        kept, and named).

        Raises
        ------
        ShardDown
            On a cluster, if a shard cannot answer: the track is never stored unchecked
            (:func:`unchecked_reason` says why, naming the file).
        DatabaseError
            If the database fails.
        """
        found = duplicates_of(self.store, record.fingerprint, zone_ids, min_ratio=self.min_ratio,
                              own_sha256=record.sha256, common=self.common)
        if not found:
            return record, ""
        note = found[0].describe()
        if found[0].relation == "excerpt":
            return (None, note) if self.on_excerpt == "skip" else (record, note)
        found = [d for d in found if d.relation == "duplicate"]
        if self.on_duplicate == "skip":
            return None, note
        if self.on_duplicate == "keep":
            return record, f"{note}, kept"
        replaced = tuple(d.track_id for d in found)
        self.common.forget()  # the replaced tracks' postings are deleted when this one is written
        elsewhere: tuple[int, ...] = ()
        if self.store.routed:
            n_shards = len(self.store.shards)
            own = shard_of_digest(record.sha256, n_shards)
            elsewhere = tuple(t for t in replaced if shard_of_track(t, n_shards) != own)
            replaced = tuple(t for t in replaced if t not in elsewhere)
        said = [f"replaces track{'s' if len(replaced) > 1 else ''} {', '.join(map(str, replaced))}"] if replaced else []
        if elsewhere:
            said.append(f"track{'s' if len(elsewhere) > 1 else ''} {', '.join(map(str, elsewhere))} on another "
                        "shard kept (remove with `fpstore tracks remove`)")
        return dataclasses.replace(record, replaces=record.replaces + replaced), ", ".join([note, *said])


def unchecked_reason(shown: str, shard_name: str, failure: str) -> str:
    """Why a new file is not stored: a shard that failed could not check it for duplicates (one line)."""
    return (f"{shown}: not stored: it could not be checked for duplicates on {shard_name}, which failed "
            f"({failure}); run the ingest again once that shard is back")
