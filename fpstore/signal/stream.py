"""Fingerprint a long file block by block with bounded memory, giving exactly the one-shot fingerprint.

A 3-hour track held whole would need ~1 GB of 22.05 kHz samples (4 GB of native stereo float32) and
~2 GB of complex STFT. Here memory holds one block of audio (``block_s`` seconds), the spectrogram
frames of that block plus ``peak_dist_time`` frames of context on each side, the peak list (12 bytes a
peak) and the postings (which the writer needs anyway).

Why each stage equals the one-shot pipeline (``tests/test_speed_paths.py`` checks all of it):

- decoding: :func:`fpstore.signal.audio.stream_audio` (soxr's streaming resampler gives its one-shot samples);
- STFT: frame ``t`` is computed from the samples ``[t * hop - n_fft / 2, t * hop + n_fft / 2)`` of the
  zero-padded signal with the same librosa arithmetic, whichever block it falls in;
- peaks: a frame's max-filter result depends only on frames within ``peak_dist_time``; a frame is
  decided once that many frames follow it (or the signal ended), and the filter window starts
  ``peak_dist_time`` frames before the first undecided frame (or at frame 0, where the one-shot filter
  pads with zeros just the same);
- hashes: an anchor's candidates are the peaks up to ``max(dt_max_frames)`` frames later; anchors are
  hashed in time ranges, each with the peaks that follow it up to that margin, and only the anchors of
  the range are kept. Relative peak order is unchanged, so top-k ties break the same way;
- the fingerprint: :func:`fpstore.signal.analysis.fingerprint_from_peaks`, the one-shot path's last step.

Each block is checked with :func:`fpstore.signal.validate.valid_audio` as it arrives, as the one-shot
path checks its whole signal.

Conventions
-----------
- Times are STFT frames; ``hop_length`` samples at ``sample_rate`` Hz.
- Blocks are mono floating-point samples at ``sample_rate`` Hz, computed in float32 (the decoder's dtype).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from fpstore.signal.analysis import Fingerprint, fingerprint_from_peaks
from fpstore.signal.audio import stream_audio
from fpstore.signal.hashing import ZoneHashes, zone_hashes
from fpstore.signal.params import FingerprintParams
from fpstore.signal.peaks import Peaks, constellation_map, extract_peaks
from fpstore.signal.spectrogram import frame_magnitudes
from fpstore.signal.validate import valid_audio

#: Anchor frames hashed per call of :func:`fpstore.signal.hashing.zone_hashes` (about 15 minutes of audio).
HASH_RANGE_FRAMES = 20_000


class _PeakStream:
    """Consumes spectrogram frames in order, emits the peaks of every frame whose neighbourhood is complete."""

    def __init__(self, params: FingerprintParams) -> None:
        self.params = params
        self.frames: np.ndarray | None = None  # (bins, m) magnitudes of frames [first, first + m)
        self.first = 0
        self.decided = 0  # peaks are known for frames < decided
        self.peaks: list[Peaks] = []

    def push(self, magnitudes: np.ndarray, *, final: bool) -> None:
        self.frames = magnitudes if self.frames is None else np.concatenate([self.frames, magnitudes], axis=1)
        end = self.first + self.frames.shape[1]
        reach = self.params.peak_dist_time
        decide_to = end if final else end - reach
        if decide_to <= self.decided:
            return
        window_start = max(self.first, self.decided - reach)
        window = self.frames[:, window_start - self.first:]
        cmap = constellation_map(window, dist_freq=self.params.peak_dist_freq, dist_time=reach,
                                 thresh=self.params.peak_thresh)
        lo, hi = self.decided - window_start, decide_to - window_start
        found = extract_peaks(np.ascontiguousarray(window[:, lo:hi]), np.ascontiguousarray(cmap[:, lo:hi]))
        self.peaks.append(Peaks(found.t_frames + np.int32(self.decided), found.f_bins, found.magnitudes))
        self.decided = decide_to
        keep_from = max(self.first, decide_to - reach)
        self.frames = np.array(self.frames[:, keep_from - self.first:], order="C")  # frees the older frames
        self.first = keep_from

    def all_peaks(self) -> Peaks:
        if not self.peaks:
            return Peaks(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32))
        return Peaks(*(np.concatenate(parts) for parts in zip(*self.peaks)))


def stream_peaks(blocks: Iterable[np.ndarray], params: FingerprintParams) -> tuple[Peaks, int, int]:
    """Spectral peaks of a signal given as consecutive sample blocks.

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(m,)], float32, mono, at ``params.sample_rate`` Hz
        Consecutive pieces of one signal, of any lengths (empty ones too). Other floating-point dtypes
        are converted to float32.
    params : FingerprintParams

    Returns
    -------
    peaks : Peaks
        Equal to ``find_peaks(magnitude_spectrogram(concatenated blocks))``.
    n_samples : int
        Samples seen.
    n_frames : int
        STFT frames (``1 + n_samples // hop_length``; 0 for an empty signal).

    Raises
    ------
    ParameterError
        When a block is not finite mono floating-point audio (raised as that block arrives).
    """
    n_fft, hop = params.n_fft, params.hop_length
    half = n_fft // 2
    pending = np.zeros(half, dtype=np.float32)  # padded signal from padded index pending_start on
    pending_start = 0
    next_frame = 0
    n_samples = 0
    peak_stream = _PeakStream(params)
    for block in blocks:
        n_samples += valid_audio(block).shape[0]
        pending = np.concatenate([pending, block.astype(np.float32, copy=False)])
        n_ready = (pending_start + pending.shape[0] - n_fft) // hop + 1 - next_frame
        if n_ready <= 0:
            continue
        segment = pending[next_frame * hop - pending_start: (next_frame + n_ready - 1) * hop + n_fft - pending_start]
        peak_stream.push(frame_magnitudes(segment, n_fft=n_fft, hop_length=hop, bin_max=params.bin_max), final=False)
        next_frame += n_ready
        pending = np.array(pending[next_frame * hop - pending_start:])  # frees the consumed samples
        pending_start = next_frame * hop
    if n_samples == 0:
        return peak_stream.all_peaks(), 0, 0
    n_frames = 1 + n_samples // hop
    pending = np.concatenate([pending, np.zeros(half, dtype=np.float32)])
    if n_frames > next_frame:
        segment = pending[next_frame * hop - pending_start: (n_frames - 1) * hop + n_fft - pending_start]
        magnitudes = frame_magnitudes(segment, n_fft=n_fft, hop_length=hop, bin_max=params.bin_max)
    else:
        magnitudes = np.zeros((params.bin_max or n_fft // 2 + 1, 0), dtype=np.float32)
    peak_stream.push(magnitudes, final=True)
    return peak_stream.all_peaks(), n_samples, n_frames


def ranged_zone_hashes(peaks: Peaks, params: FingerprintParams, *,
                       range_frames: int = HASH_RANGE_FRAMES) -> dict[str, ZoneHashes]:
    """:func:`fpstore.signal.hashing.zone_hashes` computed over anchor time ranges, with the same postings.

    Parameters
    ----------
    peaks : Peaks
        Sorted by time, then frequency.
    params : FingerprintParams
    range_frames : int
        Anchor frames per range.

    Returns
    -------
    hashes_by_zone : dict[str, ZoneHashes]
        The same postings, in the same order, as one call over all peaks.
    """
    margin = max(zone.dt_max_frames for zone in params.zones)
    last_frame = int(peaks.t_frames[-1]) if peaks.t_frames.size else 0
    parts: dict[str, list[ZoneHashes]] = {zone.name: [] for zone in params.zones}
    for start in range(0, last_frame + 1, range_frames):
        lo, hi = np.searchsorted(peaks.t_frames, [start, start + range_frames + margin + 1])
        subset = Peaks(peaks.t_frames[lo:hi], peaks.f_bins[lo:hi], peaks.magnitudes[lo:hi])
        for name, found in zone_hashes(subset, params.zones, top_k=params.top_k_targets).items():
            keep = found.t_anchor_frames < start + range_frames
            parts[name].append(ZoneHashes(found.hashes[keep], found.t_anchor_frames[keep]))
    return {
        name: ZoneHashes(
            np.concatenate([p.hashes for p in found] or [np.empty(0, np.uint32)]),
            np.concatenate([p.t_anchor_frames for p in found] or [np.empty(0, np.int32)]),
        )
        for name, found in parts.items()
    }


def fingerprint_blocks(blocks: Iterable[np.ndarray], params: FingerprintParams) -> Fingerprint:
    """Fingerprint a signal given as consecutive sample blocks; equals ``fingerprint_signal`` of their concatenation.

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(m,)], float32, mono, at ``params.sample_rate`` Hz
        As for :func:`stream_peaks`.
    params : FingerprintParams

    Returns
    -------
    fingerprint : Fingerprint

    Raises
    ------
    ParameterError
        When a block is not finite mono floating-point audio.

    Warns
    -----
    UserWarning
        If the signal is empty or yields no peaks: the fingerprint is then empty.

    Examples
    --------
    >>> fingerprint_blocks([np.zeros(4096, dtype=np.int16)], FingerprintParams())
    Traceback (most recent call last):
    ...
    fpstore.errors.ParameterError: audio must be floating point, got dtype=int16
    """
    peaks, n_samples, n_frames = stream_peaks(blocks, params)
    return fingerprint_from_peaks(peaks, ranged_zone_hashes(peaks, params), params, n_samples=n_samples,
                                  n_frames=n_frames)


def fingerprint_file_streaming(path: str | os.PathLike[str], params: FingerprintParams, *,
                               block_s: float = 60.0) -> Fingerprint:
    """Decode and fingerprint ``path`` block by block (see the module docstring).

    Parameters
    ----------
    path : str or path-like
    params : FingerprintParams
        ``params.duration_s`` seconds are read from the start (None: the whole file).
    block_s : float
        Seconds of audio decoded per block.

    Returns
    -------
    fingerprint : Fingerprint
        Equal to :func:`fpstore.signal.fingerprint.fingerprint_file` with the one-shot path.

    Raises
    ------
    AudioError
        If the file cannot be decoded.
    """
    blocks = stream_audio(path, sample_rate=params.sample_rate, duration_s=params.duration_s, block_s=block_s)
    return fingerprint_blocks(blocks, params)
