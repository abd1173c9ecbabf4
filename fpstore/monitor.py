"""Monitoring: a long recording or a live stream, matched window by window, told as track segments.

The stream is cut into overlapping windows (:class:`fpstore.signal.windows.SlidingWindows`: memory
holds one window whatever the stream's length); each window is fingerprinted and matched as a query
(:func:`fpstore.match.match_fingerprint`, one posting lookup per window) and gives a
:class:`WindowAnswer`. :class:`Segmenter` turns the answers into :class:`Segment` s: consecutive
windows naming the same track at the same alignment (the track's time minus the stream's time, equal
within a tolerance) are one segment, told when it ends. A window or two that break the run (unknown,
or a section the track repeats, matched at its other place) do not split it when the run goes on after
them; a segment of a single window is taken for a chance match and not told.

Where a segment starts and ends inside its first and last windows is estimated from the votes: a window
that holds only part of a track collects votes in proportion to that part, so the boundary window's
share of the votes of the segment's fullest window (per second of window) says how many of its seconds
belong to the track. When the first window's offset is negative, the track began inside it, at an
exactly known time. On the test mix (``tests/test_monitor.py``) every boundary comes out within one hop.

Conventions
-----------
- Times ending in ``_s`` are seconds: stream times from the stream's first sample, track times from
  the track's start.
- A window's ``offset_s`` is the track time at the window's first sample (negative if the track begins
  inside the window), as :class:`fpstore.match.Candidate` reports it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from fpstore.db.store import Store
from fpstore.errors import ParameterError
from fpstore.match import (
    ALL_ZONES,
    DEFAULT_ZONE,
    PLAIN_MIN_VOTES_ALL_ZONES,
    PLAIN_MIN_VOTES_ONE_ZONE,
    STDIN_ARGUMENT,
    STDIN_LABEL,
    DecisionRule,
    match_fingerprint,
)
from fpstore.signal.audio import can_stream, load_audio, stream_audio, stream_audio_from
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.params import FingerprintParams
from fpstore.signal.windows import SlidingWindows

#: Default window and hop, seconds. 10 s holds enough hashes to name a track (the 12-track corpus
#: matched 5 s excerpts); a 5 s hop places every boundary within 5 s and matches each second twice.
DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0
#: Frames two windows' alignments may differ by and still be one segment (resampling, noise).
DEFAULT_TOLERANCE_FRAMES = 2
#: Windows a segment may span that name nothing or something else, when the same track at the same
#: alignment comes back after them: a quiet passage, a burst of noise, or a section the track repeats,
#: matched at its other occurrence (seen on real music).
DEFAULT_MAX_GAP = 1
#: Fewest windows a segment needs to be told: a lone window is most often a chance match (on real
#: music, an unknown track's window reached 19 votes for a stored one), while a track heard for
#: ``window + hop`` seconds fills two windows.
DEFAULT_MIN_WINDOWS = 2


@dataclass(frozen=True)
class WindowAnswer:
    """What one window matched.

    Attributes
    ----------
    start_s, end_s : float
        The window's stream time range.
    track_id : int or None
        The accepted track; None when the window matched nothing with confidence ("unknown").
    file_name : str
        The accepted track's file name ("" when unknown).
    offset_s : float
        Track time at the window's first sample (0 when unknown).
    votes : int
        Votes of the best candidate, accepted or not.
    """

    start_s: float
    end_s: float
    track_id: int | None
    file_name: str = ""
    offset_s: float = 0.0
    votes: int = 0

    @property
    def alignment_s(self) -> float:
        """Track time minus stream time: constant while one track plays on."""
        return self.offset_s - self.start_s

    @property
    def votes_per_s(self) -> float:
        """Votes per second of window."""
        return self.votes / max(self.end_s - self.start_s, 1e-9)


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
        Votes of the segment's best window.
    windows : int
        Windows that named the track.
    """

    start_s: float
    end_s: float
    track_id: int
    file_name: str
    track_start_s: float
    track_end_s: float
    votes: int
    windows: int


