"""What the duplicate check at ingest costs per new file against a catalogue (issue 25).

Fingerprints ``--count`` of the catalogue's negatives (renditions never stored; 30 s of each, as the
catalogue database holds), then times, for each, the check's lookup
and vote (:func:`fpstore.duplicates._aligned_candidates`: each key's list read up to the length that
makes it common) against the same vote on every posting of its keys (the check before that bound) and
with the keys found common by the files before it not looked up (a run's
:class:`~fpstore.duplicates.CommonKeys`), and checks that all three rank the same candidates with the same
votes. Prints the median and mean per file and the keys looked up.

With ``--copies N``, the same on MP3 copies (128 and 64 kbit/s, made with ffmpeg under the
embedded server's parent folder) of the first 30 s of N stored renditions: duplicates of stored tracks.

With ``--ingest N``, then ingests N never-stored renditions (30 s of each, ``--jobs`` workers, the
duplicate check on, the ordinary path) into the catalogue, timed, prints what the check said of each file
that it did not simply add, removes the tracks added (the catalogue is left as it was found), and ingests the same
files into an empty database (created on the same server, dropped after): the two rates and their ratio.

Usage::

    python benchmarks/duplicate_check_cost.py --embedded /tmp/scale-catpg/pg --database fpstore_catalogue \\
        --count 20 --ingest 35
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from catalogue import DEFAULT_OUT  # benchmarks/catalogue.py, next to this script
from catalogue_scale import create_db, linked, url_of
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore import duplicates
from fpstore.db.duplicates import sampled_hashes
from fpstore.db.store import Store
from fpstore.ingest import FileEvent, ingest
from fpstore.matching.ranking import fetch_postings
from fpstore.matching.vote import expand_matches, query_keys, vote
from fpstore.signal.fingerprint import fingerprint_file
from fpstore.signal.params import FingerprintParams


def every_posting(store: Store, zone_of_hash: np.ndarray, hashes: np.ndarray, t_query: np.ndarray,
                  top_k: int) -> tuple[np.ndarray, ...]:
    """The check's vote with every posting of its keys fetched, the common keys dropped after."""
    key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash, hashes)
    key_of_posting, track_ids, t_anchor = fetch_postings(store, key_zones, key_hashes)
    n_postings_of_key = np.bincount(key_of_posting, minlength=key_zones.size) + np.bincount(key_of_hash)
    kept = ~(n_postings_of_key > duplicates.MAX_POSTINGS_PER_HASH)[key_of_posting]
    return vote(*expand_matches(key_of_posting[kept], t_anchor[kept], track_ids[kept], key_of_hash, t_query),
                top_k=top_k)


def reencoded_copies(catalogue: Path, count: int, folder: Path) -> list[Path]:
    """MP3 copies (128 and 64 kbit/s, ffmpeg) of the first 30 s of the first ``count`` stored renditions, made once."""
    with open(catalogue / "renditions.csv", newline="") as f:
        stored = [catalogue / r["file"] for r in csv.DictReader(f) if r["in_db"] == "1"][:count]
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in stored:
        for rate in ("128k", "64k"):
            copy = folder / f"{source.stem}_{rate}.mp3"
            if not copy.exists():
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", "30", "-b:a", rate, str(copy)],
                               check=True)
            copies.append(copy)
    return copies


def run(store: Store, files: list[Path]) -> None:
    zone_ids, params = store.zone_ids(), store.params(duration_s=30)
    spent: dict[str, list[float]] = {"every posting": [], "bounded lists": [],
                                     "bounded lists, the run's common keys remembered": []}
    keys: dict[str, list[int]] = {label: [] for label in spent}
    common = duplicates.CommonKeys()  # one run's memory, over the files in order
    for path in files:
        fp = fingerprint_file(path, params)
        names = list(fp.zones)
        zone_of_hash = np.concatenate([np.full(fp.zones[n].hashes.size, zone_ids[n]) for n in names])
        hashes = np.concatenate([fp.zones[n].hashes for n in names])
        t_query = np.concatenate([fp.zones[n].t_anchor_frames for n in names])
        sample = sampled_hashes(hashes)
        key_zones, key_hashes, key_of_hash = query_keys(zone_of_hash[sample], hashes[sample])
        own = np.bincount(key_of_hash, minlength=key_zones.size)
        n_keys = int((own <= duplicates.MAX_POSTINGS_PER_HASH).sum())
        n_remembered = int((common.left_out(duplicates._combined(key_zones, key_hashes), own)).sum())
        t0 = time.perf_counter()
        before = every_posting(store, zone_of_hash[sample], hashes[sample], t_query[sample], top_k=5)
        t1 = time.perf_counter()
        after = duplicates._aligned_candidates(store, zone_of_hash[sample], hashes[sample], t_query[sample], top_k=5)
        t2 = time.perf_counter()
        remembered = duplicates._aligned_candidates(store, zone_of_hash[sample], hashes[sample], t_query[sample],
                                                    top_k=5, common=common)
        t3 = time.perf_counter()
        assert all(np.array_equal(b, a) for b, a in zip(before, after)), f"{path.name}: the candidates differ"
        assert all(np.array_equal(b, a) for b, a in zip(before, remembered)), f"{path.name}: the candidates differ"
        for label, seconds, n in zip(spent, (t1 - t0, t2 - t1, t3 - t2), (n_keys, n_keys, n_keys - n_remembered)):
            spent[label].append(seconds)
            keys[label].append(n)
    print(f"{len(files)} new files, the same candidates and votes all three ways")
    common = duplicates.CommonKeys()
    said, said_alone = ([duplicates.duplicates_of(store, fingerprint_file(path, params), zone_ids,
                                                  min_ratio=duplicates.DEFAULT_MIN_RATIO, common=memory)
                         for path in files] for memory in (common, None))
    assert said == said_alone, "the check's answers differ with the common keys remembered"
    print(f"the check, common keys remembered or not, calls {sum(bool(d) and d[0].relation == 'duplicate' for d in said)} "
          f"of them duplicates, {sum(bool(d) and d[0].relation == 'excerpt' for d in said)} excerpts")
    print("| check's lookup and vote | median (ms) | mean (ms) | keys looked up (mean) |\n|---|---:|---:|---:|")
    for label, seconds in spent.items():
        print(f"| {label} | {1000 * np.median(seconds):.0f} | {1000 * np.mean(seconds):.0f} | "
              f"{np.mean(keys[label]):,.0f} |")


