"""Ingest: walk a folder, fingerprint every new audio file in worker processes, write tracks in batches.

Data flows one way: path → content digest (skip known content) → worker: decode + fingerprint
(:mod:`fpstore.runtime.workers`) → a batch of tracks and their postings, written by a writer thread in one
transaction with binary COPY, through one of two writers:

- :class:`OrdinaryWriter`: the store's ordinary path (``hashes_main``, index maintained row by row);
- :class:`BulkWriter`: the bulk path (a staging table per id block, indexed after the load, attached as
  a partition with its tracks), publishing every ``partition_postings`` postings and at the end.

Conventions
-----------
- Files are visited in sorted order of their path (:func:`fpstore.runtime.files.scan_folder`); the other files of
  a folder are counted by extension, not read.
- Memory stays bounded: at most ``2 * jobs`` files are in flight and a batch holds at most
  ``batch_postings`` postings before it is written; one batch is written while the next one fills.
- A file that cannot be fingerprinted fails with one line ``<path>: <reason>`` (recorded in ``failures``)
  and the run goes on.
- A run over at least :data:`BULK_MIN_FILES` files takes the bulk path; smaller runs the ordinary one.
- On a cluster (:class:`~fpstore.db.cluster.ClusterStore`) each shard is a :class:`Destination` with
  its own run and writer, and a track goes to the shard its digest picks. A shard that fails is set
  aside: what its writer had committed is reported written, its other files fail with one line each,
  and so does every new file after it (it cannot be checked for duplicates against that shard; a file
  already stored is still skipped), until a rerun with every shard back finishes the work. With
  ``scheduler``, dask workers fingerprint and write the files instead (:mod:`fpstore.runtime.dask_workers`).
- A new track that duplicates a stored one by content (:mod:`fpstore.duplicates`: most hashes aligned at
  one offset) is skipped, kept or replaces it (``on_duplicate``); ``check_duplicates=False`` leaves the
  check out. It is compared with the tracks
  committed when its fingerprint is ready: those stored before the run and this run's batches (ordinary
  path) or partitions (bulk path) already written; two copies waiting in the same batch or unpublished
  bulk load are both stored (``fpstore tracks duplicates`` lists them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from fpstore.db.bulk import BulkLoad
from fpstore.db.cluster import shard_of_digest
from fpstore.db.compact import DEFAULT_MAX_PARTITIONS, CompactSummary, merge_partitions
from fpstore.db.contract import Catalogue
from fpstore.db.runs import Run
from fpstore.db.tracks import TrackRecord
from fpstore.duplicates import DEFAULT_MIN_RATIO, DuplicateCheck, OnDuplicate, OnExcerpt, unchecked_reason
from fpstore.errors import DatabaseError, NotFound, ParameterError, ServerFailed, ShardDown
from fpstore.runtime.dask_workers import DaskWriters, WriteJob
from fpstore.runtime.files import FolderScan, file_sha256, one_line, scan_folder, unreadable_reason
from fpstore.runtime.wording import counted
from fpstore.runtime.workers import Fingerprinter
from fpstore.signal.audio import display_path
from fpstore.signal.params import FingerprintParams

#: Runs over at least this many files take the bulk path (docs/speed.md).
BULK_MIN_FILES = 64
#: Duplicate checks of new files running at once, each in a thread on its own connection: a check is
#: mostly the server's index probes, which then overlap each other, the vote and the fingerprinting.
CHECKS_IN_FLIGHT = 2

FileStatus = Literal["added", "skipped", "failed"]

_STORED_MEANWHILE = "same content stored meanwhile by another run"


@dataclass(frozen=True)
class FileEvent:
    """What happened to one file: ``status``, a one-line ``detail`` naming the reason, and whether it is ``notable``.

    ``notable`` marks an added track that duplicates a stored one (kept, or replacing it): worth a line
    even when added tracks are not listed.
    """

    path: str
    status: FileStatus
    detail: str = ""
    notable: bool = False


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
    #: Files of the folder left out for their extension (hidden ones aside), counted per extension.
    other_extensions: dict[str, int] = field(default_factory=dict)
    #: On a cluster, each shard's run (None for a shard that failed before its run started); ``run_id``
    #: is then the first of them.
    shard_run_ids: list[int | None] = field(default_factory=list)
    #: Seconds loaded from the start of each file (the parameters' ``duration_s``); None: whole files.
    duration_s: float | None = None
    #: Tracks added whose audio reached ``duration_s``: only their first ``duration_s`` seconds are stored.
    tracks_cut: int = 0
    #: Partitions of ``hashes`` merged at the end of the run (one per database merged; not in ``elapsed_s``).
    merges: list[CompactSummary] = field(default_factory=list)
    #: Why a merge at the end failed (one line each; its partitions are as they were, the tracks stored).
    merge_failures: list[str] = field(default_factory=list)

    @property
    def postings(self) -> int:
        """Postings added over all zones."""
        return sum(self.postings_by_zone.values())


@dataclass
class WriteOutcome:
    """What writing one batch did: per-file events and postings added per zone."""

    events: list[FileEvent] = field(default_factory=list)
    postings_by_zone: dict[str, int] = field(default_factory=dict)

    def added(self, path: str, track_id: int, record_postings: dict[str, int]) -> None:
        """Account for one track written."""
        postings = counted(sum(record_postings.values()), "posting")
        self.events.append(FileEvent(path, "added", f"track {track_id}, {postings}"))
        for zone_name, n in record_postings.items():
            self.postings_by_zone[zone_name] = self.postings_by_zone.get(zone_name, 0) + n


class Writer(Protocol):
    """Writes batches of fingerprinted files into the store (in the writer thread)."""

    def write(self, records: list[TrackRecord], *, last: bool) -> WriteOutcome:
        """Write ``records``; ``last`` says that no batch follows."""

    def discard(self) -> None:
        """Drop whatever was written but not yet published (the run is failing)."""


def _postings_by_zone(record: TrackRecord) -> dict[str, int]:
    return {zone_name: len(postings.hashes) for zone_name, postings in record.fingerprint.zones.items()}


class OrdinaryWriter:
    """Each batch is one transaction of the store's ordinary path."""

    def __init__(self, store: Catalogue, run: Run, *, replace: bool) -> None:
        self._store, self._run, self._replace = store, run, replace

    def write(self, records: list[TrackRecord], *, last: bool) -> WriteOutcome:
        """Insert the batch's tracks and COPY their postings."""
        outcome = WriteOutcome()
        for written in self._store.tracks.write(self._run.id, records, self._run.zone_ids, replace=self._replace):
            if written.track_id is None:
                outcome.events.append(FileEvent(written.record.path, "skipped", _STORED_MEANWHILE))
            else:
                outcome.added(written.record.path, written.track_id, _postings_by_zone(written.record))
        return outcome

    def discard(self) -> None:
        """Nothing to drop: every batch was committed whole."""