@dataclass
class _OpenSegment:
    first: WindowAnswer
    last: WindowAnswer
    best_votes: int
    votes_per_s_total: float  # summed over the segment's windows, for the typical rate of a full window
    windows: int = 1

    def takes(self, answer: WindowAnswer, tolerance_s: float) -> bool:
        return answer.track_id == self.last.track_id and abs(answer.alignment_s - self.last.alignment_s) <= tolerance_s

    def extend(self, answer: WindowAnswer) -> None:
        self.last, self.windows = answer, self.windows + 1
        self.best_votes = max(self.best_votes, answer.votes)
        self.votes_per_s_total += answer.votes_per_s

    def close(self) -> Segment:
        first, last = self.first, self.last
        full_rate = self._full_window_votes_per_s()
        if first.offset_s < 0:  # the track's first second lies inside the window: the start is exact
            start = first.start_s - first.offset_s
        else:
            start = first.end_s - min(first.end_s - first.start_s, first.votes / full_rate)
        end = last.start_s + min(last.end_s - last.start_s, last.votes / full_rate)
        start, end = float(min(max(start, first.start_s), end)), float(end)
        assert first.track_id is not None
        return Segment(start, end, first.track_id, first.file_name, start + first.alignment_s,
                       end + last.alignment_s, self.best_votes, self.windows)

    def _full_window_votes_per_s(self) -> float:
        """Votes per second of a window the track fills.

        The mean over the inner windows (the first and last may be partly filled), or the better of the
        first and last when there are no others.
        """
        if self.windows < 3:
            return max(self.first.votes_per_s, self.last.votes_per_s, 1e-9)
        inner_total = self.votes_per_s_total - self.first.votes_per_s - self.last.votes_per_s
        return max(inner_total / (self.windows - 2), 1e-9)


