"""Fingerprints of a stream's overlapping windows, each stream position analysed once per speed.

A monitor matches windows of ``window`` samples every ``hop`` samples (:mod:`fpstore.signal.windows`):
with a 10 s window and a 5 s hop, fingerprinting every window from its own samples computes each
second of the stream twice, at every speed tried. :class:`WindowPeaks` follows one speed factor
along the stream instead. Its STFT frames lie on one grid for the whole stream (frame ``k`` is
centred on stream time ``k * hop_length / (speed * sample_rate)``), and the peaks of the frames a
window shares with the one before are taken from that window's analysis: only the frames new to a
window are transformed and searched for peaks (with :data:`CONTEXT_FRAMES` before them, and
resampled from a little earlier, so that they come out as from the whole stream). The frames near a
window's end are analysed with the window's end padded with zeros, as a window fingerprinted alone
is; they are analysed again by the next window, which has the samples after them. The hashes are
then made from the window's peaks (:func:`fpstore.signal.hashing.zone_hashes`), times relative to the
window's first frame.

A window's fingerprint is therefore its stream's, not the window's alone: at speed 1.0 its peaks are
those of the whole stream (:func:`fpstore.signal.analysis.analyze`) in the window, bar the frames
near the ends that the stream's edges decide, and a window that follows one analysed at its speed is
cut from the same peaks. At another speed a window's samples are resampled from a little before its
new frames, and land within half a sample of the grid: the peaks are the whole resampled stream's
but where two nearly tie; and the window's first frame sits up to half a frame from the grid's frame
its times count from. A window whose predecessor was not
analysed at that speed (or shares too little with it) is analysed whole, as alone.

Conventions
-----------
- Samples are mono float32 at ``params.sample_rate``; a window's ``start`` is its first sample's index
  in the stream, a whole number of STFT hops (as :class:`fpstore.monitor.StreamMonitor` cuts them).
- Frames are STFT frames of the resampled stream (``hop_length`` resampled samples each); a speed is
  the rate the stream plays its tracks at (1.02: 2 % fast), undone by resampling the stream to
  ``speed`` times its length (:func:`fpstore.signal.variants.change_speed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fpstore.signal.analysis import Fingerprint, fingerprint_from_peaks
from fpstore.signal.hashing import zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import Peaks, find_peaks
from fpstore.signal.spectrogram import frame_magnitudes
from fpstore.signal.variants import change_speed

#: Frames of context analysed before a window's first new frame, and left undecided before its last,
#: besides the peak neighbourhood's half-width (``peak_dist_time``) and the STFT's half frame: the
#: resampler's filter rings for a few hundred samples at a chunk's edges.
EDGE_FRAMES = 1


class WindowPeaks:
    """The windows of one stream at one speed, each analysed from where the window before it left off.

    Windows are given in stream order; one that starts before the last one given is analysed alone.

    Parameters
    ----------
    params : FingerprintParams
    speed : float
    zones : sequence of str, optional
        The zones hashed (by name; all of ``params.zones`` by default): a monitor needs only those that vote.

    Examples
    --------
    >>> params = FingerprintParams()
    >>> y = np.random.default_rng(0).standard_normal(10 * 22050).astype(np.float32)
    >>> follow = WindowPeaks(params, 1.0)
    >>> first = follow.fingerprint(0, y[:5 * 22528])
    >>> second = follow.fingerprint(11 * 1024, y[11 * 1024:11 * 1024 + 5 * 22528])
    >>> follow.reused_frames > 0
    True
    """

    def __init__(self, params: FingerprintParams, speed: float, zones: Sequence[str] | None = None) -> None:
        self.params, self.speed = params, speed
        self.zones = [zone for zone in params.zones if zones is None or zone.name in zones]
        self.context = params.peak_dist_time + math.ceil(params.n_fft / 2 / params.hop_length) + EDGE_FRAMES
        self._peaks = _no_peaks()  # decided peaks, grid frames, of frames [self._first, self._decided)
        self._first = 0
        self._decided = 0
        self._start = 0  # the last window's first sample
        #: Frames taken from the window before, over all windows so far (what following saved).
        self.reused_frames = 0

    def fingerprint(self, start: int, samples: np.ndarray) -> Fingerprint:
        """The fingerprint of the window of ``samples`` whose first sample is the stream's ``start``.

        Parameters
        ----------
        start : int
            Stream index of the window's first sample.
        samples : np.ndarray [shape=(n,)], float32
            The window.

        Returns
        -------
        fingerprint : Fingerprint
            Of the zones hashed; anchor times in frames from the window's first frame (its start on
            the speed's grid, rounded).

        Warns
        -----
        UserWarning
            If the window has no peaks (silence), as :func:`fpstore.signal.fingerprint.fingerprint_signal`.
        """
        if start < self._start:
            # an earlier window, asked for after a later one (a look back): analysed alone, the grid's
            # state left for the windows to come
            return WindowPeaks(self.params, self.speed, [zone.name for zone in self.zones]).fingerprint(start, samples)
        self._start = start
        params, speed = self.params, self.speed
        hop, half = params.hop_length, params.n_fft // 2
        first = math.ceil(start * speed / hop - 1e-9)  # grid frames centred inside the window
        end = math.floor((start + samples.size) * speed / hop + 1e-9) + 1
        # Frames up to `self._decided` are known; the new ones need `context` frames before them, whose
        # samples (and the resampler's lead-in) must lie inside this window.
        new_from = self._decided
        lead_in = ((new_from - self.context) * hop - half - hop) / speed  # stream sample
        follows = self._first <= first < new_from < end and lead_in >= start
        if not follows:
            new_from, self._peaks = first, _no_peaks()
        analysed_from = new_from - self.context
        # The samples of frames [analysed_from, end), zero outside the window (as a window alone pads).
        chunk_from = max(start, math.floor((analysed_from * hop - half - hop) / speed))
        resampled = change_speed(samples[chunk_from - start:], speed, params.sample_rate)
        grid_from = analysed_from * hop - half  # the padded signal's first sample, on the speed's grid
        padded = np.zeros((end - 1) * hop + half - grid_from + half, dtype=np.float32)
        at = round(chunk_from * speed) - grid_from  # where the resampled chunk lands in `padded`
        lo, hi = max(at, 0), min(at + resampled.size, padded.size)
        if hi > lo:
            padded[lo:hi] = resampled[lo - at:hi - at]
        magnitudes = frame_magnitudes(padded, n_fft=params.n_fft, hop_length=hop, bin_max=params.bin_max)
        found = find_peaks(magnitudes, dist_freq=params.peak_dist_freq, dist_time=params.peak_dist_time,
                           thresh=params.peak_thresh)
        t_frames = found.t_frames.astype(np.int64) + analysed_from
        fresh = t_frames >= new_from
        new = Peaks(t_frames[fresh], found.f_bins[fresh], found.magnitudes[fresh])
        kept = self._peaks.t_frames >= first
        old = Peaks(self._peaks.t_frames[kept], self._peaks.f_bins[kept], self._peaks.magnitudes[kept])
        peaks = Peaks(*(np.concatenate([a, b]) for a, b in zip(old, new)))
        if follows:
            self.reused_frames += new_from - first
        # Remember what the next window may reuse: the frames whose neighbourhood and samples were whole.
        self._decided = max(new_from, end - self.context)
        decided = peaks.t_frames < self._decided
        self._peaks = Peaks(peaks.t_frames[decided], peaks.f_bins[decided], peaks.magnitudes[decided])
        self._first = first
        origin = round(start * speed / hop)
        relative = Peaks((peaks.t_frames - origin).astype(np.int32), peaks.f_bins, peaks.magnitudes)
        return fingerprint_from_peaks(relative, zone_hashes(relative, self.zones, top_k=params.top_k_targets),
                                      params, n_samples=round(samples.size * speed), n_frames=end - origin)


def _no_peaks() -> Peaks:
    return Peaks(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
