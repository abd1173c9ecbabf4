"""Synthetic example audio: deterministic tunes that fingerprint well, for demos and tests.

Conventions
-----------
- Signals are float32 mono in [-1, 1] at ``sample_rate`` Hz; files are 16-bit PCM WAV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile


def synth_tune(seed: int, *, duration_s: float = 30.0, sample_rate: int = 22050) -> np.ndarray:
    """A pseudo-random melody of decaying harmonic notes over faint noise, reproducible from ``seed``.

    Parameters
    ----------
    seed : int
        Different seeds give different, unrelated tunes.
    duration_s : float
        Length in seconds.
    sample_rate : int
        Hz.

    Returns
    -------
    y : np.ndarray [shape=(round(duration_s * sample_rate),)], float32

    Examples
    --------
    >>> synth_tune(1, duration_s=1.0).shape
    (22050,)
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    y = 0.01 * rng.standard_normal(n)
    t = np.arange(n) / sample_rate
    note_s = rng.uniform(0.15, 0.4)
    for start in np.arange(0.0, duration_s, note_s):
        f0 = 110.0 * 2 ** (rng.integers(0, 48) / 12)
        begin = int(start * sample_rate)
        end = min(n, begin + int(note_s * 1.5 * sample_rate))
        local_t = t[begin:end] - start
        envelope = np.exp(-local_t * rng.uniform(3, 8))
        for harmonic, weight in ((1, 0.6), (2, 0.25), (3, 0.12)):
            if f0 * harmonic < sample_rate / 2:
                y[begin:end] += weight * envelope * np.sin(2 * np.pi * f0 * harmonic * local_t)
    return np.asarray(0.9 * y / np.abs(y).max(), dtype=np.float32)


def write_example_audio(folder: str | os.PathLike[str], *, n_tracks: int = 5, duration_s: float = 30.0,
                        sample_rate: int = 22050) -> list[Path]:
    """Write ``n_tracks`` synthetic tunes as WAV files ``example_NN.wav`` into ``folder``.

    Returns
    -------
    paths : list of Path
        The files written (existing files with those names are overwritten with the same content).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n_tracks):
        path = out / f"example_{index + 1:02d}.wav"
        soundfile.write(path, synth_tune(index + 1, duration_s=duration_s, sample_rate=sample_rate),
                        sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def write_example_clip(path: str | os.PathLike[str], *, track: int, tune_duration_s: float = 30.0,
                       start_s: float = 12.0, duration_s: float = 8.0, snr_db: float = 10.0,
                       sample_rate: int = 22050) -> Path:
    """Write a noisy excerpt of the example tune ``example_{track:02d}.wav`` as a WAV query to try matching on.

    Parameters
    ----------
    path : str or os.PathLike
        The WAV file to write (overwritten).
    track : int
        Which tune, numbered from 1 as :func:`write_example_audio` numbers them.
    tune_duration_s : float
        Length of the tunes :func:`write_example_audio` wrote, in seconds (the tune depends on it).
    start_s, duration_s : float
        Where the excerpt starts in the tune and how long it is, in seconds; an excerpt that would run past
        the tune's end is moved earlier (and shortened to the tune's length).
    snr_db : float
        Signal-to-noise ratio of the white noise added, in dB (deterministic: the same file every time).
    sample_rate : int
        Hz.

    Returns
    -------
    path : Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     soundfile.info(write_example_clip(Path(tmp) / "clip.wav", track=3)).duration
    8.0
    """
    tune = synth_tune(track, duration_s=tune_duration_s, sample_rate=sample_rate).astype(np.float64)
    n = min(int(round(duration_s * sample_rate)), tune.size)
    start = min(int(round(start_s * sample_rate)), tune.size - n)
    excerpt = tune[start:start + n]
    noise = np.random.default_rng(0).standard_normal(n)
    noise *= np.sqrt(np.mean(excerpt**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    clip = excerpt + noise
    clip *= 0.9 / max(np.abs(clip).max(), 1e-12)
    out = Path(path)
    soundfile.write(out, clip.astype(np.float32), sample_rate, subtype="PCM_16")
    return out