class BulkWriter:
    """Batches are staged into the current bulk load, published as a partition when full and at the end."""

    def __init__(self, store: Catalogue, run: Run, *, replace: bool, partition_postings: int) -> None:
        self._store, self._run, self._replace = store, run, replace
        self._partition_postings = partition_postings
        store.bulk.drop_stale()
        self._load: BulkLoad | None = store.bulk.begin(run.id)
        # Postings per zone of the staged tracks, reported when their load is published.
        self._staged_postings: dict[str, dict[str, int]] = {}

    def write(self, records: list[TrackRecord], *, last: bool) -> WriteOutcome:
        """Stage the batch (starting new id blocks as they fill); publish when full or ``last``."""
        outcome = WriteOutcome()
        while records:
            load = self._open_load(outcome)
            part, records = records[:load.free_ids], records[load.free_ids:]
            self._store.bulk.stage(load, part, self._run.zone_ids)
            self._staged_postings.update((record.path, _postings_by_zone(record)) for record in part)
        if self._load is not None and (last or self._load.n_postings >= self._partition_postings):
            self._publish(outcome)
        return outcome

    def _open_load(self, outcome: WriteOutcome) -> BulkLoad:
        """The load to stage into: the current one, or a new one once the current id block is full."""
        if self._load is not None and not self._load.free_ids:
            self._publish(outcome)
        if self._load is None:
            self._load = self._store.bulk.begin(self._run.id)
        return self._load

    def _publish(self, outcome: WriteOutcome) -> None:
        assert self._load is not None
        load, self._load = self._load, None
        for row, added in self._store.bulk.commit(load, replace=self._replace):
            postings = self._staged_postings.pop(row.path)
            if added:
                outcome.added(row.path, row.track_id, postings)
            else:
                outcome.events.append(FileEvent(row.path, "skipped", _STORED_MEANWHILE))

    def discard(self) -> None:
        """Drop the unpublished load; if that fails too, the next bulk run drops it (``drop_stale``)."""
        if self._load is not None:
            load, self._load = self._load, None
            try:
                self._store.bulk.drop(load)
            except Exception:  # the error that ends the run matters more
                pass


