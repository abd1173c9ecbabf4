"""The duplicate/excerpt rule (:func:`fpstore.duplicates.relation`) on real music: what it calls each pair.

For a corpus (``tracks.csv`` with ``full_file``, ``clip_file`` and ``clip_start_s``; the dev corpora of
game soundtracks, whose tracks share loops and instruments) the script:

1. stores every whole track (``full/``) in a fresh database, as ``fpstore ingest`` does by default;
2. runs the check that ingest makes (:func:`fpstore.duplicates.duplicates_of`) on each 30-s clip
   (``clips30/``): against its own track it must be an *excerpt* at ``clip_start_s``, never a duplicate;
   against every other track, nothing;
3. runs it on re-encodes of the first ``--reencode`` whole tracks (MP3 64 kbit/s, FLAC at 16 kHz, made
   with ffmpeg): against its own track each must be a *duplicate*;
4. lists the stored pairs (:func:`fpstore.duplicates.find_duplicates`, ``fpstore tracks duplicates``):
   different tracks of one soundtrack must be neither;
5. in a second database holding the clips only, runs the check on each whole track: the stored clip
   must be named as an excerpt of it.

It prints the counts per class and the ratio / containment figures behind them.

Usage (a throwaway embedded server unless ``--db``)::

    python benchmarks/duplicate_relations.py --corpus ../corpus/dev --jobs 2 --reencode 14
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
from fpstore.duplicates import (
    DEFAULT_MIN_CONTAINMENT,
    DEFAULT_MIN_RATIO,
    DuplicateOf,
    duplicates_of,
    find_duplicates,
    relation,
)
from fpstore.ingest import ingest
from fpstore.signal.fingerprint import fingerprint_file

#: Re-encodes made of a whole track: name → ffmpeg output options and file suffix.
VARIANTS = {
    "mp3_64k": (["-c:a", "libmp3lame", "-b:a", "64k"], ".mp3"),
    "flac_16k": (["-c:a", "flac", "-ar", "16000"], ".flac"),
}


def called(found: list[DuplicateOf], track_id: int) -> tuple[str, DuplicateOf | None]:
    """What the default rule calls the new track against ``track_id``: duplicate, excerpt or none."""
    for d in found:
        if d.track_id == track_id:
            kind = "duplicate" if d.relation == "duplicate" and d.ratio >= DEFAULT_MIN_RATIO else (
                "excerpt" if d.relation == "excerpt" and d.containment >= DEFAULT_MIN_CONTAINMENT else "none")
            return kind, d
    return "none", None


def check(store: Store, path: pathlib.Path) -> list[DuplicateOf]:
    """The ingest check on ``path`` with no threshold: every candidate whose coverage makes a relation."""
    fingerprint = fingerprint_file(path, store.params(duration_s=None))
    return duplicates_of(store, fingerprint, store.zone_ids(), min_ratio=1e-9)


def summarise(name: str, kinds: list[str], values: list[float], what: str) -> None:
    counts = {kind: kinds.count(kind) for kind in ("duplicate", "excerpt", "none")}
    spread = (f"{what}: min {min(values):.3f}, median {float(np.median(values)):.3f}, max {max(values):.3f}"
              if values else f"{what}: -")
    print(f"| {name} | {len(kinds)} | {counts['duplicate']} | {counts['excerpt']} | {counts['none']} | {spread} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=pathlib.Path, required=True, help="folder with tracks.csv")
    parser.add_argument("--db", help="a PostgreSQL server URL (a role with CREATEDB) [a throwaway embedded one]")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reencode", type=int, default=14, help="re-encode the first N whole tracks")
    parser.add_argument("--no-reverse", action="store_true", help="skip step 5 (clips stored, whole tracks checked)")
    args = parser.parse_args()
    with open(args.corpus / "tracks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))

    with tempfile.TemporaryDirectory(prefix="fpstore-relations-") as folder, server(args.db) as server_url, \
            scratch_db(server_url) as url, scratch_db(server_url) as clips_url:
        work = pathlib.Path(folder)
        store = Store(create_engine(url))
        started = time.perf_counter()
        summary = ingest(store, args.corpus / "full", jobs=args.jobs)
        print(f"stored {summary.tracks_added} whole tracks ({summary.postings:,} postings) in "
              f"{time.perf_counter() - started:.0f} s\n", flush=True)
        ids = {name: track_id for name, track_id in store.tracks.ids_by_file_name().items()}
        spf = store.params(duration_s=None).seconds_per_frame
        print("| new track against its own stored track | n | duplicate | excerpt | none | figures |")
        print("|---|---:|---:|---:|---:|---|")

        kinds, containments, offset_errors, others = [], [], [], []
        for row in rows:
            found = check(store, args.corpus / row["clip_file"])
            own = ids[pathlib.Path(row["full_file"]).name]
            kind, d = called(found, own)
            kinds.append(kind)
            if d is not None:
                containments.append(d.containment)
            else:
                print(f"|  | | | | | {row['clip_file']}: its own track is not among the candidates |")
            if kind == "excerpt" and d is not None:
                offset_errors.append(abs(d.offset_s - float(row["clip_start_s"])))
            others += [called(found, t)[0] for t in {d.track_id for d in found} - {own}]
        summarise("30-s clip (clips30) of a stored whole track", kinds, containments, "containment")
        if offset_errors:
            print(f"|  | | | | | each excerpt's start found within {max(offset_errors):.2f} s of the clip's |")

        reencoded: dict[str, list[str]] = {}
        ratios: dict[str, list[float]] = {}
        for row in rows[:args.reencode]:
            source, own = args.corpus / row["full_file"], ids[pathlib.Path(row["full_file"]).name]
            for variant, (options, suffix) in VARIANTS.items():
                target = work / f"{row['id']}__{variant}{suffix}"
                subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), *options, str(target)],
                               check=True)
                found = check(store, target)
                kind, d = called(found, own)
                reencoded.setdefault(variant, []).append(kind)
                ratios.setdefault(variant, []).append(d.ratio if d else 0.0)
                others += [called(found, t)[0] for t in {d.track_id for d in found} - {own}]
                target.unlink()
        for variant in VARIANTS:
            if variant in reencoded:
                summarise(f"whole track re-encoded ({variant})", reencoded[variant], ratios[variant], "ratio")

        listing = find_duplicates(store, min_ratio=1e-9)  # every pair whose coverage makes a relation
        related = listing.pairs + listing.excerpts
        pair_kinds = [relation(p.n_aligned, p.n_a, p.n_b, p.duration_a_s, p.duration_b_s, p.offset_frames * spf,
                               DEFAULT_MIN_RATIO) or "none" for p in related]
        n_tracks = store.tracks.count()  # ids also maps each file name's stem
        n_pairs = n_tracks * (n_tracks - 1) // 2
        print(f"| two different stored tracks (every pair) | {n_pairs} | {pair_kinds.count('duplicate')} | "
              f"{pair_kinds.count('excerpt')} | {n_pairs - len(related) + pair_kinds.count('none')} | "
              f"ratio max {max((p.ratio for p in related), default=0):.4f}, "
              f"containment max {max((p.containment for p in related), default=0):.4f} |")
        print(f"| different tracks, as candidates of the checks above | {len(others)} | {others.count('duplicate')} | "
              f"{others.count('excerpt')} | {others.count('none')} | |")

        if args.no_reverse:
            return
        clips = Store(create_engine(clips_url))
        ingest(clips, args.corpus / "clips30", jobs=args.jobs)
        clip_ids = clips.tracks.ids_by_file_name()
        held, holds = [], []
        for row in rows:
            found = check(clips, args.corpus / row["full_file"])
            kind, d = called(found, clip_ids[pathlib.Path(row["clip_file"]).name])
            held.append(kind)
            if d is not None:
                holds.append(d.containment)
        summarise("whole track, its 30-s clip stored (the other order)", held, holds, "containment")
        store.engine.dispose()
        clips.engine.dispose()


if __name__ == "__main__":
    main()
