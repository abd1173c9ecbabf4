"""Helpers shared by tests: synthetic audio folders and comparison with the seed oracle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import seed_port
import soundfile

from fpstore.signal.synth import synth_tune


def write_tunes(folder: Path, seeds: list[int], *, duration_s: float = 8.0) -> list[Path]:
    """Write synthetic tunes as 16-bit WAV files named ``tune_<seed>.wav``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"tune_{seed:03d}.wav"
        soundfile.write(path, synth_tune(seed, duration_s=duration_s), 22050, subtype="PCM_16")
        paths.append(path)
    return paths


def sorted_pairs(hashes: np.ndarray, t_anchor: np.ndarray) -> list[tuple[int, int]]:
    """(hash, t_anchor) pairs as a sorted list of Python ints, for exact multiset comparison."""
    return sorted(zip(np.asarray(hashes).astype(np.int64).tolist(), np.asarray(t_anchor).tolist()))


def oracle_pairs(path: Path, duration: float | None = 30.0) -> dict[str, list[tuple[int, int]]]:
    """The seed port's pairs for one file, per zone name, sorted."""
    return {zone: sorted(pairs) for zone, pairs in seed_port.seed_pairs_of_file(str(path), duration=duration).items()}


def write_resampled_copy(source: Path, target: Path, sample_rate: int = 44100) -> Path:
    """Re-encode a WAV as ``target`` (FLAC or WAV, by its suffix) at ``sample_rate`` Hz: another file, the same recording."""
    y, rate = soundfile.read(source, dtype="float32")
    t_out = np.arange(int(len(y) * sample_rate / rate)) / sample_rate
    soundfile.write(target, np.interp(t_out, np.arange(len(y)) / rate, y).astype(np.float32), sample_rate,
                    subtype="PCM_16")
    return target


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] not in "ZX"


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
