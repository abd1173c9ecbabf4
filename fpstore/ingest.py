"""Ingest: walk a folder, fingerprint every new audio file in worker processes, write tracks in batches.

Data flows one way: path → content digest (skip known content) → worker: decode + fingerprint →
writer (this process): a batch of tracks and their postings, one transaction, binary COPY.

Conventions
-----------
- Files are visited in sorted order of their path; extensions are matched without regard to case.
- Memory stays bounded: at most ``2 * jobs`` files are in flight and a batch holds at most
  ``batch_postings`` postings before it is written.
- A file that cannot be fingerprinted fails with one line ``<path>: <reason>`` (recorded in ``failures``)
  and the run goes on; so does a file whose worker process dies twice (the pool is replaced in between).
- A run over at least :data:`BULK_MIN_FILES` files uses the store's bulk path (staging table, index built
  after the load, attached as a partition with its tracks); smaller runs use the ordinary path. A bulk
  run publishes its tracks every ``partition_postings`` postings and at its end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import multiprocessing
import os
import stat
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fpstore.db.store import BulkLoad, Store, TrackRecord
from fpstore.errors import AudioError, DatabaseError, FpstoreError
from fpstore.signal.audio import AUDIO_EXTENSIONS, display_path
from fpstore.signal.fingerprint import Fingerprint, fingerprint_file
from fpstore.signal.params import FingerprintParams

#: Runs over at least this many files take the bulk path (README, "Speed").
BULK_MIN_FILES = 64

FileStatus = Literal["added", "skipped", "failed"]


@dataclass(frozen=True)
class FileEvent:
    """What happened to one file: ``status`` and a one-line ``detail`` naming the reason."""

    path: str
    status: FileStatus
    detail: str = ""


@dataclass
class IngestSummary:
    """Totals of one ingest run."""

    run_id: int
    files_seen: int = 0
    tracks_added: int = 0
    tracks_skipped: int = 0
    tracks_failed: int = 0
    postings_by_zone: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    failures: list[FileEvent] = field(default_factory=list)

    @property
    def postings(self) -> int:
        """Postings added over all zones."""
        return sum(self.postings_by_zone.values())


def one_line(text: str) -> str:
    """``text`` as one line of valid UTF-8: line breaks and other control characters become escapes.

    File names may hold newlines (and non-UTF-8 bytes, already escaped by :func:`display_path`); a failure
    reason naming such a file must still be one line, in the terminal and in ``failures.reason``.

    Parameters
    ----------
    text : str
        May hold surrogate escapes (undecodable bytes) and control characters.

    Returns
    -------
    line : str
        ``"new\\nline.mp3"`` for ``"new\nline.mp3"``; printable text is unchanged.
    """
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (one line, naming it), or None if it can.

    Checked before anything opens the file, so that a named pipe (which would block ``open`` forever),
    a device, a broken symbolic link or a link loop gets a precise reason instead of a hang.

    Parameters
    ----------
    path : pathlib.Path
        A file found by :func:`discover_audio_files` (possibly a symbolic link).

    Returns
    -------
    reason : str or None
        ``"<path>: <reason>"``, e.g. ``"a.mp3: symbolic link loop"``; None for a readable regular file.
    """
    shown = display_path(path)
    try:
        status = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{shown}: symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"{shown}: broken symbolic link (to {display_path(os.readlink(path))}, which does not exist)"
        return f"{shown}: cannot read ({exc.strerror or exc})"
    if not stat.S_ISREG(status.st_mode):
        return f"{shown}: not a regular file (a named pipe, socket or device)"
    if not os.access(path, os.R_OK):
        return f"{shown}: cannot read (permission denied)"
    return None