class BackgroundWriter:
    """Runs a :class:`Writer` in one thread: a batch is written while the next one fills.

    psycopg's COPY releases the GIL, so writing and collecting fingerprints overlap; at most one batch is
    being written at a time, so memory stays bounded.
    """

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fpstore-writer")
        self._pending: concurrent.futures.Future[WriteOutcome] | None = None

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is not None:
                self._abandon()
        finally:
            self._pool.shutdown(wait=True)

    def submit(self, records: list[TrackRecord], *, last: bool = False) -> list[WriteOutcome]:
        """Start writing ``records``; return the outcome of the batch written before (:meth:`finish` waits for this one)."""
        done = self._wait()
        self._pending = self._pool.submit(self._writer.write, records, last=last)
        return done

    def finish(self) -> list[WriteOutcome]:
        """Wait for the batch being written; its outcome."""
        return self._wait()

    def _wait(self) -> list[WriteOutcome]:
        pending, self._pending = self._pending, None
        return [] if pending is None else [pending.result()]

    def _abandon(self) -> None:
        """Let the batch being written finish (or fail) unreported, then discard what is unpublished."""
        try:
            self._wait()
        except BaseException:  # the error that ends the run is already being raised
            pass
        self._writer.discard()


@dataclass
class Destination:
    """A database that tracks are written to: the store, or one shard of a cluster, with its own run.

    A shard that fails (down at the start, or during the run) is ``down``: its files fail with one line
    each naming it and the reason, and so do the other shards' new files (they cannot be checked for
    duplicates against it).
    """

    store: Catalogue
    name: str
    runs: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    run: Run | None = None
    background: BackgroundWriter | None = None
    batch: list[TrackRecord] = field(default_factory=list)
    batched_postings: int = 0
    #: Paths handed to the writer whose outcome has not said yet what became of them (in order).
    handed: dict[str, None] = field(default_factory=dict)
    down: str = ""

    def fail(self, path: str) -> FileEvent:
        """The event of a file this destination can no longer take."""
        return FileEvent(path, "failed", f"{path}: not written, {self.name} failed: {self.down}")

    def unchecked(self, path: str) -> FileEvent:
        """The event of a new file that could not be checked for duplicates on this (failed) destination."""
        return FileEvent(path, "failed", unchecked_reason(path, self.name, self.down))


