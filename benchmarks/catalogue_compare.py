"""How the rendered catalogue's fingerprints compare with real music's (issue 25).

Fingerprints the same number of files of each set with the default parameters (30 s from the start of
each file, so every file gives the same length of audio) and prints, per set:

- peaks per second and postings per second (all zones; median over files, and the 10th-90th percentiles);
- the distinct-key share: distinct ``(zone, hash)`` keys / postings, over the set;
- the posting-list lengths: over the set's keys, the share of postings whose list holds >= 2, >= 10
  and >= 100 postings, and the mean list length that a posting's key sees (``sum n^2 / sum n``, what a
  query key of the set fetches on average, the lookup's cost driver);
- the median anchor frequency (bin) of the postings: where the peaks lie in the spectrum.

Usage::

    python benchmarks/catalogue_compare.py --files 60 \\
        --set dev=../corpus/dev/clips30 --set devlarge=../corpus/devlarge/clips30 \\
        --set catalogue=../corpus/catalogue/audio

A set's folder is walked recursively (sorted); ``--files`` takes evenly spaced files of it, so a folder
of 10,000 renditions gives a sample across its sources, not its first folk songs only.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from fpstore.signal.audio import AUDIO_EXTENSIONS
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import FingerprintParams


def sample_files(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and ".tmp" not in p.suffixes)
    if len(files) <= n:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]


def describe(files: list[Path], params: FingerprintParams) -> dict[str, float]:
    peaks_s, postings_s, keys, freqs = [], [], [], []
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = fingerprint_file(path, params)
        if fp.duration_s <= 0:
            continue
        peaks_s.append(fp.n_peaks / fp.duration_s)
        postings_s.append(fp.n_postings / fp.duration_s)
        for z, (name, zh) in enumerate(fp.zones.items()):
            keys.append((np.int64(z) << 32) | zh.hashes.astype(np.int64))
            freqs.append(zh.hashes.astype(np.int64) >> 22)  # the anchor's frequency bin (seed hash layout)
        del name
    all_keys = np.concatenate(keys)
    _, counts = np.unique(all_keys, return_counts=True)
    per_posting = np.repeat(counts, counts)  # the list length each posting sits in
    return {
        "files": len(peaks_s),
        "peaks/s": float(np.median(peaks_s)), "peaks/s p10": float(np.percentile(peaks_s, 10)),
        "peaks/s p90": float(np.percentile(peaks_s, 90)),
        "postings/s": float(np.median(postings_s)), "postings/s p10": float(np.percentile(postings_s, 10)),
        "postings/s p90": float(np.percentile(postings_s, 90)),
        "distinct-key share": counts.size / all_keys.size,
        "in lists >= 2": float(np.mean(per_posting >= 2)), "in lists >= 10": float(np.mean(per_posting >= 10)),
        "in lists >= 100": float(np.mean(per_posting >= 100)),
        "mean list seen": float(np.sum(counts.astype(np.float64) ** 2) / all_keys.size),
        "longest list": int(counts.max()),
        "median anchor bin": float(np.median(np.concatenate(freqs))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", required=True, help="NAME=FOLDER (repeat)")
    parser.add_argument("--files", type=int, default=60, help="files per set (evenly spaced in sorted order)")
    args = parser.parse_args()
    params = FingerprintParams(duration_s=30.0)  # the same length of every file
    rows = {}
    for spec in args.set:
        name, folder = spec.split("=", 1)
        rows[name] = describe(sample_files(Path(folder), args.files), params)
        print(f"{name}: {rows[name]['files']} files", flush=True)
    metrics = list(next(iter(rows.values())))
    print("| metric | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for m in metrics:
        cells = [f"{r[m]:.3f}" if isinstance(r[m], float) and r[m] < 1 else f"{r[m]:,.1f}" if isinstance(r[m], float)
                 else f"{r[m]:,}" for r in rows.values()]
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
