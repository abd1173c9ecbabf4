"""Monitoring: a long recording or a live stream, matched window by window, told as track segments.

The stream is cut into overlapping windows (:class:`fpstore.signal.windows.SlidingWindows`). A window
that no open segment explains is matched as ``fpstore match`` matches a query
(:func:`fpstore.matching.matcher.match_prepared`: distinct anchors, sub-hop shifts, speed factors, the tracks null
and its ``alpha``); a track it names opens a segment at that track, alignment and **speed**. While a
segment is open, each next window is first given one targeted test (:func:`track_evidence`): it is
fingerprinted at the segment's speed, and the hashes that align with the segment's track within a few
frames of the offset the segment predicts are counted. When chance is unlikely to have put that many
there (the Poisson bound of :mod:`fpstore.matching.significance` on that track's own collisions, over the offsets
searched), the window continues the segment, whatever else it also matches: a section the track
repeats does not split it. Only a window the test rejects is matched afresh; the stream's last speed
is tried first, then the matcher's looks.

**Boundaries come from the evidence.** The aligned hashes are timestamped in stream time (a hash
spans its anchor peak to its target peak), so a segment starts where its track's evidence begins
(searched in the window before the first named one too) and ends where it stops, wherever in the track
the stream joined it (:func:`evidence_start`, :func:`evidence_end`: the first and last of
:data:`BOUNDARY_HASHES` aligned hashes in a row, each close to the one before, so a stray hash that
chance aligned is no boundary). Where two segments' evidence overlaps (a crossfade), the boundary is
where the new track's evidence overtakes the old one's (:func:`crossover`).

A segment is told when it has ended: when a window names another track, or when more than
``max_gap`` windows in a row failed its test and named nothing. A segment named by fewer than
``min_windows`` windows is taken for a chance match and not told. At the end of the stream, or when
the caller stops (:meth:`StreamMonitor.stop`), the open segment is told, marked ``cut_short`` when its
evidence reached the last window heard.

Conventions
-----------
- Times ending in ``_s`` are seconds: stream times from the stream's first sample, track times from
  the track's start. Frames are STFT frames of the (speed-corrected) window.
- A window's ``offset_s`` is the track time at the window's first sample (negative if the track begins
  inside the window), as :class:`fpstore.matching.results.Candidate` reports it.
- A speed is the rate the stream plays the track at (1.02: 2 % fast): one second of stream holds
  ``speed`` seconds of track.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import os
import queue
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.db.lookup import PostingMemory
from fpstore.errors import FpstoreError, ParameterError
from fpstore.matching.evidence import ALL_ZONES, DEFAULT_ZONE, ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import STDIN_ARGUMENT, STDIN_LABEL, PreparedQuery
from fpstore.matching.ranking import fetch_postings, match_fingerprint
from fpstore.matching.results import MatchResult
from fpstore.matching.significance import offset_bins, poisson_log_tail
from fpstore.matching.vote import pair_indices, query_keys
from fpstore.signal.analysis import Fingerprint
from fpstore.signal.audio import can_stream, load_audio, stream_audio, stream_audio_from
from fpstore.signal.params import BITS_DT, FingerprintParams
from fpstore.signal.variants import SpeedVariant
from fpstore.signal.window_peaks import WindowPeaks
from fpstore.signal.windows import SlidingWindows

#: The looks a window matched afresh may take: those of :data:`fpstore.matching.evidence.ROBUST` (distinct anchors,
#: votes tolerant to +-1 frame, speeds of +-1, 2, 3 %) without its sub-hop shifts, which lift short
#: queries: a 10 s window holds hashes enough, and each shift is one more fingerprint a window.
WINDOW_EVIDENCE = Evidence("anchors", 1, ROBUST.speeds, tolerance=1)
#: Lookups whose keys the posting lookup remembers while a stream is monitored: a window's own looks
#: and those of the window before it (:meth:`fpstore.db.lookup.Lookup.remembering`).
REMEMBERED_LOOKUPS = 8
#: Default window and hop, seconds. 10 s holds enough hashes to name a track; a 5 s hop tests every
#: second twice.
DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0
#: Frames a segment's alignment may move between consecutive windows (a speed between the matcher's
#: speed factors drifts; resampling and noise move peaks a frame): the targeted test searches the
#: predicted offset this many frames either side.
DEFAULT_TOLERANCE_FRAMES = 2
#: Windows in a row a segment may span that fail its test and name nothing (a quiet passage, a burst of
#: noise, speech over the music), when its track at its alignment comes back after them.
DEFAULT_MAX_GAP = 1
#: Fewest windows a segment needs to be told: a lone window is most often a chance match.
DEFAULT_MIN_WINDOWS = 2
#: Fewest aligned hashes (distinct stored anchors) a targeted test needs, whatever its chance bound:
#: with few collisions the bound alone would accept two or three.
MIN_CONTINUING_VOTES = 5
#: Fewest of those a segment's second window must hold in the part the window that opened it did not.
MIN_FRESH_VOTES = 2
#: A boundary is the first (last) of this many aligned hashes in a row, none further than
#: :func:`run_gap` from the one before.
BOUNDARY_HASHES = 3
#: Bounds of that gap, seconds.
MIN_RUN_GAP_S = 0.3
MAX_RUN_GAP_S = 2.0


@dataclass(frozen=True)
class WindowAnswer:
    """What one window matched.

    Attributes
    ----------
    start_s, end_s : float
        The window's stream time range.
    track_id : int or None
        The track it was given to; None when it matched nothing with confidence ("unknown").
    file_name : str
        That track's file name ("" when unknown).
    offset_s : float
        Track time at the window's first sample (0 when unknown).
    votes : int
        Aligned hashes of the best candidate, named or not.
    speed : float
        Speed factor the window was matched at.
    continued : bool
        True if the window continued the open segment (its targeted test), False if it was matched afresh.
    """

    start_s: float
    end_s: float
    track_id: int | None
    file_name: str = ""
    offset_s: float = 0.0
    votes: int = 0
    speed: float = 1.0
    continued: bool = False


@dataclass(frozen=True)
class Segment:
    """A stretch of the stream identified as one track.

    Attributes
    ----------
    start_s, end_s : float
        Stream time range.
    track_id : int
    file_name : str
    track_start_s, track_end_s : float
        The part of the track played (track times).
    votes : int
        Aligned hashes of the segment's best window.
    windows : int
        Windows that named the track.
    speed : float
        The rate the stream plays the track at (1.0: as stored).
    chance_p : float
        Chance probability bound of the segment's best window (``10 ** -score``): how likely chance alone
        would have named it.
    cut_short : bool
        True if the stream ended (or monitoring stopped) while the track was still playing.
    """

    start_s: float
    end_s: float
    track_id: int
    file_name: str
    track_start_s: float
    track_end_s: float
    votes: int
    windows: int
    speed: float = 1.0
    chance_p: float = 1.0
    cut_short: bool = False


@dataclass(frozen=True)
class MonitorSummary:
    """What a stream held, once monitored.

    Attributes
    ----------
    stream_s : float
        Seconds of stream matched.
    segments : int
        Segments told.
    named_s : float
        Seconds of stream inside a told segment; the rest is unknown.
    """

    stream_s: float
    segments: int
    named_s: float

    @property
    def unknown_s(self) -> float:
        """Seconds of stream no segment names."""
        return max(self.stream_s - self.named_s, 0.0)


def evidence_start(stream_s: np.ndarray, *, hashes: int = BOUNDARY_HASHES, gap_s: float | None = None) -> float | None:
    """Where a track's evidence begins: the first aligned hash of ``hashes`` in a row, each within ``gap_s`` of the last.

    A stray hash that chance aligned before the track begins stands alone, further from the next one
    than the track's own hashes lie from one another.

    Parameters
    ----------
    stream_s : np.ndarray [shape=(n,)], float, sorted
        Stream times (seconds) of the hashes aligned with one track at one alignment.
    hashes : int
    gap_s : float, optional
        Largest gap inside a run; by default :func:`run_gap` of ``stream_s``.

    Returns
    -------
    start_s : float or None
        None if no ``hashes`` of them follow one another that closely.

    Examples
    --------
    >>> evidence_start(np.array([1.0, 7.0, 7.5, 8.0, 9.0]), gap_s=1.0)
    7.0
    """
    times = np.asarray(stream_s, dtype=np.float64)
    if times.size < max(hashes, 1):
        return None
    if hashes <= 1:
        return float(times[0])
    gap_s = run_gap(times) if gap_s is None else gap_s
    close = np.diff(times) <= gap_s
    # a run of ``hashes`` starts at i when the hashes - 1 gaps after it are all close
    runs = np.convolve(close.astype(np.int64), np.ones(hashes - 1, dtype=np.int64), mode="valid") == hashes - 1
    first = np.flatnonzero(runs)
    return float(times[first[0]]) if first.size else None


def evidence_end(stream_s: np.ndarray, *, hashes: int = BOUNDARY_HASHES, gap_s: float | None = None) -> float | None:
    """Where a track's evidence ends: the last aligned hash of ``hashes`` in a row (as :func:`evidence_start`).

    Examples
    --------
    >>> evidence_end(np.array([1.0, 1.5, 2.0, 9.0]), gap_s=1.0)
    2.0
    """
    start = evidence_start(-np.asarray(stream_s, dtype=np.float64)[::-1], hashes=hashes, gap_s=gap_s)
    return None if start is None else -start


def run_gap(stream_s: np.ndarray) -> float:
    """The gap two of a track's aligned hashes may leave and still be one run: four times their median gap.

    Dense evidence (a clean stream) tolerates short gaps only, sparse evidence (noise) longer ones;
    kept within [:data:`MIN_RUN_GAP_S`, :data:`MAX_RUN_GAP_S`].

    Examples
    --------
    >>> run_gap(np.array([0.0, 0.1, 0.2, 0.3, 3.0]))
    0.4
    """
    gaps = np.diff(np.asarray(stream_s, dtype=np.float64))
    typical = float(np.median(gaps)) if gaps.size else MAX_RUN_GAP_S
    return float(np.clip(4 * typical, MIN_RUN_GAP_S, MAX_RUN_GAP_S))


def crossover(ending_s: np.ndarray, beginning_s: np.ndarray, low_s: float, high_s: float) -> float:
    """Where one track's evidence gives way to the next's, between ``low_s`` and ``high_s``.

    The time that leaves the fewest aligned hashes on the wrong side: the ending track's after it plus
    the beginning track's before it (the middle of the best times when several tie). At a hard cut
    that is the cut; in a crossfade, where the new track's evidence overtakes the old one's.

    Parameters
    ----------
    ending_s, beginning_s : np.ndarray [shape=(n,)], [shape=(m,)], float
        Stream times of the two tracks' aligned hashes.
    low_s, high_s : float
        The range searched (where the two tracks' evidence overlaps).

    Returns
    -------
    boundary_s : float

    Examples
    --------
    >>> crossover(np.array([1.0, 2.0, 3.0, 4.5]), np.array([3.5, 4.0, 5.0]), 3.0, 4.5)
    3.25
    """
    ending, beginning = np.sort(ending_s), np.sort(beginning_s)
    inside = np.concatenate([ending, beginning])
    candidates = np.unique(np.concatenate([[low_s, high_s], inside[(inside > low_s) & (inside < high_s)]]))
    # between consecutive candidates the count is constant: test the midpoints and the ends
    points = np.unique(np.concatenate([candidates, (candidates[1:] + candidates[:-1]) / 2]))
    wrong = (ending.size - np.searchsorted(ending, points, side="right")) + np.searchsorted(beginning, points)
    best = points[wrong == wrong.min()]
    return float((best[0] + best[-1]) / 2)


@dataclass(frozen=True)
class TrackEvidence:
    """A window's hashes aligned with one track near one offset (:func:`track_evidence`).

    Attributes
    ----------
    votes : int
        Distinct stored anchors in the best bin and its neighbours (+-1 frame).
    offset_frames : int
        That bin: the track's frame at the window's first (speed-corrected) frame.
    from_s : np.ndarray [shape=(votes,)], float64, sorted
        Stream time of each of those anchors (where a hash's evidence begins).
    until_s : np.ndarray [shape=(p,)], float64, sorted
        Stream time of the target peak of each aligned hash (where its evidence ends: an anchor near
        the end of a track has its targets after the end, and does not match).
    score : float
        ``-log10`` of the chance bound of that many votes in one of the bins searched.
    fresh_votes : int
        Those of the votes anchored in the part of the window no window before it held (all of them
        unless :func:`track_evidence` was told where that part begins).
    """

    votes: int
    offset_frames: int
    from_s: np.ndarray
    until_s: np.ndarray
    score: float
    fresh_votes: int = 0


NO_EVIDENCE = TrackEvidence(0, 0, np.zeros(0), np.zeros(0), 0.0)


def _window_hashes(fingerprint: Fingerprint, zone_ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window's hashes of the voting zones, their anchor frames and each one's ``zones.id``."""
    zones = [(fingerprint.zones[name], zone_id) for name, zone_id in zone_ids.items()]
    hashes = np.concatenate([zh.hashes for zh, _ in zones])
    t_query = np.concatenate([zh.t_anchor_frames for zh, _ in zones]).astype(np.int64)
    zone_of_hash = np.concatenate([np.full(zh.hashes.size, zone_id) for zh, zone_id in zones])
    return hashes, t_query, zone_of_hash


def track_postings(store: Catalogue, fingerprint: Fingerprint, zone_ids: dict[str, int],
                   track_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One track's postings of a window's keys (the lookup of :func:`track_evidence`), in one statement.

    Returns
    -------
    key_of_posting, t_anchor_frames : np.ndarray [shape=(m,), dtype=int64]
        Index into the window's distinct keys (:func:`fpstore.matching.vote.query_keys`, in the order
        of ``zone_ids``) and the stored anchor frame of each posting.
    """
    hashes, _, zone_of_hash = _window_hashes(fingerprint, zone_ids)
    if hashes.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key_zones, key_hashes, _ = query_keys(zone_of_hash, hashes)
    key_of_posting, _, t_anchor = fetch_postings(store, key_zones, key_hashes, track_id=track_id)
    return key_of_posting, t_anchor


def track_evidence(store: Catalogue, fingerprint: Fingerprint, params: FingerprintParams, zone_ids: dict[str, int],
                   track_id: int, offset_frames: int, reach: int, *, start_s: float = 0.0,
                   speed: float = 1.0, after_s: float | None = None,
                   postings: tuple[np.ndarray, np.ndarray] | None = None) -> TrackEvidence:
    """The targeted test: how many of a window's hashes align with one track within ``reach`` frames of an offset.

    One posting lookup for the window's keys, of ``track_id``'s postings only
    (:meth:`fpstore.db.lookup.Lookup.track_postings`). The offsets
    ``offset_frames +- reach`` are tried, each pooling its neighbours (+-1 frame, as the matcher's offset
    tolerance does), and the fullest wins. Its chance bound is the Poisson tail of that track's own
    collisions in this window (their mean per bin, times the 3 bins pooled), times the offsets tried
    (:func:`fpstore.matching.significance.poisson_log_tail`).

    Parameters
    ----------
    store : Catalogue
    fingerprint : Fingerprint
        Of the window, at ``speed`` (:func:`fpstore.signal.variants.speed_variant`).
    params : FingerprintParams
    zone_ids : dict[str, int]
        ``zones.id`` of each zone that votes (:meth:`Store.zone_ids`, restricted to the voting zones).
    track_id : int
    offset_frames : int
        Predicted offset (stored anchor frame minus window frame).
    reach : int
        Frames searched either side.
    start_s : float
        Stream time of the window's first sample, for the times of :class:`TrackEvidence`.
    speed : float
        The speed the window was fingerprinted at: a window frame lasts ``1 / speed`` of a stream frame.
    after_s : float, optional
        Where the part of the window no window before it held begins (stream time): the aligned hashes
        anchored there or later are counted apart (``TrackEvidence.fresh_votes``).
    postings : tuple of np.ndarray, optional
        The track's postings of the window's keys, fetched already (:func:`track_postings` of the
        same fingerprint and track); by default they are looked up.

    Returns
    -------
    evidence : TrackEvidence
    """
    hashes, t_query, zone_of_hash = _window_hashes(fingerprint, zone_ids)
    if hashes.size == 0:
        return NO_EVIDENCE
    key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
    if postings is None:
        key_of_posting, _, t_anchor = fetch_postings(store, key_zones, key_hashes, track_id=track_id)
    else:
        key_of_posting, t_anchor = postings
    posting, query_hash = pair_indices(key_of_posting, key_of_hash)
    anchors, times = t_anchor[posting], t_query[query_hash]
    targets = times + (hashes[query_hash].astype(np.int64) & ((1 << BITS_DT) - 1))  # dt: the low bits
    offsets = anchors - times
    centres = np.arange(offset_frames - reach, offset_frames + reach + 1)
    counts = [np.unique(anchors[np.abs(offsets - centre) <= 1]).size for centre in centres]
    best = int(np.argmax(counts))
    votes = int(counts[best])
    if votes == 0:
        return NO_EVIDENCE
    aligned = np.abs(offsets - centres[best]) <= 1
    _, first = np.unique(anchors[aligned], return_index=True)
    frame_s = params.seconds_per_frame / speed
    from_s = np.sort(start_s + times[aligned][first] * frame_s)
    fresh_votes = votes if after_s is None else int(np.count_nonzero(from_s >= after_s))
    until_s = np.unique(start_s + targets[aligned] * frame_s)
    bins = offset_bins(store.lookup.track_frames(np.array([track_id])), t_query)
    per_bin = 3 * offsets.size / float(bins[0])
    log_p = float(poisson_log_tail(np.array(votes), np.array(max(per_bin, 1e-12))))
    score = max(0.0, -(log_p / math.log(10) + math.log10(centres.size)))
    return TrackEvidence(votes, int(centres[best]), from_s, until_s, score, fresh_votes)


class _Window:
    """One window's samples and its fingerprints, made at each speed on first use along the stream's grids.

    ``fetched`` holds the postings of a track looked up ahead for it (:func:`track_postings`), by
    ``(track_id, speed)``.
    """

    def __init__(self, start: int, samples: np.ndarray, params: FingerprintParams,
                 grid: Callable[[float], WindowPeaks]) -> None:
        self.start, self.samples, self.params, self.grid = start, samples, params, grid
        self.start_s = start / params.sample_rate
        self.end_s = self.start_s + samples.size / params.sample_rate
        self._at: dict[float, SpeedVariant] = {}
        self.fetched: dict[tuple[int, float], tuple[np.ndarray, np.ndarray]] = {}

    def variant(self, speed: float) -> SpeedVariant:
        if speed not in self._at:
            self._at[speed] = SpeedVariant(speed, (self.grid(speed).fingerprint(self.start, self.samples),))
        return self._at[speed]

    def prepared(self) -> PreparedQuery:
        return _WindowQuery(self.variant(1.0), self.samples, window=self)


@dataclass
class _WindowQuery(PreparedQuery):
    """A window as ``fpstore match`` takes a query, its other speeds fingerprinted along the stream's grids."""

    window: _Window | None = None

    def screen(self, params: FingerprintParams, evidence: Evidence) -> tuple[SpeedVariant, ...]:
        if self._screen is None:
            assert self.window is not None
            self._screen = tuple(self.window.variant(speed) for speed in evidence.speeds[1:])
        return self._screen


@dataclass
class _Open:
    """The segment being followed."""

    track_id: int
    file_name: str
    speed: float
    start_s: float
    start_track_s: float
    ref_stream_s: float  # stream time of the last window that continued it ...
    ref_track_s: float   # ... and the track time at that window's first sample
    votes: int
    score: float
    opened_until_s: float  # end of the window that opened it
    windows: int = 1
    misses: int = 0
    tail: list[np.ndarray] = field(default_factory=list)  # aligned times of the last continuing window on

    def track_time(self, stream_s: float) -> float:
        return self.ref_track_s + (stream_s - self.ref_stream_s) * self.speed

    def predicted_offset(self, window: _Window, params: FingerprintParams) -> int:
        return round(self.track_time(window.start_s) / params.seconds_per_frame)

    def extend(self, window: _Window, evidence: TrackEvidence, params: FingerprintParams) -> None:
        self.windows, self.misses = self.windows + 1, 0
        self.ref_stream_s, self.ref_track_s = window.start_s, evidence.offset_frames * params.seconds_per_frame
        self.votes, self.score = max(self.votes, evidence.votes), max(self.score, evidence.score)
        self.tail = [evidence.until_s]

    def evidence_end_s(self) -> float:
        times = np.sort(np.concatenate(self.tail)) if self.tail else np.zeros(0)
        end = evidence_end(times)
        return end if end is not None else (float(times[-1]) if times.size else self.start_s)

    def told(self, end_s: float, cut_short: bool) -> Segment:
        end_s = max(end_s, self.start_s)
        return Segment(self.start_s, end_s, self.track_id, self.file_name, self.start_track_s,
                       self.track_time(end_s), self.votes, self.windows, self.speed, 10.0 ** -self.score, cut_short)


class StreamMonitor:
    """Follows one stream: windows in, segments out as they end (see the module docstring).

    Parameters
    ----------
    store : Catalogue
    window_s, hop_s : float
        Window length and the time between window starts, seconds (rounded to whole STFT frames).
    zone : str
        Zone whose hashes vote, or ``"all"``.
    rule : DecisionRule
        When a window matched afresh names a track (the calibrated rule of ``fpstore match`` by
        default); its score threshold also decides the targeted tests.
    evidence : Evidence
        The looks a window matched afresh may take (:data:`WINDOW_EVIDENCE` by default).
    tolerance_frames : int
        Frames a segment's alignment may move from one window to the next.
    max_gap : int
        Windows in a row a segment may span that fail its test and name nothing.
    min_windows : int
        Fewest windows a segment needs to be told.
    on_window : callable, optional
        Called with every window's answer, as it is decided.
    read_ahead : bool
        Decode the next window before this one is decided, and fingerprint it in a thread meanwhile
        (and, while a segment is open, look up its track's postings of that window's keys there, on a
        connection of the thread's own), so that the analysis and the targeted test's lookup overlap
        this window's work: for files. A live stream's window would then be decided only once the next
        one has arrived (a hop later); off by default.

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    ParameterError
        If a length is not positive, the hop exceeds the window, or the zone is unknown.
    """

    def __init__(self, store: Catalogue, *, window_s: float = DEFAULT_WINDOW_S, hop_s: float = DEFAULT_HOP_S,
                 zone: str = DEFAULT_ZONE, rule: DecisionRule | None = None, evidence: Evidence = WINDOW_EVIDENCE,
                 tolerance_frames: int = DEFAULT_TOLERANCE_FRAMES, max_gap: int = DEFAULT_MAX_GAP,
                 min_windows: int = DEFAULT_MIN_WINDOWS,
                 on_window: Callable[[WindowAnswer], None] | None = None, read_ahead: bool = False) -> None:
        for name, value, least in (("tolerance_frames", tolerance_frames, 0), ("max_gap", max_gap, 0),
                                   ("min_windows", min_windows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ParameterError(f"{name}={value!r} must be an integer >= {least}")
        store.check_schema()
        self.store, self.params = store, store.params(duration_s=None)
        names = [z.name for z in self.params.zones] if zone == ALL_ZONES else [self.params.zone(zone).name]
        every_id = store.zone_ids()
        self.zone, self.zone_ids = zone, {name: every_id[name] for name in names}
        self.rule, self.evidence = rule if rule is not None else DecisionRule(), evidence
        self.reach, self.max_gap, self.min_windows = tolerance_frames + 1, max_gap, min_windows
        self.on_window, self.read_ahead = on_window, read_ahead
        window = window_frames(window_s, self.params, "window_s") * self.params.hop_length
        hop = window_frames(hop_s, self.params, "hop_s") * self.params.hop_length
        self._windows = SlidingWindows(window, hop)
        self._grids: dict[float, WindowPeaks] = {}  # each speed's analysis along the stream
        self._open: _Open | None = None
        self._previous: _Window | None = None
        self._speed = 1.0  # the speed the stream's last segment played at: tried first on a new window
        self._open_any = False  # a segment was opened: the stream's speed is known
        self._screened = False  # the window before was matched afresh at every speed and named nothing
        self._screened_now = False  # ... and this one
        self._heard_s = 0.0
        self._told = 0
        self._named_s = 0.0

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[Segment]:
        """Consume the stream's blocks (mono float32, the database's rate); yield each segment as it ends.

        With ``read_ahead``, the next window is decoded before this one is decided, and fingerprinted
        (at the speed the stream is expected at) in a thread of its own while this one's lookups run;
        while a segment is open, that thread also looks up the segment track's postings of the next
        window's keys (the lookup of its targeted test), with a connection and a posting memory of its own.
        """
        with self.store.holding_connection(), self.store.lookup.remembering(REMEMBERED_LOOKUPS) as memory, \
                warnings.catch_warnings(), concurrent.futures.ThreadPoolExecutor(1) as analysis:
            # a silent window has no peaks: it is simply unknown (the analysis thread runs under this filter too)
            warnings.filterwarnings("ignore", "no spectral peak", UserWarning)
            held = contextlib.ExitStack()  # the analysis thread's connection and memory, left in that thread
            try:
                if self.read_ahead:
                    analysis.submit(self._hold, held, memory).result()
                windows = self._stream_windows(blocks)
                window = next(windows, None)
                while window is not None:
                    coming = next(windows, None) if self.read_ahead else None
                    analysed = None
                    if coming is not None:
                        speed = self._expected_speed()
                        window.variant(speed)  # (on this thread if the speed expected changed)
                        # meanwhile that speed's grid is the analysis thread's: _take reads this window's
                        # fingerprint at that speed, made already, and its others on grids of their own
                        analysed = analysis.submit(self._analyse, coming, speed,
                                                   None if self._open is None else self._open.track_id)
                    try:
                        told = self._take(window)
                    finally:
                        if analysed is not None:
                            analysed.result()
                    yield from told
                    window = coming if self.read_ahead else next(windows, None)
            finally:
                analysis.submit(held.close).result()
        yield from self.stop()

    def _hold(self, held: contextlib.ExitStack, memory: PostingMemory) -> None:
        """In the analysis thread: a connection of its own, and the stream's posting memory (both thread-local)."""
        held.enter_context(self.store.holding_connection())
        held.enter_context(self.store.lookup.sharing(memory))

    def _analyse(self, window: _Window, speed: float, track_id: int | None) -> None:
        """In the analysis thread: the window's fingerprint at ``speed``, and the postings it will most likely need.

        While a segment is open (``track_id``), that track's postings of the window's keys, for its
        targeted test; else all postings of its keys, which the window matched afresh at that speed
        (the stream's) then finds in the stream's posting memory.
        """
        fingerprint = window.variant(speed).fingerprints[0]
        if track_id is not None:
            window.fetched[track_id, speed] = track_postings(self.store, fingerprint, self.zone_ids, track_id)
            return
        hashes, _, zone_of_hash = _window_hashes(fingerprint, self.zone_ids)
        if hashes.size:
            key_zones, key_hashes, _ = query_keys(zone_of_hash, hashes)
            fetch_postings(self.store, key_zones, key_hashes)

    def _stream_windows(self, blocks: Iterable[np.ndarray]) -> Iterator[_Window]:
        for block in blocks:
            for start, samples in self._windows.push(block):
                yield _Window(start, samples, self.params, self._grid)
        for start, samples in self._windows.finish():
            yield _Window(start, samples, self.params, self._grid)

    def _expected_speed(self) -> float:
        """The speed the next window is first looked at: its open segment's, else the stream's last."""
        return self._open.speed if self._open is not None else self._speed

    def stop(self) -> list[Segment]:
        """The open segment, told as it stands (``cut_short`` if its evidence reached the last window heard)."""
        if self._open is None:
            return []
        segment, self._open = self._open, None
        if segment.windows < self.min_windows:
            return []
        end_s = segment.evidence_end_s()
        cut_short = self._heard_s - end_s <= self._windows.hop / self.params.sample_rate
        return self._tell(segment.told(self._heard_s if cut_short else end_s, cut_short))

    def summary(self) -> MonitorSummary:
        """What has been heard so far."""
        return MonitorSummary(self._heard_s, self._told, self._named_s)

    def _tell(self, segment: Segment) -> list[Segment]:
        self._told += 1
        self._named_s += segment.end_s - segment.start_s
        return [segment]

    def _take(self, window: _Window) -> list[Segment]:
        """Decide one window: continue the open segment, open another, or count a miss."""
        self._heard_s = max(self._heard_s, window.end_s)
        self._screened, self._screened_now = self._screened_now, False
        told: list[Segment] = []
        now = self._open
        if now is not None:
            # The window that confirms a segment shares half its hashes with the one that opened it: a
            # chance alignment there would be counted twice, so some of its votes must be its own.
            confirming = now.windows == 1
            tested = self._evidence(window, now.track_id, now.speed, now.predicted_offset(window, self.params),
                                    self.reach, after_s=now.opened_until_s if confirming else None)
            if self._continues(tested) and (not confirming or tested.fresh_votes >= MIN_FRESH_VOTES):
                now.extend(window, tested, self.params)
                self._answer(window, now.track_id, now.file_name, tested, now.speed, continued=True)
                self._previous = window
                return told
            now.misses += 1
            now.tail.append(tested.until_s)
        result = self._match(window)
        match = result.match
        if match is None:
            best = result.best
            self._notify(WindowAnswer(window.start_s, window.end_s, None, votes=best.votes if best else 0,
                                      speed=result.speed))
            if now is not None and (now.misses > self.max_gap or now.windows < self.min_windows):
                told += self._close(now)
        else:
            found = self._evidence(window, match.track_id, result.speed, match.offset_frames, 1)
            self._answer(window, match.track_id, match.file_name, found, result.speed)
            if now is not None and now.track_id == match.track_id and now.speed == result.speed and abs(
                    now.predicted_offset(window, self.params) - match.offset_frames) <= self.reach:
                now.extend(window, found, self.params)  # a look the targeted test does not take found it
            else:
                told += self._open_segment(window, match.track_id, match.file_name, result, found)
        self._previous = window
        return told

    def _grid(self, speed: float) -> WindowPeaks:
        """The stream's analysis at ``speed`` (hashing the voting zones only)."""
        if speed not in self._grids:
            self._grids[speed] = WindowPeaks(self.params, speed, list(self.zone_ids))
        return self._grids[speed]

    def _continues(self, tested: TrackEvidence) -> bool:
        return tested.votes >= MIN_CONTINUING_VOTES and tested.score > self.rule.score_needed()

    def _evidence(self, window: _Window, track_id: int, speed: float, offset_frames: int, reach: int,
                  after_s: float | None = None) -> TrackEvidence:
        return track_evidence(self.store, window.variant(speed).fingerprints[0], self.params, self.zone_ids, track_id,
                              offset_frames, reach, start_s=window.start_s, speed=speed, after_s=after_s,
                              postings=window.fetched.get((track_id, speed)))

    def _match(self, window: _Window) -> MatchResult:
        """The window matched afresh: at the stream's last speed first, then as ``fpstore match`` would.

        In a stretch nothing names, once the stream's speed is known (a segment was named), every other
        window looks at the stream's speed and at 1.0 only, not at the other speed factors: a track
        played at another speed is then named one window later, and its start found in the window before.
        """
        options = {"zone": self.zone, "top_k": 2, "rule": self.rule}
        screens = not (self._open_any and self._screened)
        evidence = self.evidence if screens else dataclasses.replace(self.evidence, speeds=(1.0,))
        if self._speed != 1.0:
            # one more test than the matcher's own looks: the union bound counts it
            result = match_fingerprint(self.store, [window.variant(self._speed)], self.params, count=evidence.count,
                                       tests=evidence.tests + 1, **options)  # type: ignore[arg-type]
            if result.match is not None:
                return result
        result = match_prepared(self.store, window.prepared(), self.params, evidence=evidence,
                                **options)  # type: ignore[arg-type]
        self._screened_now = screens and len(evidence.speeds) > 1 and result.match is None
        return result

    def _open_segment(self, window: _Window, track_id: int, file_name: str, result: MatchResult,
                      found: TrackEvidence) -> list[Segment]:
        """A track named afresh: its evidence from the window before on fixes the start; the open segment ends."""
        spf, speed = self.params.seconds_per_frame, result.speed
        times = [found.from_s]
        if self._previous is not None:
            back = found.offset_frames - round((window.start_s - self._previous.start_s) * speed / spf)
            times.append(self._evidence(self._previous, track_id, speed, back, 1).from_s)
        head = np.sort(np.concatenate(times))
        start = evidence_start(head)
        start_s = start if start is not None else (float(head[0]) if head.size else window.start_s)
        told: list[Segment] = []
        ending = self._open
        if ending is not None:
            ending_times = np.sort(np.concatenate(ending.tail)) if ending.tail else np.zeros(0)
            end_s = ending.evidence_end_s()
            if start_s < end_s:  # their evidence overlaps: a crossfade
                start_s = end_s = crossover(ending_times, head, start_s, end_s)
            self._open = None
            if ending.windows >= self.min_windows:
                told += self._tell(ending.told(end_s, cut_short=False))
        track_at_start = found.offset_frames * spf + (start_s - window.start_s) * speed
        self._open = _Open(track_id, file_name, speed, start_s, track_at_start, window.start_s,
                           found.offset_frames * spf, found.votes, max(found.score, result.score), window.end_s,
                           tail=[found.until_s])
        self._speed, self._open_any = speed, True
        return told

    def _close(self, segment: _Open) -> list[Segment]:
        self._open = None
        if segment.windows < self.min_windows:
            return []
        return self._tell(segment.told(segment.evidence_end_s(), cut_short=False))

    def _answer(self, window: _Window, track_id: int, file_name: str, evidence: TrackEvidence, speed: float,
                continued: bool = False) -> None:
        self._notify(WindowAnswer(window.start_s, window.end_s, track_id, file_name,
                                  evidence.offset_frames * self.params.seconds_per_frame, evidence.votes, speed,
                                  continued))

    def _notify(self, answer: WindowAnswer) -> None:
        if self.on_window is not None:
            self.on_window(answer)


def monitor(store: Catalogue, blocks: Iterable[np.ndarray], **options: object) -> Iterator[Segment]:
    """Match a stream window by window and yield its segments as they end (:class:`StreamMonitor`'s options).

    Parameters
    ----------
    store : Catalogue
    blocks : iterable of np.ndarray [shape=(m,)], float32, mono, at the database's sample rate
        The stream, in pieces of any size; consumed lazily (an endless stream works).
    **options
        Keyword arguments of :class:`StreamMonitor`.

    Yields
    ------
    segment : Segment
    """
    yield from StreamMonitor(store, **options).run(blocks)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StreamEvent:
    """What one of several streams monitored at once said (:func:`monitor_streams`): exactly one field is set.

    Attributes
    ----------
    source : str
        The stream, as given.
    segment : Segment or None
        A segment, as it ended.
    window : WindowAnswer or None
        A window's answer (when windows are asked for).
    summary : MonitorSummary or None
        The stream's summary: its last event when it was monitored to its end or stopped.
    error : str or None
        Why the stream could not be monitored (one line naming it): its last event then.
    """

    source: str
    segment: Segment | None = None
    window: WindowAnswer | None = None
    summary: MonitorSummary | None = None
    error: str | None = None

    @property
    def last(self) -> bool:
        """True for the stream's last event."""
        return self.summary is not None or self.error is not None


class _Stopped(KeyboardInterrupt):
    """SIGTERM reached a stream's process: it stops as on Ctrl-C, telling the open segment first."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _monitor_in_process(url: str, source: str, options: dict[str, object], windows: bool,
                        events: multiprocessing.queues.Queue[StreamEvent]) -> None:
    """One stream in a process of its own: its events into ``events``, a summary or an error last."""
    from fpstore.db.catalogue import open_store  # the child's own connections

    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with open_store(url) as store:
            session = StreamMonitor(store, **options,  # type: ignore[arg-type]
                                    on_window=(lambda answer: events.put(StreamEvent(source, window=answer)))
                                    if windows else None, read_ahead=os.path.isfile(source))
            try:
                for segment in session.run(audio_blocks(source, store.params(duration_s=None).sample_rate)):
                    events.put(StreamEvent(source, segment=segment))
            except KeyboardInterrupt:
                for segment in session.stop():
                    events.put(StreamEvent(source, segment=segment))
            events.put(StreamEvent(source, summary=session.summary()))
    except FpstoreError as exc:
        reason = str(exc)
        events.put(StreamEvent(source, error=reason if reason.startswith(f"{source}: ") else f"{source}: {reason}"))


def monitor_streams(url: str, sources: Sequence[str], *, jobs: int, windows: bool = False,
                    **options: object) -> Iterator[StreamEvent]:
    """Monitor several streams at once, each in a process of its own, at most ``jobs`` at a time.

    Each process opens the database at ``url`` and runs a :class:`StreamMonitor` over its stream (a file,
    not standard input); the events of all of them are yielded as they come, so the segments of every
    stream are told as they end. A stream that cannot be monitored (a file that does not decode) gives
    an error event and the others go on. When the caller is interrupted (Ctrl-C, or the
    ``KeyboardInterrupt`` a SIGTERM handler raises), the running streams are stopped (SIGTERM): each tells
    its open segment and its summary, no stream is started any more, and the interruption is raised
    again once they have.

    Parameters
    ----------
    url : str
        The database's URL, with its password (the processes connect themselves).
    sources : sequence of str
        Audio files.
    jobs : int
        Streams monitored at once, >= 1.
    windows : bool
        Also yield every window's answer.
    **options
        Keyword arguments of :class:`StreamMonitor` (picklable: no ``on_window``).

    Yields
    ------
    event : StreamEvent
        Per stream in order of time; each stream's last is its summary or its error.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs={jobs!r} must be an integer >= 1")
    processes = _StreamProcesses(url, options, windows)
    waiting = list(sources)
    interrupted: KeyboardInterrupt | None = None
    try:
        while waiting or processes.running:
            while waiting and len(processes.running) < jobs and interrupted is None:
                processes.start(waiting.pop(0))
            try:
                event = processes.next_event()
                if event is not None:
                    yield event
            except KeyboardInterrupt as stop:
                if interrupted is None:
                    interrupted, waiting = stop, []
                    processes.stop()
    finally:
        processes.stop()  # the caller gave up early (the generator closed): no stream goes on alone
    if interrupted is not None:
        raise interrupted


class _StreamProcesses:
    """The processes of :func:`monitor_streams` that run, and the queue of their events."""

    def __init__(self, url: str, options: dict[str, object], windows: bool) -> None:
        self.url, self.options, self.windows = url, options, windows
        self.context = multiprocessing.get_context("spawn")  # no copy of the caller's connections and threads
        self.events: multiprocessing.queues.Queue[StreamEvent] = self.context.Queue()
        self.running: dict[str, multiprocessing.process.BaseProcess] = {}

    def start(self, source: str) -> None:
        process = self.context.Process(target=_monitor_in_process, name=f"fpstore monitor {source}",
                                       args=(self.url, source, self.options, self.windows, self.events))
        process.start()
        self.running[source] = process

    def next_event(self) -> StreamEvent | None:
        """The next event (None after a second without one); a process that died gives its stream's error."""
        try:
            event = self.events.get(timeout=1.0)
        except queue.Empty:
            for source, process in list(self.running.items()):
                if process.exitcode is not None and self.events.empty():  # ended without its last event
                    del self.running[source]
                    return StreamEvent(source, error=f"{source}: the monitor's process ended with status "
                                                     f"{process.exitcode}")
            return None
        if event.last:
            self.running.pop(event.source).join()
        return event

    def stop(self) -> None:
        """Ask every running stream to stop (SIGTERM): each then tells its open segment and its summary."""
        for process in self.running.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)


def window_frames(seconds: float, params: FingerprintParams, what: str) -> int:
    """``seconds`` as a whole number of STFT frames (at least 1), so that window offsets are whole frames."""
    if not np.isfinite(seconds) or seconds <= 0:
        raise ParameterError(f"{what}={seconds!r} must be a number of seconds > 0")
    return max(1, round(seconds / params.seconds_per_frame))


def audio_blocks(source: str | os.PathLike[str], sample_rate: int, *, stdin: BinaryIO | None = None) -> Iterator[np.ndarray]:
    """Decode a file, or standard input for ``"-"``, to mono blocks at ``sample_rate``, as files are decoded.

    Files soundfile opens are decoded block by block; other formats (M4A) are decoded whole by the
    fallback decoder. Standard input is read as it arrives (WAV, including ffmpeg's unknown-length
    WAV, and anything libsndfile reads from a pipe).

    Parameters
    ----------
    source : str or path-like
        A file, or ``"-"``.
    sample_rate : int
        Hz.
    stdin : binary file object, optional
        Standard input's binary stream (``sys.stdin.buffer``); read through its file descriptor when
        it has one, so that a pipe needs no seeking.
    """
    if os.fspath(source) == STDIN_ARGUMENT:
        if stdin is None:
            raise ParameterError("'-' reads standard input, but none was given")
        try:
            reader: int | BinaryIO = stdin.fileno()
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
            reader = stdin
        yield from stream_audio_from(reader, STDIN_LABEL, sample_rate=sample_rate)
    elif can_stream(source):
        yield from stream_audio(source, sample_rate=sample_rate, block_s=1.0)
    else:
        yield load_audio(source, sample_rate=sample_rate, duration_s=None)