class Ingest:
    """One ingest of a folder into a store (see :func:`ingest` for the parameters)."""

    _summary: IngestSummary
    _destinations: list[Destination]

    def __init__(self, store: Catalogue, params: FingerprintParams, *, force: bool, jobs: int | None,
                 batch_postings: int, bulk: bool | None, partition_postings: int,
                 on_duplicate: OnDuplicate, duplicate_min_ratio: float, on_excerpt: OnExcerpt,
                 on_file: Callable[[FileEvent], None] | None, on_start: Callable[[int], None] | None,
                 scheduler: str | None = None, on_progress: Callable[[], None] | None = None,
                 check_duplicates: bool = True, max_partitions: int = DEFAULT_MAX_PARTITIONS) -> None:
        if max_partitions < 0:
            raise ParameterError(f"max_partitions must be 0 (never merge) or more, not {max_partitions}")
        if scheduler is not None and not check_duplicates:
            raise ParameterError("check_duplicates=False is for this machine's workers: dask workers always check")
        self.store, self.params, self.scheduler = store, params, scheduler
        self.check_duplicates, self.max_partitions = check_duplicates, max_partitions
        self.on_duplicate, self.duplicate_min_ratio = on_duplicate, duplicate_min_ratio
        self.force, self.jobs, self.bulk = force, jobs, bulk
        self.cluster = store.routed
        self.on_excerpt = on_excerpt
        self.duplicates = DuplicateCheck(store, on_duplicate, duplicate_min_ratio, on_excerpt)
        if force:  # a re-ingested file's stored postings are deleted: the lists they were in shorten
            self.duplicates.common.forget()
        # Path of a written track → what it duplicates, added to its "added" event.
        self._duplicate_notes: dict[str, str] = {}
        self.batch_postings, self.partition_postings = batch_postings, partition_postings
        self.on_file = on_file or (lambda event: None)
        self.on_start = on_start or (lambda n_files: None)
        self.on_progress = on_progress or (lambda: None)
        # Paths already counted by on_progress (a fingerprinted file is counted before its batch is written).
        self._progressed: set[str] = set()
        # Paths of fingerprinted files whose audio reached params.duration_s (cut there).
        self._cut: set[str] = set()
        # While files are fingerprinted here: the turns of the files waiting for their check (_write_all).
        self._turns: deque[Callable[[], None]] | None = None

    def run(self, roots: Sequence[str | os.PathLike[str]]) -> IngestSummary:
        """Ingest every audio file under ``roots``; return the run's totals."""
        started = time.perf_counter()
        scans = [scan_folder(root) for root in roots]
        scan = FolderScan([path for one in scans for path in one.audio], [path for one in scans for path in one.others])
        files = scan.audio
        if not files:
            shown = ", ".join(display_path(root) for root in roots)
            others = f" ({counted(len(scan.others), 'file')} with other extensions)" if scan.others else ""
            raise NotFound(f"{shown}: no audio files{others}; nothing ingested")
        if not self.cluster:
            self.store.check_schema(upgrade_empty=True)
        with contextlib.ExitStack() as stack:
            source = ", ".join(display_path(os.path.abspath(root)) for root in roots)
            self._destinations = self._open(stack, source, len(files))
            run_ids = [d.run.id if d.run is not None else None for d in self._destinations]
            self._summary = IngestSummary(next(i for i in run_ids if i is not None), len(files),
                                          postings_by_zone={z.name: 0 for z in self.params.zones},
                                          other_extensions=scan.other_extensions(),
                                          shard_run_ids=run_ids if self.cluster else [],
                                          duration_s=self.params.duration_s)
            self.on_start(len(files))
            self._write_all(files)
        self._summary.elapsed_s = time.perf_counter() - started
        if self.max_partitions:
            self._merge_partitions()
        return self._summary

    def _merge_partitions(self) -> None:
        """Merge partitions of ``hashes`` on each database written, now that the run's tracks are committed.

        A merge that fails leaves its partitions as they were (one transaction) and the run's tracks
        stored: it is reported in the summary, not raised.
        """
        for destination, shard in zip(self._destinations, self.store.shards):
            if destination.down:
                continue
            try:
                merged = merge_partitions(shard, self.max_partitions)
            except DatabaseError as exc:
                # The driver's own line: ServerFailed's advice (no partial track, rerun) is about writing tracks.
                reason = one_line(exc.reason if isinstance(exc, ServerFailed) else str(exc))
                self._summary.merge_failures.append(f"{destination.name}: {reason}" if self.cluster else reason)
                continue
            if merged is not None:
                self._summary.merges.append(merged)

    def _open(self, stack: contextlib.ExitStack, source: str, n_files: int) -> list[Destination]:
        """A destination per database written, each with its run and writer; on a cluster a failing shard is down."""
        targets = self.store.shards
        destinations = []
        for index, target in enumerate(targets):
            destination = Destination(target, f"shard {index} ({target.url})")
            stack.push(functools.partial(self._close, destination))
            try:
                if self.cluster:
                    target.check_schema(upgrade_empty=True)
                destination.run = destination.runs.enter_context(target.run("ingest", source, self.params))
                destination.background = destination.runs.enter_context(
                    BackgroundWriter(self._writer(target, destination.run, n_files)))
            except DatabaseError as exc:
                self._shard_failed(destination, exc)
            destinations.append(destination)
        if all(d.down for d in destinations):
            raise DatabaseError("every shard of the cluster failed: " + "; ".join(d.down for d in destinations))
        return destinations

    def _close(self, destination: Destination, *exc_info: Any) -> bool:
        """Close the destination's writer and run at the end (``exc_info`` as ``__exit__`` takes it).

        On a cluster a shard that fails now, after every file was reported, only leaves its run
        'running' (the next ingest marks it interrupted): the run's tracks are written and said so.
        """
        try:
            return bool(destination.runs.__exit__(*exc_info))
        except DatabaseError:
            if not self.cluster or exc_info[0] is not None:
                raise
            return False

    def _take_down(self, destination: Destination, exc: DatabaseError) -> None:
        """A shard failed: report what its writer committed, close its run as failed, fail the files it did not store."""
        destination.down = exc.reason if isinstance(exc, ShardDown) else one_line(str(exc))
        if destination.background is not None:
            try:
                # A batch the writer thread committed before the failure was noticed is written: say so.
                self._account(destination.background.finish(), destination)
            except DatabaseError:  # that batch failed too: its files fail below
                pass
        try:
            destination.runs.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:  # the shard is what failed: its run stays 'running' and is marked interrupted later
            pass
        for path in [*destination.handed, *(record.path for record in destination.batch)]:
            self._record(destination.fail(path))
        destination.handed, destination.batch = {}, []

    def _first_down(self) -> Destination | None:
        """A shard that failed, if any: new files cannot be checked for duplicates against it."""
        return next((d for d in self._destinations if d.down), None)

    def _writer(self, store: Catalogue, run: Run, n_files: int) -> Writer:
        bulk = self.bulk if self.bulk is not None else n_files >= BULK_MIN_FILES
        if bulk and self.scheduler is None:  # dask workers write with the ordinary path
            return BulkWriter(store, run, replace=self.force, partition_postings=self.partition_postings)
        return OrdinaryWriter(store, run, replace=self.force)

    def _route(self, sha256: bytes) -> Destination:
        if not self.cluster:
            return self._destinations[0]
        return self._destinations[shard_of_digest(sha256, len(self._destinations))]

    def _write_all(self, files: list[Path]) -> None:
        """Fingerprint the new files and hand them to their writers in batches of ``batch_postings``."""
        if self.scheduler is not None:
            self._write_all_on_dask(files, self.scheduler)
            return
        with Fingerprinter[bytes](self.params, self.jobs) as fingerprinter, concurrent.futures.ThreadPoolExecutor(
                CHECKS_IN_FLIGHT, thread_name_prefix="fpstore-check") as checks:
            # Each file's turn, in the files' order: its check (if any) started when its fingerprint came;
            # a file passed over before fingerprinting (stored, unreadable) takes the turns before it (_report).
            turns: deque[Callable[[], None]] = deque()
            self._turns = turns
            for path, sha256, outcome in fingerprinter.run(self._new_files(files)):
                destination = self._route(sha256)
                if isinstance(outcome, str):
                    turns.append(functools.partial(
                        self._record, FileEvent(display_path(path), "failed", outcome), destination))
                else:
                    record = TrackRecord(display_path(os.path.abspath(path)), sha256, outcome)
                    # Half a frame of slack: a file cut at duration_s decodes to duration_s, give or take a sample.
                    if self.params.duration_s is not None and (
                            outcome.duration_s >= self.params.duration_s - self.params.seconds_per_frame / 2):
                        self._cut.add(record.path)
                    self._progress(record.path)
                    turns.append(functools.partial(self._place, destination, record,
                                                   self._start_check(checks, destination, record)))
                while len(turns) > CHECKS_IN_FLIGHT:
                    turns.popleft()()
            while turns:
                turns.popleft()()
            self._turns = None
        for destination in self._destinations:
            self._submit(destination, last=True)

    def _start_check(self, checks: concurrent.futures.Executor, destination: Destination,
                     record: TrackRecord) -> concurrent.futures.Future[tuple[TrackRecord | None, str]] | None:
        """Start checking ``record`` for duplicates in a check thread (None: no check, or a shard is down)."""
        if not self.check_duplicates or destination.down or self._first_down() is not None:
            return None
        assert destination.run is not None
        return checks.submit(self.duplicates.apply, record, destination.run.zone_ids)

    def _place(self, destination: Destination, record: TrackRecord,
               check: concurrent.futures.Future[tuple[TrackRecord | None, str]] | None) -> None:
        """A fingerprinted file's turn: fail it if a shard went down, else batch it with its check's answer."""
        if destination.down:
            self._record(destination.fail(record.path))
        elif (down := self._first_down()) is not None:
            self._record(down.unchecked(record.path), destination)
        else:
            self._add(destination, record, check)

    def _write_all_on_dask(self, files: list[Path], scheduler: str) -> None:
        """Hand each new file to a dask worker, which fingerprints it and writes it on its database itself."""
        catalogue_url = self.store.url_with_password()
        with DaskWriters(scheduler) as writers:
            for result in writers.run(self._dask_jobs(files, catalogue_url)):
                destination = self._destinations[result.shard or 0]
                if result.failed_shard is not None and self.cluster and not self._destinations[result.failed_shard].down:
                    self._take_down(self._destinations[result.failed_shard], DatabaseError(result.shard_failure))
                if result.status != "added":
                    self._record(FileEvent(result.shown, result.status, result.detail), destination)
                    continue
                assert result.track_id is not None
                if result.note:
                    self._duplicate_notes[result.shown] = result.note
                outcome = WriteOutcome()
                outcome.added(result.shown, result.track_id, result.postings_by_zone)
                self._account([outcome])

    def _dask_jobs(self, files: list[Path], catalogue_url: str) -> Iterator[WriteJob]:
        for path, sha256 in self._new_files(files):
            destination = self._route(sha256)
            shown = display_path(os.path.abspath(path))
            if destination.down or destination.run is None:
                self._record(destination.fail(shown))
                continue
            yield WriteJob(os.path.abspath(path), shown, sha256, catalogue_url,
                           self._destinations.index(destination) if self.cluster else None, destination.run.id,
                           destination.run.zone_ids, self.params, self.force, self.on_duplicate,
                           self.duplicate_min_ratio, self.on_excerpt)

    def _add(self, destination: Destination, record: TrackRecord,
             check: concurrent.futures.Future[tuple[TrackRecord | None, str]] | None) -> None:
        """Batch ``record`` with its duplicate check's answer (``check``, or checked now); write a full batch.

        A shard that cannot answer the check is taken down, and the file is not stored unchecked.
        """
        assert destination.run is not None
        try:
            if check is not None:
                checked, note = check.result()
            elif self.check_duplicates:
                checked, note = self.duplicates.apply(record, destination.run.zone_ids)
            else:
                checked, note = record, ""
        except ShardDown as exc:
            failed = self._destinations[exc.index]
            self._shard_failed(failed, exc)
            self._record(destination.fail(record.path) if destination.down else failed.unchecked(record.path),
                         destination)
            return
        if checked is None:
            self._record(FileEvent(record.path, "skipped", note), destination)
            return
        if note:
            self._duplicate_notes[checked.path] = note
        destination.batch.append(checked)
        destination.batched_postings += checked.fingerprint.n_postings
        if destination.batched_postings >= self.batch_postings:
            self._submit(destination)

    def _submit(self, destination: Destination, *, last: bool = False) -> None:
        """Hand the destination's batch to its writer (``last``: and wait for everything it writes)."""
        if destination.down or destination.background is None:
            return
        batch, destination.batch, destination.batched_postings = destination.batch, [], 0
        try:
            self._account(destination.background.submit(batch, last=last), destination)
        except DatabaseError as exc:  # raised before ``batch`` was handed over: it fails with the one written
            destination.batch = batch
            self._shard_failed(destination, exc)
            return
        destination.handed.update(dict.fromkeys(record.path for record in batch))
        if last:
            try:
                self._account(destination.background.finish(), destination)
            except DatabaseError as exc:
                self._shard_failed(destination, exc)

    def _shard_failed(self, destination: Destination, exc: DatabaseError) -> None:
        """On a cluster, take the shard down and go on; a single database's failure ends the run."""
        if not self.cluster:
            raise exc
        self._take_down(destination, exc)

    def _new_files(self, files: list[Path]) -> Iterator[tuple[Path, bytes]]:
        """``(path, sha256)`` of each readable file whose content is neither stored nor seen in this run."""
        seen: dict[bytes, str] = {}
        for path in files:
            shown = display_path(path)
            try:
                reason = unreadable_reason(path)
                sha256 = file_sha256(path) if reason is None else b""
            except OSError as exc:
                reason = f"{shown}: cannot read ({exc.strerror or exc})"
            if reason is not None:
                self._report(FileEvent(shown, "failed", reason))
            elif sha256 in seen:
                self._report(FileEvent(shown, "skipped", f"same content as {seen[sha256]}"))
            elif not self._is_new(path, sha256):
                seen[sha256] = shown
            else:
                seen[sha256] = shown
                yield path, sha256

    def _is_new(self, path: Path, sha256: bytes) -> bool:
        """Whether a file must be fingerprinted: its content is not stored, and its shard can take it."""
        destination, shown = self._route(sha256), display_path(path)
        if destination.down:
            self._report(destination.fail(shown))
            return False
        if not self.force:
            try:
                track_id = destination.store.tracks.id_by_sha256(sha256)
            except DatabaseError as exc:
                self._shard_failed(destination, exc)
                self._report(destination.fail(shown))
                return False
            if track_id is not None:
                self._report(FileEvent(shown, "skipped", self._stored_as(destination.store, track_id)), destination)
                return False
        if (down := self._first_down()) is not None:
            self._report(down.unchecked(shown), destination)
            return False
        return True

    def _stored_as(self, store: Catalogue, track_id: int) -> str:
        """Why a file whose content is stored is skipped, naming the cut it was stored with when it differs."""
        said = f"already in the database as track {track_id}"
        stored, cut_s = store.tracks.stored_cut_s(track_id)
        if not stored or cut_s == self.params.duration_s:
            return said
        return (f"{said}, stored with --duration {_duration_word(cut_s)}; --force replaces it with "
                f"--duration {_duration_word(self.params.duration_s)}")

    def _progress(self, path: str) -> None:
        """Count ``path`` as done for the progress callback, once."""
        if path not in self._progressed:
            self._progressed.add(path)
            self.on_progress()

    def _account(self, outcomes: list[WriteOutcome], destination: Destination | None = None) -> None:
        """Main thread: count what the writer thread wrote (for ``destination``, whose files it no longer holds)."""
        for outcome in outcomes:
            for zone_name, n in outcome.postings_by_zone.items():
                self._summary.postings_by_zone[zone_name] += n
            for event in outcome.events:
                if destination is not None:
                    destination.handed.pop(event.path, None)
                self._record(event)

    def _report(self, event: FileEvent, destination: Destination | None = None) -> None:
        """Record the event of a file passed over before fingerprinting, once the files before it had their turn."""
        while self._turns:
            self._turns.popleft()()
        self._record(event, destination)

    def _record(self, event: FileEvent, destination: Destination | None = None) -> None:
        """Count one file's event and pass it on; a failure is also recorded in a run that can take it."""
        if event.status == "failed":
            event = FileEvent(event.path, "failed", one_line(event.detail))
            self._summary.tracks_failed += 1
            self._summary.failures.append(event)
            self._record_failure(event, destination)
        elif event.status == "skipped":
            self._summary.tracks_skipped += 1
        else:
            if event.path in self._cut:
                self._summary.tracks_cut += 1
                cut = _duration_word(self.params.duration_s)
                event = dataclasses.replace(event, detail=f"{event.detail}, first {cut} s")
            if (note := self._duplicate_notes.pop(event.path, "")):
                event = FileEvent(event.path, "added", f"{event.detail}, {note}", notable=True)
            self._summary.tracks_added += 1
        self._progress(event.path)
        self.on_file(event)

    def _record_failure(self, event: FileEvent, destination: Destination | None) -> None:
        """In the run of the file's shard, or of the first shard standing (none if every shard failed)."""
        standing = [d for d in ([destination] if destination else []) + self._destinations if not d.down]
        if not standing:
            return
        assert standing[0].run is not None
        try:  # absolute, as tracks.path is
            standing[0].run.record_failure(os.path.abspath(event.path), event.detail)
        except DatabaseError as exc:
            self._shard_failed(standing[0], exc)


