"""Broadcast monitoring against the rendered scale catalogue: airtime named right and speed at thousands of tracks.

The dev streams (``benchmarks/monitor.py``) are made of devlarge's tracks, which the scale catalogue does not
hold. This script makes streams of the catalogue's own renditions (``benchmarks/catalogue.py``): pieces of 20 s
up to the stored length (``--stored-s``, the ``--duration`` the catalogue was ingested with) cut from stored
renditions, one in five from a rendition never stored (a held-out stretch), hard cuts; a seeded draw, so the
same arguments give the same streams. Only renditions among the first ``--among`` stored ones are drawn (a
catalogue grows in id order: those are stored at any size above it). Each stream is written as WAV with a
``truth.csv`` in the format of ``../shared/corpus/make_monitor_streams.py``; ``fpstore monitor --json`` runs on
each in turn, and ``../shared/corpus/score_monitor.py`` scores them (airtime recall, false
airtime, segments found, held-out alarms, start error, stream seconds per wall second).

``--foreign FILE...`` monitors other streams too (e.g. devlarge's, whose tracks are not in the catalogue: every
window of them is matched afresh, the most a stream can cost); they are timed, not scored.

Usage (the database is read only; the catalogue's embedded server must be up)::

    python benchmarks/monitor_catalogue.py --db 'postgresql://fpstore@/fpstore_catalogue?host=/tmp/scale-catpg/pg/run' \\
        --out /tmp/monitor_catalogue --streams 2 --foreign ../corpus/devlarge/monitor/s1_clean.mp3
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import numpy as np
import psycopg
import soundfile

#: Sample rate of the rendered catalogue (and fpstore's).
SR = 22050


def draw_stream(rows: list[dict[str, str]], rng: np.random.Generator, length_s: float, stored_s: float,
                among: int) -> list[tuple[dict[str, str], float, float]]:
    """Pieces ``(rendition, from_s, to_s)`` filling ``length_s``: stored renditions, every fifth a never-stored one."""
    stored = [r for r in rows if r["in_db"] == "1"][:among]
    held_out = [r for r in rows if r["in_db"] == "0" and int(r["id"][1:]) < int(stored[-1]["id"][1:])]
    pieces: list[tuple[dict[str, str], float, float]] = []
    total = 0.0
    while total < length_s:
        pool = held_out if len(pieces) % 5 == 4 else stored
        rendition = pool[int(rng.integers(len(pool)))]
        usable = min(stored_s, float(rendition["duration_s"]))
        seconds = float(rng.uniform(20.0, usable))
        begin = float(rng.uniform(0.0, usable - seconds))
        pieces.append((rendition, begin, begin + seconds))
        total += seconds
    return pieces


def write_stream(catalogue: pathlib.Path, pieces: list[tuple[dict[str, str], float, float]], path: pathlib.Path,
                 truth: Any) -> None:
    """The pieces, back to back, as a WAV file; one truth row a piece (no track for a held-out one)."""
    audio, now = [], 0.0
    for rendition, begin, end in pieces:
        samples, rate = soundfile.read(catalogue / rendition["file"], dtype="float32",
                                       start=round(begin * SR), stop=round(end * SR))
        assert rate == SR, f"{rendition['file']} is at {rate} Hz"
        samples = samples if samples.ndim == 1 else samples.mean(axis=1)
        audio.append(samples)
        seconds = samples.size / SR
        name = os.path.basename(rendition["file"]) if rendition["in_db"] == "1" else ""
        truth.writerow([path.name, f"{now:.2f}", f"{now + seconds:.2f}", name, f"{begin:.2f}", f"{begin + seconds:.2f}"])
        now += seconds
    soundfile.write(path, np.concatenate(audio), SR, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="the catalogue's database URL (read only)")
    parser.add_argument("--catalogue", type=pathlib.Path, default=pathlib.Path("../corpus/catalogue"))
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--streams", type=int, default=2, help="streams made [2]")
    parser.add_argument("--length", type=float, default=720.0, help="seconds per stream [720]")
    parser.add_argument("--stored-s", type=float, default=30.0, help="seconds of each rendition stored [30]")
    parser.add_argument("--among", type=int, default=3000, help="draw from the first N stored renditions [3000]")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--foreign", nargs="*", default=[], help="other streams, timed only")
    args, monitor_args = parser.parse_known_args()
    monitor_args = [a for a in monitor_args if a != "--"]
    rows = list(csv.DictReader(open(args.catalogue / "renditions.csv")))
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    streams = [args.out / f"c{n + 1}_catalogue.wav" for n in range(args.streams)]
    with open(args.out / "truth.csv", "w", newline="") as handle:
        truth = csv.writer(handle)
        truth.writerow(["stream", "start_s", "end_s", "track", "track_start_s", "track_end_s"])
        for path in streams:
            write_stream(args.catalogue, draw_stream(rows, rng, args.length, args.stored_s, args.among), path, truth)
    with psycopg.connect(args.db) as conn:
        tracks, postings = conn.execute("SELECT count(*), sum(n_postings) FROM tracks").fetchone() or (0, 0)
    print(f"catalogue: {tracks:,} tracks, {postings:,} postings; fpstore monitor {' '.join(monitor_args) or '(defaults)'};"
          f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for path in [*streams, *map(pathlib.Path, args.foreign)]:
        began = time.perf_counter()
        with open(args.out / f"{path.stem}.json", "w") as output:
            status = subprocess.run([sys.executable, "-m", "fpstore", "--db", args.db, "monitor", str(path), "--json",
                                     *monitor_args], stdout=output).returncode
        wall = time.perf_counter() - began
        if status:
            print(f"{path.name}: fpstore monitor failed (exit status {status})", flush=True)
            continue
        (args.out / f"{path.stem}.time").write_text(f"{wall:.3f}\n")
        seconds = soundfile.info(str(path)).duration
        print(f"{path.name}: {seconds:.1f} s of stream, {wall:.1f} s wall, {seconds / wall:.1f}x real time", flush=True)
    scorer = args.catalogue.resolve().parent.parent / "shared" / "corpus" / "score_monitor.py"
    subprocess.run([sys.executable, str(scorer), str(args.out / "truth.csv"), str(args.out)], check=True)


if __name__ == "__main__":
    main()
