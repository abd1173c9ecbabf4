"""Rewrite the golden regression fixtures under tests/data. Run on purpose only:

    python tests/generate_expected.py

Layout: one folder per case, ``tests/data/<case>/``, holding

- ``input.wav``: a short mono 16-bit WAV at 22,050 Hz (so decoding involves no resampling);
- ``expected.json``: what the seed notebook's method (``tests/seed_port.py``, the oracle) computes for
  it with the default parameters: ``n_frames``, ``n_peaks``, the first peaks as ``[t_frame, f_bin,
  magnitude]``, and per zone the sorted ``[hash, t_anchor]`` pairs.

``tests/test_golden.py`` checks fpstore against these files: hashes and times exactly, magnitudes within
``MAGNITUDE_ATOL``. Regenerate only when the oracle itself is meant to change, and say why in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parent))
import seed_port  # noqa: E402

DATA = Path(__file__).parent / "data"
SAMPLE_RATE = 22050


def case_signals() -> dict[str, np.ndarray]:
    """The inputs, synthesised deterministically."""
    from fpstore.signal.synth import synth_tune

    rng = np.random.default_rng(20261124)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    chirp_in_noise = 0.4 * np.sin(2 * np.pi * (300 + 1500 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return {
        "tune_2s": synth_tune(11, duration_s=2.0),
        "chirp_in_noise_2s": chirp_in_noise.astype(np.float32),
    }


def main() -> None:
    for case, signal in case_signals().items():
        folder = DATA / case
        folder.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / "input.wav", signal, SAMPLE_RATE, subtype="PCM_16")
        decoded, _ = seed_port.librosa.load(folder / "input.wav", sr=SAMPLE_RATE, duration=30.0)
        Y = seed_port.spectrogram_of_signal(decoded, bin_max=1024)
        peaks = seed_port.extract_peaks(Y, seed_port.compute_constellation_map(Y, 12, 6, 0.01))
        expected = {
            "n_frames": int(Y.shape[1]),
            "n_peaks": len(peaks),
            "first_peaks": [[t, f, m] for t, f, m in peaks[:20]],
            "zones": {
                zone["name"]: sorted(seed_port.generate_hashes_from_peaks(peaks, zone, top_k=5))
                for zone in seed_port.SEED_ZONES
            },
        }
        (folder / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
        print(f"{case}: {expected['n_peaks']} peaks, {sum(len(v) for v in expected['zones'].values())} postings")


if __name__ == "__main__":
    main()
