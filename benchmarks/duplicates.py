"""Duplicate ratios on real music: re-encodes of one track against pairs of different tracks.

Chooses ``fpstore.duplicates.DEFAULT_MIN_RATIO``. For each track of the corpus (``tracks.csv`` with
``full_file``, ``clip_file`` and ``clip_start_s`` columns, e.g. the dev corpus of game soundtracks,
whose tracks share loops and instruments) the script makes copies of its first ``--seconds`` with ffmpeg:
a WAV (the reference) and re-encodes (MP3 at 128, 64 and 32 kbit/s, FLAC resampled to 16 kHz). It
ingests the references into a fresh database, then runs the check that ingest makes on every other
copy and on the track's 30-s clip (when it lies inside those seconds), exactly as ``fpstore ingest``
would (:func:`fpstore.duplicates.duplicates_of`), and prints by class:

- ``re-encode``: a copy's ratio against its own reference (what a duplicate must reach);
- ``excerpt``: the 30-s clip against its own reference (not a duplicate: another length);
- ``different``: a copy or clip against the best-voted *other* reference (what a duplicate must stay above).

It times that check, then ingests the MP3 64k copies too and times ``fpstore tracks duplicates`` (one
SQL statement) on the catalogue of references and copies, and prints the pairs it finds.

Usage (a throwaway embedded server unless ``--db``; a few minutes on 2 cores for the 14 dev tracks)::

    python benchmarks/duplicates.py --corpus ../corpus/dev --jobs 2 --seconds 150 [--work /tmp/dupes_work]
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import subprocess
import tempfile
import time

import numpy as np
from ingest import scratch_db, server
from sqlalchemy import create_engine

from fpstore.db.store import Store
from fpstore.duplicates import DEFAULT_MIN_RATIO, duplicates_of, find_duplicates
from fpstore.ingest import ingest
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import FingerprintParams

#: Copies made of every track: name → ffmpeg output options and file suffix.
VARIANTS = {
    "wav": (["-c:a", "pcm_s16le"], ".wav"),
    "mp3_128k": (["-c:a", "libmp3lame", "-b:a", "128k"], ".mp3"),
    "mp3_64k": (["-c:a", "libmp3lame", "-b:a", "64k"], ".mp3"),
    "mp3_32k": (["-c:a", "libmp3lame", "-b:a", "32k"], ".mp3"),
    "flac_16k": (["-c:a", "flac", "-ar", "16000"], ".flac"),
}


def make_copies(corpus: pathlib.Path, out: pathlib.Path, limit: int | None, seconds: float) -> None:
    """Copies of the first ``seconds`` of each track, as ``<id>__<variant><suffix>``: the WAVs in ``out/ref``,
    the others and the clips in ``out/copies``. Nothing is made if ``out/ref`` exists (``--work`` reused)."""
    if (out / "ref").exists():
        return
    (out / "copies").mkdir(parents=True)
    with open(corpus / "tracks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    for row in rows:
        source = corpus / row["full_file"]
        clip = corpus / row["clip_file"]
        if float(row["clip_start_s"]) + 30 <= seconds:
            (out / "copies" / f"{row['id']}__clip30{clip.suffix}").symlink_to(clip.resolve())
        for variant, (options, suffix) in VARIANTS.items():
            target = out / "copies" / f"{row['id']}__{variant}{suffix}"
            subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), "-t", str(seconds), *options,
                            str(target)], check=True)
    (out / "copies").rename(out / "ref")
    (out / "copies").mkdir()
    for wav in (out / "ref").glob("*"):
        if not wav.name.endswith("__wav.wav"):
            wav.rename(out / "copies" / wav.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=pathlib.Path, required=True, help="folder with tracks.csv")
    parser.add_argument("--db", help="a PostgreSQL server URL (a role with CREATEDB) [a throwaway embedded one]")
    parser.add_argument("--limit", type=int, help="only the first N tracks")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=150.0, help="seconds of each track copied")
    parser.add_argument("--work", type=pathlib.Path, help="keep the copies in this folder and reuse them [a temporary one]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fpstore-dupes-") as folder, server(args.db) as server_url, \
            scratch_db(server_url) as url:
        root = args.work or pathlib.Path(folder)
        started = time.perf_counter()
        make_copies(args.corpus, root, args.limit, args.seconds)
        print(f"copied in {time.perf_counter() - started:.0f} s", flush=True)
        store = Store(create_engine(url))
        summary = ingest(store, root / "ref", FingerprintParams(duration_s=None), jobs=args.jobs)
        print(f"stored {summary.tracks_added} references ({summary.postings:,} postings)\n", flush=True)
        own, other, seconds = check_copies(store, sorted((root / "copies").glob("*__*.*")))
        print_distribution(own, other)
        print(f"ingest check (sampled lookup + vote) per copy, {store.tracks.count()} tracks stored: "
              f"median {1000 * float(np.median(seconds)):.0f} ms, max {1000 * max(seconds):.0f} ms")

        for mp3 in sorted((root / "copies").glob("*__mp3_64k.mp3")):
            ingest(store, mp3, FingerprintParams(duration_s=None), jobs=1, on_duplicate="keep")
        started = time.perf_counter()
        listing = find_duplicates(store)
        print(f"\n`fpstore tracks duplicates` on {store.tracks.count()} tracks: {time.perf_counter() - started:.1f} s, "
              f"{len(listing.pairs)} pairs at >= {DEFAULT_MIN_RATIO}:")
        for pair in listing.pairs:
            print(f"  {pair.ratio:.3f} {pair.file_a} / {pair.file_b}")


def check_copies(store: Store, paths: list[pathlib.Path]) -> tuple[dict[str, list[float]], dict[str, list[float]],
                                                                    list[float]]:
    """Run the ingest check on each copy: its ratio to its own reference and to the best other, by variant."""
    params = store.params(duration_s=None)
    zone_ids = store.zone_ids()
    reference = {name.split("__")[0]: track_id for name, track_id in store.tracks.ids_by_file_name().items()}
    own: dict[str, list[float]] = {}
    other: dict[str, list[float]] = {}
    seconds = []
    for path in paths:
        track, variant = path.stem.split("__")
        fingerprint = fingerprint_file(path, params)
        clock = time.perf_counter()
        found = duplicates_of(store, fingerprint, zone_ids, min_ratio=1e-9)
        seconds.append(time.perf_counter() - clock)
        ratios = {d.track_id: d.ratio for d in found}
        own.setdefault(variant, []).append(ratios.get(reference[track], 0.0))
        other.setdefault(variant, []).append(max((r for t, r in ratios.items() if t != reference[track]), default=0.0))
    return own, other, seconds


def print_distribution(own: dict[str, list[float]], other: dict[str, list[float]]) -> None:
    """Markdown table: per copy variant, its ratio to its own reference and to the best other track."""
    print("| copy | n | own reference: min | median | best other track: median | max |")
    print("|---|---|---|---|---|---|")
    for variant in sorted(own):
        mine, theirs = np.array(own[variant]), np.array(other[variant])
        print(f"| {variant} | {mine.size} | {mine.min():.3f} | {np.median(mine):.3f} | "
              f"{np.median(theirs):.4f} | {theirs.max():.4f} |")
    reencodes = np.concatenate([own[v] for v in own if v != "clip30"])
    others = np.concatenate([np.concatenate(list(other.values())), own.get("clip30", [])])
    print(f"\nre-encodes: lowest {reencodes.min():.3f}; different tracks and excerpts: highest {others.max():.4f}")
    print(f"at the default {DEFAULT_MIN_RATIO}: {(reencodes < DEFAULT_MIN_RATIO).sum()} of {reencodes.size} re-encodes "
          f"missed, {(others >= DEFAULT_MIN_RATIO).sum()} of {others.size} others taken")


if __name__ == "__main__":
    main()