def discover_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``root`` (recursively), or ``[root]`` if it is a file, in sorted path order.

    Symbolic links to files are listed (their target is read later); links to folders are not followed,
    so a link loop cannot trap the walk.

    Raises
    ------
    NotFound
        If ``root`` does not exist.
    """
    from fpstore.errors import NotFound

    root_path = Path(root)
    if root_path.is_file():
        return [root_path]
    if not root_path.is_dir():
        raise NotFound(f"{display_path(root_path)}: no such file or folder")
    found = [
        Path(folder) / name
        for folder, _subfolders, names in os.walk(root_path)
        for name in names
        if name.lower().endswith(AUDIO_EXTENSIONS)
    ]
    return sorted(found, key=os.fsencode)


def file_sha256(path: Path) -> bytes:
    """SHA-256 digest of the file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _fingerprint_job(path: Path, params: FingerprintParams) -> Fingerprint | str:
    """Worker body: the fingerprint, or a one-line reason why the file cannot be fingerprinted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fingerprint = fingerprint_file(path, params)
    except AudioError as exc:
        return str(exc)
    except (FpstoreError, ValueError, MemoryError) as exc:
        return f"{display_path(path)}: {type(exc).__name__}: {exc}"
    if fingerprint.n_postings == 0:
        return f"{display_path(path)}: no hashes: {_why_no_hashes(fingerprint, params)}"
    return fingerprint


def _why_no_hashes(fingerprint: Fingerprint, params: FingerprintParams) -> str:
    """Why a decoded file gave no posting: too short, silent, or peaks that pair with nothing."""
    n_samples = round(fingerprint.duration_s * params.sample_rate)
    if n_samples < params.n_fft:
        return f"audio shorter than one STFT frame ({n_samples} samples < n_fft={params.n_fft})"
    if fingerprint.n_peaks == 0:
        return f"no spectral peak above peak_thresh={params.peak_thresh} (silence?)"
    return f"{fingerprint.n_peaks} peaks, but no anchor has a target inside any zone"


def ingest(
    store: Store,
    root: str | os.PathLike[str],
    params: FingerprintParams | None = None,
    *,
    force: bool = False,
    jobs: int | None = None,
    batch_postings: int = 2_000_000,
    bulk: bool | None = None,
    partition_postings: int = 50_000_000,
    on_file: Callable[[FileEvent], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Fingerprint every audio file under ``root`` and store the new ones.

    Parameters
    ----------
    store : Store
    root : path
        A folder (searched recursively) or a single file.
    params : FingerprintParams or None
        Defaults to the seed's parameters. The database keeps the parameters of its first ingest;
        later ingests must use the same (``duration_s`` may differ).
    force : bool
        Re-ingest files whose content is already stored (their old postings are replaced).
    jobs : int or None
        Worker processes for decoding and fingerprinting; None uses every core, 1 works in-process.
    batch_postings : int
        Write a batch once it holds this many postings.
    bulk : bool or None
        Use the bulk path (True), the ordinary path (False), or decide by the number of files (None).
    partition_postings : int
        Bulk path: publish the staged tracks as one partition once this many postings are staged.
    on_file : callable or None
        Called with a :class:`FileEvent` for every file, in order.
    on_start : callable or None
        Called once with the number of files found.

    Returns
    -------
    summary : IngestSummary

    Raises
    ------
    ProfileMismatch
        If ``params`` differ from the database's.
    SchemaNotAtHead
        If the database schema is not the one this fpstore knows.
    """
    params = params or FingerprintParams()
    started = time.perf_counter()
    store.check_schema(upgrade_empty=True)
    zone_ids = store.ensure_profile(params)
    store.mark_interrupted_runs()
    run_id = store.start_run("ingest", display_path(os.path.abspath(root)), params, zone_ids)
    summary = IngestSummary(run_id, postings_by_zone={zone.name: 0 for zone in params.zones})
    notify = on_file or (lambda event: None)

    def record(event: FileEvent) -> None:
        if event.status == "failed":
            event = FileEvent(event.path, "failed", one_line(event.detail))
            summary.tracks_failed += 1
            summary.failures.append(event)
            store.record_failure(run_id, event.path, event.detail)
        elif event.status == "skipped":
            summary.tracks_skipped += 1
        else:
            summary.tracks_added += 1
        notify(event)

    batch: list[TrackRecord] = []
    staging: list[BulkLoad] = []
    writer = _BatchWriter()

    def apply(outcome: _WriteOutcome) -> None:
        """Main thread: account for what the writer thread wrote."""
        for zone_name, n in outcome.postings_by_zone.items():
            summary.postings_by_zone[zone_name] += n
        for event in outcome.events:
            record(event)

    def publish(outcome: _WriteOutcome) -> None:
        for staged, added in store.commit_bulk(staging.pop(), replace=force):
            if not added:
                outcome.events.append(FileEvent(staged.path, "skipped", "same content stored meanwhile by another run"))
                continue
            outcome.events.append(
                FileEvent(staged.path, "added", f"track {staged.track_id}, {staged.n_postings} postings"))

    def write(records: list[TrackRecord], last: bool) -> _WriteOutcome:
        """Writer thread: write one batch (and publish the bulk load when it is full or ``last``)."""
        outcome = _WriteOutcome()
        if staging:
            while records:
                if not staging[0].free_ids:
                    publish(outcome)
                    staging.append(store.begin_bulk(run_id))
                part, records = records[:staging[0].free_ids], records[staging[0].free_ids:]
                store.stage_tracks(staging[0], part, zone_ids)
                outcome.count(part)
            if last or staging[0].n_postings >= partition_postings:
                publish(outcome)
                if not last:
                    staging.append(store.begin_bulk(run_id))
            return outcome
        for written in store.write_tracks(run_id, records, zone_ids, replace=force):
            if written.track_id is None:
                outcome.events.append(
                    FileEvent(written.record.path, "skipped", "same content stored meanwhile by another run"))
                continue
            outcome.count([written.record])
            outcome.events.append(FileEvent(written.record.path, "added",
                                            f"track {written.track_id}, {written.record.fingerprint.n_postings} postings"))
        return outcome

    def flush(last: bool = False) -> None:
        # The batch is written in the writer thread while the workers go on fingerprinting; at most
        # one batch is being written while the next one fills, so memory stays bounded.
        previous = writer.submit(write, list(batch), last)
        batch.clear()
        if previous is not None:
            apply(previous)
        if last and (final := writer.wait()) is not None:
            apply(final)

    try:
        files = discover_audio_files(root)
        summary.files_seen = len(files)
        if on_start:
            on_start(len(files))
        if bulk if bulk is not None else len(files) >= BULK_MIN_FILES:
            store.drop_stale_staging()
            staging.append(store.begin_bulk(run_id))
        batched_postings = 0
        for path, sha256, outcome in _fingerprint_new_files(store, files, params, force, jobs, record):
            if isinstance(outcome, str):
                record(FileEvent(display_path(path), "failed", outcome))
                continue
            batch.append(TrackRecord(display_path(os.path.abspath(path)), sha256, outcome))
            batched_postings += outcome.n_postings
            if batched_postings >= batch_postings:
                flush()
                batched_postings = 0
        flush(last=True)
    except BaseException as exc:
        writer.abandon()
        _discard(store, staging)
        # If the database itself failed, the run cannot be updated: it stays 'running' and the next
        # ingest marks it 'interrupted' (its session is gone). Do not let that mask the first error.
        with contextlib.suppress(DatabaseError):
            store.finish_run(run_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    finally:
        writer.close()
    store.finish_run(run_id, "completed")
    summary.elapsed_s = time.perf_counter() - started
    return summary


@dataclass
class _WriteOutcome:
    """What one batch write did: per-file events and postings added per zone."""

    events: list[FileEvent] = field(default_factory=list)
    postings_by_zone: dict[str, int] = field(default_factory=dict)

    def count(self, records: list[TrackRecord]) -> None:
        for item in records:
            for zone_name, postings in item.fingerprint.zones.items():
                self.postings_by_zone[zone_name] = self.postings_by_zone.get(zone_name, 0) + len(postings.hashes)


class _BatchWriter:
    """One writer thread: a batch is written while the next one fills (psycopg's COPY releases the GIL)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fpstore-writer")
        self._pending: concurrent.futures.Future[_WriteOutcome] | None = None

    def submit(self, fn: Callable[..., _WriteOutcome], *args: object) -> _WriteOutcome | None:
        """Wait for the batch being written (re-raising its error), start ``fn(*args)``; return the finished outcome."""
        previous = self.wait()
        self._pending = self._pool.submit(fn, *args)
        return previous

    def wait(self) -> _WriteOutcome | None:
        """The outcome of the batch being written, once written; None if there is none."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def abandon(self) -> None:
        """Let the batch being written finish (or fail) without reporting it: the run is failing anyway."""
        try:
            self.wait()
        except BaseException:  # the error that ends the run is already being raised
            pass

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _discard(store: Store, staging: list[BulkLoad]) -> None:
    """Drop an unpublished bulk load; if that fails too, the next bulk run drops it."""
    for bulk in staging:
        try:
            store.drop_bulk(bulk)
        except Exception:  # the original error matters more; drop_stale_staging cleans up later
            pass


def _fingerprint_new_files(
    store: Store,
    files: list[Path],
    params: FingerprintParams,
    force: bool,
    jobs: int | None,
    record: Callable[[FileEvent], None],
) -> Iterator[tuple[Path, bytes, Fingerprint | str]]:
    """Yield ``(path, sha256, fingerprint or failure reason)`` for each file not yet stored, in order."""
    jobs = jobs or os.cpu_count() or 1
    seen: dict[bytes, str] = {}
    pool = _WorkerPool(jobs) if jobs > 1 else None
    in_flight: deque[tuple[Path, bytes, concurrent.futures.Future[Fingerprint | str]]] = deque()
    try:
        for path in files:
            shown = display_path(path)
            try:
                reason = unreadable_reason(path)
                sha256 = file_sha256(path) if reason is None else b""
            except OSError as exc:
                reason = f"{shown}: cannot read ({exc.strerror or exc})"
            if reason is not None:
                record(FileEvent(shown, "failed", reason))
                continue
            if sha256 in seen:
                record(FileEvent(shown, "skipped", f"same content as {seen[sha256]}"))
                continue
            seen[sha256] = shown
            if not force and (track_id := store.track_id_by_sha256(sha256)) is not None:
                record(FileEvent(shown, "skipped", f"already in the database as track {track_id}"))
                continue
            if pool is None:
                yield path, sha256, _fingerprint_job(path, params)
                continue
            in_flight.append((path, sha256, pool.submit(path, params)))
            while len(in_flight) >= 2 * jobs:
                yield from pool.collect(in_flight, params, until=2 * jobs - 1)
        yield from pool.collect(in_flight, params, until=0) if pool is not None else ()
    finally:
        if pool is not None:
            pool.shutdown()


class _WorkerPool:
    """Worker processes that survive the death of one of them (a decoder's segfault, the OOM killer).

    When a worker dies, every file in flight gets ``BrokenProcessPool`` and nobody can tell whose file
    killed it. The pool is then replaced and each of those files is tried again *alone*; a file whose
    worker dies again alone is the culprit and fails with a reason, the others go on.
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that has imported the signal stack (numpy, soundfile, soxr) once.
        context.set_forkserver_preload(["fpstore.signal.fingerprint"])
        return concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=context)

    def submit(self, path: Path, params: FingerprintParams) -> concurrent.futures.Future[Fingerprint | str]:
        return self.executor.submit(_fingerprint_job, path, params)

    def collect(
        self,
        in_flight: deque[tuple[Path, bytes, concurrent.futures.Future[Fingerprint | str]]],
        params: FingerprintParams,
        *,
        until: int,
    ) -> Iterator[tuple[Path, bytes, Fingerprint | str]]:
        """Yield finished files from the head of ``in_flight`` (in order) until ``until`` remain."""
        while len(in_flight) > until:
            path, sha256, future = in_flight.popleft()
            try:
                yield path, sha256, _result(path, future)
            except concurrent.futures.process.BrokenProcessPool:
                suspects = [(path, sha256)] + [(p, d) for p, d, _ in in_flight]
                in_flight.clear()
                self._replace()
                self._check_workers_start()
                yield from self._retry_alone(suspects, params)

    def _check_workers_start(self) -> None:
        """Raise if a fresh worker dies without any file: then no file is to blame.

        The usual cause is a script that calls :func:`ingest` without an ``if __name__ == "__main__":``
        guard: each worker re-imports the main module and dies starting a pool of its own.
        """
        try:
            self.executor.submit(os.getpid).result()
        except concurrent.futures.process.BrokenProcessPool:
            self._replace()
            raise FpstoreError(
                "worker processes die as they start, before any file; a script that calls ingest() with "
                "jobs > 1 must do so under 'if __name__ == \"__main__\":' (workers re-import the main module)"
            ) from None

    def _retry_alone(
        self, suspects: list[tuple[Path, bytes]], params: FingerprintParams
    ) -> Iterator[tuple[Path, bytes, Fingerprint | str]]:
        for path, sha256 in suspects:
            try:
                outcome = _result(path, self.submit(path, params))
            except concurrent.futures.process.BrokenProcessPool:
                self._replace()
                outcome = (
                    f"{display_path(path)}: the worker process died while decoding it, twice (a crash in a "
                    "native decoder, or killed for lack of memory)"
                )
            yield path, sha256, outcome

    def _replace(self) -> None:
        """Swap the broken executor (its surviving workers are told to exit) for a fresh one."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._new_executor()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _result(path: Path, future: concurrent.futures.Future[Fingerprint | str]) -> Fingerprint | str:
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise
    except Exception as exc:  # a worker-side crash we did not foresee: report it against the file
        return f"{display_path(path)}: {type(exc).__name__}: {exc}"