def timed_ingest(store: Store, files: list[Path], jobs: int, work: Path) -> tuple[float, list[FileEvent]]:
    """Seconds to ingest ``files`` (30 s of each, the check on; ``IngestSummary.elapsed_s``) and every file's event.

    The ordinary path whatever the number of files: a bulk load would leave a partition behind once its
    tracks are removed.
    """
    events: list[FileEvent] = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        summary = ingest(store, linked(Path(tmp) / "in", files), FingerprintParams(duration_s=30), jobs=jobs,
                         bulk=False, on_file=events.append, max_partitions=0)
    return summary.elapsed_s, events


def ingest_rate(server_url: str, database: str, files: list[Path], jobs: int, work: Path) -> None:
    """Ingest ``files`` into the catalogue (then remove them) and into an empty database; print both rates."""
    engine = create_engine(url_of(server_url, database))
    store = Store(engine)
    try:
        with_s, events = timed_ingest(store, files, jobs, work)
        added = [int(e.detail.split(",")[0].removeprefix("track ")) for e in events if e.status == "added"]
        if added:
            store.tracks.remove(added, vacuum_after=True)
    finally:
        engine.dispose()
    said = [e for e in events if e.status != "added" or e.notable]
    print(f"ingest of {len(files)} never-stored renditions: {len(added)} added, {len(said)} with a note")
    for event in said:
        print(f"  {event.path}: {event.status} {event.detail}")
    create_db(server_url, "fpstore_dupcheck_empty", drop=True)
    empty_engine = create_engine(url_of(server_url, "fpstore_dupcheck_empty"))
    try:
        empty = Store(empty_engine)
        empty.upgrade()
        empty_s, _ = timed_ingest(empty, files, jobs, work)
    finally:
        empty_engine.dispose()
    with psycopg.connect(url_of(server_url, "postgres", "postgresql"), autocommit=True) as conn:
        conn.execute('DROP DATABASE "fpstore_dupcheck_empty" WITH (FORCE)')
    print("| files | with the catalogue (files/s) | into an empty database (files/s) | ratio |\n|---:|---:|---:|---:|")
    print(f"| {len(files)} | {len(files) / with_s:.2f} | {len(files) / empty_s:.2f} | {empty_s / with_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=Path, required=True, help="fpstore's embedded server, its data here")
    parser.add_argument("--database", default="fpstore_catalogue")
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--copies", type=int, default=0,
                        help="then the same on MP3 copies of this many stored renditions (made with ffmpeg)")
    parser.add_argument("--ingest", type=int, default=0, help="then time the ingest of this many never-stored files")
    parser.add_argument("--jobs", type=int, default=2, help="ingest's worker processes")
    args = parser.parse_args()
    with open(args.catalogue / "renditions.csv", newline="") as f:
        never_stored = [args.catalogue / r["file"] for r in csv.DictReader(f) if r["in_db"] == "0"]
    from fpstore.db.embedded import EmbeddedServer

    with EmbeddedServer(args.embedded) as server:
        engine = create_engine(make_url(server.url).set(drivername="postgresql+psycopg", database=args.database)
                               .render_as_string(hide_password=False))
        if args.count:
            run(Store(engine), never_stored[:args.count])
        if args.copies:
            run(Store(engine), reencoded_copies(args.catalogue, args.copies, args.embedded.parent / "copies"))
        engine.dispose()
        if args.ingest:
            ingest_rate(server.url, args.database, never_stored[:args.ingest], args.jobs, args.embedded.parent)


if __name__ == "__main__":
    main()
