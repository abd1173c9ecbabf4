"""Ingest benchmark: the seed notebook's pipeline vs fpstore ingest into PostgreSQL, on real music.

Measures, in one run on the same folder (default /work/corpus/dev/clips30, 30 s clips):

- the seed pipeline (tests/seed_port.py ``build_seed_pickle``, writing its pickle), one process;
- fpstore ingest (``--jobs`` workers, one writer) into an empty database and into one that already holds
  ``--prefill`` postings, on the bulk path (the default for big runs) and on the ordinary path;
- a per-clip stage breakdown on one core (decode, STFT, peaks, hashing, database write);
- bytes per posting on disk (heap + indexes);
- with ``--full-folder``: ingest of full-length tracks (``--duration full``) with peak memory (VmHWM, the
  kernel's peak RSS) of the writer and of the largest worker process; with ``--long-hours H``: one synthetic H-hour FLAC (44.1 kHz
  stereo, written in blocks into a temp folder) fingerprinted by the streaming path, with its peak memory.

The corpus has only 14 clips, so the folder is replicated ``--copies`` times into a temp folder; every
copy gets a 128-byte ID3v1 tag appended that names the copy, so its content digest differs (fpstore
skips files whose content it already stored) while the decoder ignores the tag. The benchmark checks
that a tagged copy decodes to the same samples, and that fpstore's stored postings for the first copy
equal the seed pickle's.

Every ingest runs in a child process (this script with ``--child``), so its peak memory is its own.

Usage (the figures of docs/speed.md come from this command)::

    python benchmarks/ingest.py --copies 8 --prefill 10000000 \\
        --full-folder /work/corpus/dev/full --long-hours 3

Without ``--db`` a throwaway embedded PostgreSQL server runs in a temp folder; with ``--db URL`` (a server
URL; the benchmark creates and drops its own databases there) that server is used.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import soundfile
from sqlalchemy import make_url

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


# -- helpers ---------------------------------------------------------------------------------------
def id3v1_tag(label: str) -> bytes:
    """A 128-byte ID3v1 tag whose title is ``label`` (decoders skip it; the file digest changes)."""
    title = label.encode()[:30].ljust(30, b"\0")
    return b"TAG" + title + b"\0" * 30 + b"\0" * 30 + b"2026" + b"\0" * 30 + b"\xff"


def replicate(folder: pathlib.Path, copies: int, target: pathlib.Path) -> list[pathlib.Path]:
    """``copies`` tagged copies of every MP3 in ``folder`` under ``target``; returns their paths, sorted."""
    sources = sorted(folder.glob("*.mp3"))
    for k in range(copies):
        sub = target / f"copy{k:02d}"
        sub.mkdir(parents=True)
        for src in sources:
            (sub / src.name).write_bytes(src.read_bytes() + id3v1_tag(f"fpstore bench copy {k}"))
    return sorted(target.rglob("*.mp3"))


def audio_seconds(paths: list[pathlib.Path], duration_s: float | None) -> float:
    """Seconds of audio the pipeline reads from ``paths`` (capped at ``duration_s``)."""
    total = 0.0
    for path in paths:
        info = soundfile.info(path)
        total += info.duration if duration_s is None else min(info.duration, duration_s)
    return total


def rss_mb(kilobytes: int) -> float:
    return kilobytes / 1024


def peak_rss_kb(pid: int | str = "self") -> int:
    """``VmHWM`` (peak resident set) of a process, in kB; 0 if it is gone.

    Not ``ru_maxrss``: Linux carries the parent's peak across fork and exec into it, and a forkserver's
    workers are not our children.
    """
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent_of[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parent_of.items() if parent == current]
        found += children
        frontier += children
    return found


class WorkerPeak:
    """Samples the peak RSS of this process's descendants (the ingest workers) every 0.2 s."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in descendants(os.getpid()):
                self.peak_kb = max(self.peak_kb, peak_rss_kb(pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


@contextmanager
def server(db: str | None) -> Iterator[str]:
    """A PostgreSQL server URL: ``db``, or a throwaway embedded server."""
    if db:
        yield db
        return
    from fpstore.db.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="fpstore-bench-pg-") as folder:
        os.chmod(folder, 0o755)
        with EmbeddedServer(pathlib.Path(folder)) as srv:
            yield srv.url


@contextmanager
def scratch_db(server_url: str) -> Iterator[str]:
    """A fresh, empty database on ``server_url``; dropped afterwards."""
    name = f"fpstore_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def bytes_per_posting(url: str) -> tuple[float, int]:
    """(heap + index bytes of every hashes partition) / postings, and the postings."""
    with psycopg.connect(libpq(url)) as conn:
        size, rows = conn.execute(
            "SELECT sum(pg_table_size(c.oid) + pg_indexes_size(c.oid)),"
            " (SELECT count(*) FROM hashes) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'hashes'::regclass").fetchone()
    return float(size) / max(int(rows), 1), int(rows)


def run_child(args: list[str]) -> dict:
    """Run this script with ``--child`` and return the JSON it prints last."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_ingest(url: str, folder: str, jobs: int, duration: str, bulk: str) -> None:
    """Child body: one ingest; prints elapsed time, counts and the peak RSS of itself and of its largest worker."""
    from fpstore.db.catalogue import open_store
    from fpstore.ingest import ingest
    from fpstore.signal.params import FingerprintParams

    params = FingerprintParams(duration_s=None if duration == "full" else float(duration))
    with open_store(url) as store:
        store.check_schema(upgrade_empty=True)  # a one-off migration is not ingest work
        sampler = WorkerPeak()
        started = time.perf_counter()
        # The tagged copies are one recording each: keep them (the duplicate check still runs and is timed).
        summary = ingest(store, folder, params, jobs=jobs, bulk={"auto": None, "yes": True, "no": False}[bulk],
                         on_duplicate="keep")
        elapsed = time.perf_counter() - started
        workers_kb = sampler.stop()
    print(json.dumps(dict(
        elapsed_s=elapsed, tracks=summary.tracks_added, failed=summary.tracks_failed, postings=summary.postings,
        writer_maxrss_kb=peak_rss_kb(), workers_maxrss_kb=workers_kb,
    )))


def child_long(path: str) -> None:
    """Child body: fingerprint one long file with the full-duration (streaming) path; prints time and RSS."""
    from fpstore.signal.fingerprint import fingerprint_file
    from fpstore.signal.params import FingerprintParams

    started = time.perf_counter()
    fp = fingerprint_file(path, FingerprintParams(duration_s=None))
    print(json.dumps(dict(elapsed_s=time.perf_counter() - started, postings=fp.n_postings,
                          audio_s=fp.duration_s, maxrss_kb=peak_rss_kb())))


def write_long_flac(path: pathlib.Path, hours: float) -> None:
    """An ``hours``-long 44.1 kHz stereo FLAC of synthetic tunes, written one minute at a time."""
    from fpstore.signal.synth import synth_tune

    rate = 44100
    with soundfile.SoundFile(path, "w", rate, 2, subtype="PCM_16") as sound:
        for minute in range(int(round(hours * 60))):
            mono = synth_tune(minute % 50 + 1, duration_s=60.0, sample_rate=rate)
            sound.write(np.stack([mono, 0.7 * np.roll(mono, 29)], axis=1))


# -- measurements ----------------------------------------------------------------------------------
def seed_run(paths: list[pathlib.Path], out: pathlib.Path) -> float:
    import seed_port

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        seed_port.build_seed_pickle([str(p) for p in paths], str(out))
        return time.perf_counter() - started


def stage_breakdown(paths: list[pathlib.Path], url: str) -> dict[str, float]:
    """Mean milliseconds per clip of each stage on one core; the write stages over all clips."""
    import librosa
    from sqlalchemy import create_engine

    from fpstore.db.store import Store
    from fpstore.db.tracks import TrackRecord
    from fpstore.signal.audio import load_audio
    from fpstore.signal.fingerprint import Fingerprint
    from fpstore.signal.hashing import zone_hashes
    from fpstore.signal.params import FingerprintParams
    from fpstore.signal.peaks import find_peaks
    from fpstore.signal.spectrogram import magnitude_spectrogram

    params = FingerprintParams()
    times = {k: 0.0 for k in ("librosa.load (seed)", "decode", "STFT", "peaks", "hashing")}
    records = []
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            librosa.load(path, sr=22050, duration=30.0)
        t1 = time.perf_counter()
        y = load_audio(path)
        t2 = time.perf_counter()
        magnitudes = magnitude_spectrogram(y)
        t3 = time.perf_counter()
        peaks = find_peaks(magnitudes)
        t4 = time.perf_counter()
        zones = zone_hashes(peaks, params.zones, top_k=params.top_k_targets)
        t5 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[key] += dt
        fp = Fingerprint(zones, y.size / params.sample_rate, magnitudes.shape[1], peaks.t_frames.size)
        records.append(TrackRecord(str(path), bytes([i]) * 32, fp))
    result = {key: 1000 * value / len(paths) for key, value in times.items()}
    engine = create_engine(url)
    store = Store(engine)
    store.check_schema(upgrade_empty=True)
    with store.run("bench", "bench", params) as run:
        started = time.perf_counter()
        store.tracks.write(run.id, records, run.zone_ids)
        result["database write, ordinary path"] = 1000 * (time.perf_counter() - started) / len(paths)
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute("DELETE FROM hashes")
            conn.execute("DELETE FROM tracks")
        started = time.perf_counter()
        bulk = store.bulk.begin(run.id)
        store.bulk.stage(bulk, records, run.zone_ids)
        store.bulk.commit(bulk)
        result["database write, bulk path"] = 1000 * (time.perf_counter() - started) / len(paths)
    result["postings per clip"] = sum(r.fingerprint.n_postings for r in records) / len(paths)
    engine.dispose()
    return result


def prefill(url: str, clips: pathlib.Path, n_postings: int) -> int:
    """Ingest ``clips`` (ordinary path), then replicate their postings server-side with offset track ids
    until the table holds about ``n_postings``; returns the postings held."""
    run_child([url, str(clips), "2", "30", "no"])
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        have, max_id = conn.execute("SELECT count(*), max(track_id) FROM hashes").fetchone()
        while have < n_postings:
            per_track = have / max_id
            take = int(max(1, min(max_id, (n_postings - have) // per_track)))
            conn.execute("INSERT INTO hashes SELECT zone, hash, track_id + %s, t_anchor FROM hashes"
                         " WHERE track_id <= %s ORDER BY zone, hash", (max_id, take))
            max_id += take
            have = conn.execute("SELECT count(*) FROM hashes").fetchone()[0]
        conn.execute("VACUUM ANALYZE hashes")
    return int(have)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default="/work/corpus/dev/clips30", help="folder of real-music MP3 clips")
    parser.add_argument("--copies", type=int, default=8, help="tagged copies of the folder to ingest")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--db", help="PostgreSQL server URL (default: a throwaway embedded server)")
    parser.add_argument("--prefill", type=int, default=10_000_000, help="postings held before the second ingest")
    parser.add_argument("--full-folder", help="also ingest this folder of full tracks with --duration full")
    parser.add_argument("--long-hours", type=float, default=0.0, help="also stream one synthetic file this long")
    parser.add_argument("--skip-clips", action="store_true", help="only the --full-folder and --long-hours parts")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if len(args.rest) == 1:
            child_long(args.rest[0])
        else:
            url, folder, jobs, duration, bulk = args.rest
            child_ingest(url, folder, int(jobs), duration, bulk)
        return

    rows: list[tuple[str, str]] = []

    def show(label: str, value: str) -> None:
        rows.append((label, value))
        print(f"  {label:<58} {value}", flush=True)

    clips = pathlib.Path(args.folder)
    with tempfile.TemporaryDirectory(prefix="fpstore-bench-") as tmp, server(args.db) as srv:
        tmpdir = pathlib.Path(tmp)
        if not args.skip_clips:
            paths = replicate(clips, args.copies, tmpdir / "music")
            seconds = audio_seconds(paths, 30.0)
            from fpstore.signal.audio import load_audio

            same = np.array_equal(load_audio(paths[0]), load_audio(clips / paths[0].name))
            print(f"{len(paths)} files ({args.copies} tagged copies of {clips}), {seconds:.0f} s of audio, "
                  f"jobs={args.jobs}, tagged copy decodes identically: {same}", flush=True)

            seed_s = seed_run(paths, tmpdir / "seed_hash_db.pkl")
            seed_rate = len(paths) / seed_s
            show("seed pipeline (1 process, pickle)", f"{seed_rate:6.2f} tracks/s  {seconds / seed_s:7.1f} audio s/s")

            with scratch_db(srv) as url:
                breakdown = stage_breakdown(sorted(clips.glob("*.mp3")), url)
            for key, value in breakdown.items():
                show(f"stage, one core: {key}", f"{value:8.1f}" + ("" if key.startswith("postings") else " ms/clip"))

            rates = {}
            for label, bulk, pre in (("empty DB, bulk path", "auto", 0), ("empty DB, ordinary path", "no", 0),
                                     ("DB holding prefill, bulk path", "auto", args.prefill),
                                     ("DB holding prefill, ordinary path", "no", args.prefill)):
                with scratch_db(srv) as url:
                    held = prefill(url, clips, pre) if pre else 0
                    result = run_child([url, str(tmpdir / "music"), str(args.jobs), "30", bulk])
                    rate = result["tracks"] / result["elapsed_s"]
                    rates[label] = rate
                    name = label.replace("prefill", f"{held / 1e6:.1f} M postings")
                    show(f"fpstore ingest, {name}",
                         f"{rate:6.2f} tracks/s  {seconds * result['tracks'] / len(paths) / result['elapsed_s']:7.1f}"
                         f" audio s/s  {result['postings'] / result['elapsed_s'] / 1e3:6.0f} k postings/s")
                    if label == "empty DB, bulk path":
                        bpp, n = bytes_per_posting(url)
                        show("bytes per posting, clips DB (copies dedup in the index!)", f"{bpp:6.1f} ({n} postings)")
                        check_parity(url, tmpdir / "seed_hash_db.pkl", paths)
                        show("stored postings equal the seed pickle's (all tracks)", "yes")
            show("fpstore bulk / seed throughput", f"{rates['empty DB, bulk path'] / seed_rate:6.1f} x")
            show("bulk path: rate with prefill / rate into empty DB",
                 f"{100 * rates['DB holding prefill, bulk path'] / rates['empty DB, bulk path']:6.0f} %")
            show("ordinary path: rate with prefill / rate into empty DB",
                 f"{100 * rates['DB holding prefill, ordinary path'] / rates['empty DB, ordinary path']:6.0f} %")

        if args.full_folder:
            full = sorted(pathlib.Path(args.full_folder).glob("*.mp3"))
            full_s = audio_seconds(full, None)
            with scratch_db(srv) as url:
                result = run_child([url, args.full_folder, str(args.jobs), "full", "yes"])
                bpp, n = bytes_per_posting(url)
            show(f"--duration full: {len(full)} tracks, {full_s / 3600:.2f} h",
                 f"{result['tracks'] / result['elapsed_s']:6.2f} tracks/s  {full_s / result['elapsed_s']:7.1f} audio s/s")
            show("--duration full: peak RSS writer / largest worker",
                 f"{rss_mb(result['writer_maxrss_kb']):.0f} MB / {rss_mb(result['workers_maxrss_kb']):.0f} MB")
            show("bytes per posting, full tracks (distinct content)", f"{bpp:6.1f} ({n} postings)")
        if args.long_hours:
            long_path = tmpdir / "long.flac"
            write_long_flac(long_path, args.long_hours)
            result = run_child([str(long_path)])
            show(f"streaming: one {args.long_hours:g} h 44.1 kHz stereo FLAC",
                 f"{result['elapsed_s']:.0f} s, {result['postings']} postings, peak RSS "
                 f"{rss_mb(result['maxrss_kb']):.0f} MB")
    print()
    print("| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value.strip()} |")


def check_parity(url: str, pickle_path: pathlib.Path, paths: list[pathlib.Path]) -> None:
    """Assert that every stored track's postings equal the seed pickle's for the same file."""
    with open(pickle_path, "rb") as handle:
        seed = pickle.load(handle)
    import seed_port

    expected: dict[str, dict[str, list]] = {}
    for zone, index in seed["index"].items():
        for h, packed in index.items():
            for p in packed:
                track, t = seed_port.unpack_posting(p)
                expected.setdefault(str(paths[track]), {}).setdefault(zone, []).append((h, t))
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute("SELECT t.path, z.name, fpstore_hash_value(h.hash), h.t_anchor FROM hashes h"
                            " JOIN tracks t ON t.id = h.track_id JOIN zones z ON z.id = h.zone").fetchall()
    stored: dict[str, dict[str, list]] = {}
    for path, zone, h, t in rows:
        stored.setdefault(path, {}).setdefault(zone, []).append((int(h), int(t)))
    for path, zones in expected.items():
        for zone, pairs in zones.items():
            assert sorted(stored[path][zone]) == sorted(pairs), (path, zone)
    assert len(stored) == len(expected)


if __name__ == "__main__":
    main()
