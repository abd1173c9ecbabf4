"""Write not-in-database queries for measuring false positives: excerpts of held-out real tracks and synthetic tunes.

The corpus holds 24 negative queries only; a 1 % false-positive bound needs more. This script cuts
``--per-track`` random 5 s and 10 s excerpts from every *full* track whose ``in_db`` is 0 in the corpus's
``tracks.csv`` (none of their audio is in the database), half of them with pink-ish noise at 10 dB SNR,
and adds ``--synthetic`` synthetic tunes (fpstore.signal.synth, seeds 1000+) cut to 5 or 10 s. Output: WAV files
and ``negatives.csv`` (file, true_track empty, length_s, degradation, source) for ``fpstore eval``.

Usage::

    python benchmarks/make_negatives.py /work/corpus/dev /tmp/negatives --per-track 100 --synthetic 50
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import librosa
import numpy as np
import soundfile

from fpstore.signal.synth import synth_tune

SR = 22050


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-track", type=int, default=100)
    parser.add_argument("--synthetic", type=int, default=50)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.corpus / "tracks.csv", newline="") as handle:
        held_out = [r for r in csv.DictReader(handle) if r["in_db"] == "0"]
    for track in held_out:
        y, _ = librosa.load(args.corpus / track["full_file"], sr=SR, mono=True)
        for k in range(args.per_track):
            length = [5, 10][k % 2]
            start = int(rng.integers(0, y.size - length * SR))
            segment = y[start:start + length * SR].copy()
            degradation = "clean"
            if k % 4 >= 2:
                power = float(np.mean(segment ** 2))
                noise = np.cumsum(rng.standard_normal(segment.size)) * 0.02  # reddened, roughly pink-ish
                noise -= noise.mean()
                noise *= np.sqrt(power / 10 / max(float(np.mean(noise ** 2)), 1e-12))
                segment = np.clip(segment + noise, -1, 1).astype(np.float32)
                degradation = "noise_snr10"
            name = f"neg_{track['id']}_{k:03d}.wav"
            soundfile.write(args.out / name, segment, SR, subtype="PCM_16")
            rows.append({"file": name, "true_track": "", "length_s": length, "degradation": degradation,
                         "source": track["id"]})
    for k in range(args.synthetic):
        length = [5, 10][k % 2]
        name = f"neg_synth_{k:03d}.wav"
        soundfile.write(args.out / name, synth_tune(1000 + k, duration_s=length), SR, subtype="PCM_16")
        rows.append({"file": name, "true_track": "", "length_s": length, "degradation": "clean",
                     "source": "synthetic"})
    with open(args.out / "negatives.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} negative queries to {args.out / 'negatives.csv'}")


if __name__ == "__main__":
    main()
