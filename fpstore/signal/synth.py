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