class Segmenter:
    """Per-window answers in stream order → segments, each given out once it has ended.

    Pure and bounded: it keeps one open segment and at most ``max_gap`` windows after it.

    Parameters
    ----------
    tolerance_s : float
        Largest difference of alignment (track time minus stream time) between consecutive windows of
        one segment.
    max_gap : int
        Windows a segment may span that do not continue it (unknown, another track, or the same track
        at another alignment), if the same track at the same alignment follows them. A segment ends
        once more windows than that have not continued it; they are then read afresh.
    min_windows : int
        Segments of fewer windows are not told (taken for chance matches).

    Examples
    --------
    >>> segmenter = Segmenter(tolerance_s=0.1)
    >>> answers = [WindowAnswer(0.0, 10.0, 7, "a.wav", 30.0, 50), WindowAnswer(5.0, 15.0, 7, "a.wav", 35.0, 50)]
    >>> [segment for answer in answers for segment in segmenter.push(answer)]
    []
    >>> [(s.start_s, s.end_s, s.track_start_s, s.track_end_s) for s in segmenter.finish()]
    [(0.0, 15.0, 30.0, 45.0)]
    """

    def __init__(self, tolerance_s: float, max_gap: int = DEFAULT_MAX_GAP,
                 min_windows: int = DEFAULT_MIN_WINDOWS) -> None:
        if not np.isfinite(tolerance_s) or tolerance_s < 0:
            raise ParameterError(f"tolerance_s={tolerance_s!r} must be a number >= 0")
        for name, value, least in (("max_gap", max_gap, 0), ("min_windows", min_windows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ParameterError(f"{name}={value!r} must be an integer >= {least}")
        self.tolerance_s, self.max_gap, self.min_windows = tolerance_s, max_gap, min_windows
        self._open: _OpenSegment | None = None
        self._pending: list[WindowAnswer] = []  # windows since the open segment's last one

    def push(self, answer: WindowAnswer) -> list[Segment]:
        """Take the next window's answer; return the segments that have ended."""
        if self._open is None:
            if answer.track_id is not None:
                self._open = _OpenSegment(answer, answer, answer.votes, answer.votes_per_s)
            return []
        if self._open.takes(answer, self.tolerance_s):
            self._open.extend(answer)
            self._pending.clear()  # the windows in between were a gap
            return []
        self._pending.append(answer)
        if len(self._pending) <= self.max_gap:
            return []
        return self._close_and_replay()

    def finish(self) -> list[Segment]:
        """At the end of the stream: every segment still open or among the waiting windows."""
        ended: list[Segment] = []
        while self._open is not None or self._pending:
            ended += self._close_and_replay()
        return ended

    def _close_and_replay(self) -> list[Segment]:
        """Close the open segment; read the windows that came after it again, as if it never was."""
        ended = [self._open.close()] if self._open is not None and self._open.windows >= self.min_windows else []
        self._open = None
        waiting, self._pending = self._pending, []
        for answer in waiting:
            ended += self.push(answer)
        return ended


def segments_of(answers: Iterable[WindowAnswer], tolerance_s: float, max_gap: int = DEFAULT_MAX_GAP,
                min_windows: int = DEFAULT_MIN_WINDOWS) -> Iterator[Segment]:
    """Every segment of a sequence of window answers (:class:`Segmenter` over all of them)."""
    segmenter = Segmenter(tolerance_s, max_gap, min_windows)
    for answer in answers:
        yield from segmenter.push(answer)
    yield from segmenter.finish()


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


def window_rule(zone: str) -> DecisionRule:
    """The rule a window is named by unless another is given: the vote-count rule measured for the notebook's vote.

    A window is matched once, over hash pairs, as the notebook votes. The calibrated rule of
    ``fpstore match`` was tried on the README's real-music mix (six tracks stored): it split a track at a
    repeated section and named two windows of an unknown track (6 and 5 anchors), where these counts
    made neither mistake.
    """
    return DecisionRule(min_votes=PLAIN_MIN_VOTES_ALL_ZONES if zone == ALL_ZONES else PLAIN_MIN_VOTES_ONE_ZONE)


def monitor(
    store: Store,
    blocks: Iterable[np.ndarray],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float = DEFAULT_HOP_S,
    zone: str = DEFAULT_ZONE,
    rule: DecisionRule | None = None,
    tolerance_frames: int = DEFAULT_TOLERANCE_FRAMES,
    max_gap: int = DEFAULT_MAX_GAP,
    min_windows: int = DEFAULT_MIN_WINDOWS,
    on_window: Callable[[WindowAnswer], None] | None = None,
) -> Iterator[Segment]:
    """Match a stream window by window and yield its segments as they end.

    Parameters
    ----------
    store : Store
    blocks : iterable of np.ndarray [shape=(m,)], float32, mono, at the database's sample rate
        The stream, in pieces of any size; consumed lazily (an endless stream works).
    window_s, hop_s : float
        Window length and the time between window starts, seconds (rounded to whole STFT frames).
    zone : str
        Zone whose hashes vote, or ``"all"``.
    rule : DecisionRule, optional
        When a window's best track counts as identified; by default :func:`window_rule` of ``zone``.
    tolerance_frames : int
        Alignment difference, in frames, still counted as the same segment.
    max_gap : int
        Windows a segment may span that do not continue it.
    min_windows : int
        Fewest windows a segment needs to be told.
    on_window : callable, optional
        Called with every window's answer, as it is decided.

    Yields
    ------
    segment : Segment

    Raises
    ------
    NotFound
        If the database holds no fingerprints yet.
    ParameterError
        If a length is not positive, the hop exceeds the window, or the zone is unknown.
    """
    store.check_schema()
    params = store.params(duration_s=None)
    rule = rule if rule is not None else window_rule(zone)
    window = window_frames(window_s, params, "window_s") * params.hop_length
    hop = window_frames(hop_s, params, "hop_s") * params.hop_length
    windows = SlidingWindows(window, hop)
    segmenter = Segmenter(tolerance_frames * params.seconds_per_frame, max_gap, min_windows)

    def answers() -> Iterator[WindowAnswer]:
        for block in blocks:
            for start, samples in windows.push(block):
                yield _answer(store, params, start, samples, zone, rule)
        for start, samples in windows.finish():
            yield _answer(store, params, start, samples, zone, rule)

    for answer in answers():
        if on_window is not None:
            on_window(answer)
        yield from segmenter.push(answer)
    yield from segmenter.finish()


def _answer(store: Store, params: FingerprintParams, start: int, samples: np.ndarray, zone: str,
            rule: DecisionRule) -> WindowAnswer:
    """Match one window (one posting lookup) and say what it found."""
    start_s, end_s = start / params.sample_rate, (start + samples.size) / params.sample_rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a silent window has no peaks: it is simply unknown
        fingerprint = fingerprint_signal(samples, params)
    result = match_fingerprint(store, fingerprint, params, zone=zone, top_k=2, rule=rule, count="pairs")
    best = result.best
    if result.match is None:
        return WindowAnswer(start_s, end_s, None, votes=best.votes if best else 0)
    return WindowAnswer(start_s, end_s, result.match.track_id, result.match.file_name, result.match.offset_s,
                        result.match.votes)