def _duration_word(duration_s: float | None) -> str:
    """``30`` or ``full``: a ``duration_s`` as ``--duration`` takes it."""
    return "full" if duration_s is None else f"{duration_s:g}"


def ingest(
    store: Catalogue,
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    params: FingerprintParams | None = None,
    *,
    force: bool = False,
    jobs: int | None = None,
    batch_postings: int = 2_000_000,
    bulk: bool | None = None,
    partition_postings: int = 50_000_000,
    on_duplicate: OnDuplicate = "skip",
    duplicate_min_ratio: float = DEFAULT_MIN_RATIO,
    on_excerpt: OnExcerpt = "keep",
    on_file: Callable[[FileEvent], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    scheduler: str | None = None,
    on_progress: Callable[[], None] | None = None,
    check_duplicates: bool = True,
    max_partitions: int = DEFAULT_MAX_PARTITIONS,
) -> IngestSummary:
    """Fingerprint every audio file under ``root`` and store the new ones.

    Parameters
    ----------
    store : Catalogue
    root : path or sequence of paths
        Folders (searched recursively) and single files.
    params : FingerprintParams or None
        Defaults to the seed's parameters with whole files (``duration_s=None``; the notebook's 30 s
        cut is :data:`~fpstore.signal.params.NOTEBOOK_PARAMS`). The database keeps the parameters of its
        first ingest; later ingests must use the same (``duration_s`` may differ).
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
    on_duplicate : {"skip", "keep", "replace"}
        A new track that duplicates a stored one (the same recording, another file: re-encoded,
        resampled, imported from a pickle) is skipped, kept as well, or replaces the stored one (deleted
        in the new track's transaction).
    duplicate_min_ratio : float
        The share of hashes that must align for a duplicate (:mod:`fpstore.duplicates`).
    on_excerpt : {"keep", "skip"}
        A new track that is an excerpt of a stored one (a clip of it), or holds a stored one as an excerpt
        (the whole track of a stored clip): store it (the default; its line names the other track and
        where), or skip it.
    on_file : callable or None
        Called with a :class:`FileEvent` for every file.
    on_start : callable or None
        Called once with the number of files found.
    on_progress : callable or None
        Called once per file when it is done here: fingerprinted (before its batch is written), or
        skipped or failed before that.
    scheduler : str or None
        Address of a dask.distributed scheduler (``tcp://host:8786``): its workers decode, fingerprint
        and write the files (:mod:`fpstore.runtime.dask_workers`; ``jobs``, ``bulk`` and the batch sizes are then
        not used). None: this machine's worker processes, and the writer of this process.
    check_duplicates : bool
        Check every new track for duplicates and excerpts of the stored ones (the default). False stores
        every new file unchecked (its content digest is still checked): for loading a catalogue known to
        hold no copies, such as a first bulk load (not with ``scheduler``).
    max_partitions : int
        At the end, once the run's tracks are committed, a database whose ``hashes`` has more partitions
        than this (each bulk load adds one) has adjacent ones merged into sorted partitions, size-tiered
        (:func:`fpstore.db.compact.merge_partitions`; each shard of a cluster on its own); 0 never merges.

    Returns
    -------
    summary : IngestSummary

    Raises
    ------
    NotFound
        If a ``root`` does not exist, or none holds an audio file (before any run is recorded).
    ParameterError
        If ``on_duplicate``, ``duplicate_min_ratio``, ``on_excerpt`` or ``max_partitions`` is out of range, or
        ``check_duplicates`` is False with a ``scheduler``.
    ProfileMismatch
        If ``params`` differ from the database's.
    SchemaNotAtHead
        If the database schema is not the one this fpstore knows.

    Examples
    --------
    >>> with open_store() as store:                             # doctest: +SKIP
    ...     ingest(store, "music/", jobs=2).tracks_added
    14
    """
    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    return Ingest(store, params or FingerprintParams(), force=force, jobs=jobs, batch_postings=batch_postings,
                  bulk=bulk, partition_postings=partition_postings, on_duplicate=on_duplicate,
                  duplicate_min_ratio=duplicate_min_ratio, on_excerpt=on_excerpt, on_file=on_file, on_start=on_start,
                  scheduler=scheduler, on_progress=on_progress, check_duplicates=check_duplicates,
                  max_partitions=max_partitions).run(roots)
