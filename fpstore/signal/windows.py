"""Overlapping windows over an endless signal, in a fixed buffer of one window's samples.

A monitor cuts a stream into windows of ``window`` samples that start every ``hop`` samples. The
stream arrives in blocks of any length; :class:`SlidingWindows` copies each block into a buffer that
never holds more than one window, hands out every window as soon as its last sample has arrived, and
keeps only the samples the next window shares with it. Memory is therefore one window whatever the
stream's length (``tests/test_monitor.py`` feeds it many minutes of audio and checks).

Conventions
-----------
- Samples and sample counts are at the signal's rate; window starts are sample indices from the
  stream's first sample.
- Windows are float32 copies: the caller may keep them while the buffer moves on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fpstore.errors import ParameterError


class SlidingWindows:
    """Windows of ``window`` samples every ``hop`` samples, from blocks pushed one after another.

    Parameters
    ----------
    window : int
        Samples per window.
    hop : int
        Samples between the starts of consecutive windows, ``1 <= hop <= window``.

    Attributes
    ----------
    buffered : int
        Samples held now (never more than ``window``).
    seen : int
        Samples pushed so far.

    Examples
    --------
    >>> windows = SlidingWindows(4, 2)
    >>> [(start, w.tolist()) for start, w in windows.push(np.arange(7, dtype=np.float32))]
    [(0, [0.0, 1.0, 2.0, 3.0]), (2, [2.0, 3.0, 4.0, 5.0])]
    >>> [(start, w.tolist()) for start, w in windows.finish()]
    [(4, [4.0, 5.0, 6.0])]
    """

    def __init__(self, window: int, hop: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ParameterError(f"window={window!r} must be a whole number of samples >= 1")
        if isinstance(hop, bool) or not isinstance(hop, int) or not 1 <= hop <= window:
            raise ParameterError(f"hop={hop!r} must be a whole number of samples in [1, window={window}]")
        self.window, self.hop = window, hop
        self._buffer = np.zeros(window, dtype=np.float32)
        self.buffered = 0
        self.seen = 0
        self._start = 0  # stream index of the buffer's first sample
        self._fresh = False  # the buffer holds samples no window handed out has covered

    def push(self, block: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Add ``block`` (mono samples); yield ``(start, window)`` for every window it completes."""
        samples = np.asarray(block, dtype=np.float32).reshape(-1)
        taken = 0
        while taken < samples.size:
            # Copy only what fits: the buffer never grows past one window, whatever the block's size.
            n = min(self.window - self.buffered, samples.size - taken)
            self._buffer[self.buffered:self.buffered + n] = samples[taken:taken + n]
            self.buffered += n
            self.seen += n
            taken += n
            self._fresh = True
            if self.buffered == self.window:
                yield self._start, np.array(self._buffer)
                self._advance()

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """At the end of the stream: the last, shorter window over samples no window has covered, if any."""
        if self._fresh and self.buffered:
            yield self._start, np.array(self._buffer[:self.buffered])
        self._fresh = False

    def _advance(self) -> None:
        kept = self.window - self.hop
        self._buffer[:kept] = self._buffer[self.hop:]  # numpy copies overlapping ranges correctly
        self.buffered = kept
        self._start += self.hop
        self._fresh = False
