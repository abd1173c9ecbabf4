"""Ingest on a dask.distributed cluster: each worker decodes, fingerprints and writes its files itself.

``fpstore ingest --scheduler ADDRESS`` hands every new file to the dask scheduler at ``ADDRESS`` as
one task, :func:`fingerprint_and_write`: the worker decodes and fingerprints the file, checks it for
duplicates against the whole catalogue and writes it, with the ordinary path in one transaction, on
the database that holds it (the shard its digest picks, on a cluster). Only a small
:class:`WriteResult` comes back. The ingest's process keeps what is cheap and needs one view of the
run: the folder's scan, the digests, the runs (one per shard), and the per-file lines.

Workers must reach the files under the same absolute paths (a shared filesystem) and the databases
under the URLs the ingest uses. Each worker process opens the catalogue once and keeps it open.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fpstore.db.catalogue import open_store
from fpstore.db.contract import Catalogue
from fpstore.db.tracks import TrackRecord
from fpstore.duplicates import DuplicateCheck, OnDuplicate, OnExcerpt, unchecked_reason
from fpstore.errors import DatabaseError, FpstoreError, ShardDown
from fpstore.runtime.files import one_line
from fpstore.runtime.workers import fingerprint_job
from fpstore.signal.params import FingerprintParams


@dataclass(frozen=True)
class WriteJob:
    """One file for a worker: where to read it, where to write it, and with which run and parameters."""

    path: str
    shown: str
    sha256: bytes
    catalogue_url: str
    shard: int | None
    run_id: int
    zone_ids: dict[str, int]
    params: FingerprintParams
    replace: bool
    on_duplicate: OnDuplicate
    duplicate_min_ratio: float
    on_excerpt: OnExcerpt = "keep"


@dataclass(frozen=True)
class WriteResult:
    """What a worker did with one file.

    ``failed_shard`` names the shard (on a cluster) that failed, not the file, and ``shard_failure`` says how.
    """

    shown: str
    shard: int | None
    status: Literal["added", "skipped", "failed"]
    detail: str = ""
    track_id: int | None = None
    postings_by_zone: dict[str, int] = field(default_factory=dict)
    note: str = ""
    failed_shard: int | None = None
    shard_failure: str = ""


_opened = contextlib.ExitStack()
atexit.register(_opened.close)
_catalogues: dict[str, Catalogue] = {}


def _catalogue(url: str) -> Catalogue:
    """The catalogue at ``url``, opened once per worker process."""
    if url not in _catalogues:
        _catalogues[url] = _opened.enter_context(open_store(url))
    return _catalogues[url]


def fingerprint_and_write(job: WriteJob) -> WriteResult:
    """Worker body: decode and fingerprint ``job.path``, check it for duplicates, write it on its database."""
    fingerprint = fingerprint_job(Path(job.path), job.params)
    if isinstance(fingerprint, str):
        return WriteResult(job.shown, job.shard, "failed", fingerprint)
    try:
        catalogue = _catalogue(job.catalogue_url)
        target = catalogue.shards[job.shard] if job.shard is not None else catalogue
        record, note = DuplicateCheck(catalogue, job.on_duplicate, job.duplicate_min_ratio, job.on_excerpt).apply(
            TrackRecord(job.path, job.sha256, fingerprint), job.zone_ids)
        if record is None:
            return WriteResult(job.shown, job.shard, "skipped", note)
        written = target.tracks.write(job.run_id, [record], job.zone_ids, replace=job.replace)[0]
    except ShardDown as exc:  # the duplicate check could not ask every shard: the file is not stored unchecked
        return WriteResult(job.shown, job.shard, "failed",
                           unchecked_reason(job.shown, f"shard {exc.index} ({exc.url})", exc.reason),
                           failed_shard=exc.index, shard_failure=exc.reason)
    except DatabaseError as exc:
        said = one_line(str(exc))
        where = "the database" if job.shard is None else f"shard {job.shard}"
        return WriteResult(job.shown, job.shard, "failed", f"{job.shown}: not written, {where} failed: {said}",
                           failed_shard=job.shard, shard_failure=said)
    if written.track_id is None:
        return WriteResult(job.shown, job.shard, "skipped", "same content stored meanwhile by another run")
    postings = {name: len(zone.hashes) for name, zone in fingerprint.zones.items()}
    return WriteResult(job.shown, job.shard, "added", track_id=written.track_id, postings_by_zone=postings, note=note)


class DaskWriters:
    """A client of the dask scheduler at ``address`` that runs :func:`fingerprint_and_write` tasks.

    At most two tasks per worker thread are in flight, so a large folder does not flood the scheduler.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None

    def __enter__(self) -> DaskWriters:
        try:
            from distributed import Client
        except ImportError:
            raise FpstoreError("--scheduler needs dask.distributed: pip install 'fpstore[cluster]'") from None
        try:
            self._client = Client(self.address, set_as_default=False, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise FpstoreError(f"cannot reach the dask scheduler at {self.address}: {one_line(str(exc))}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def run(self, jobs: Iterable[WriteJob]) -> Iterator[WriteResult]:
        """Each job's result, as the tasks finish; a task that dies (its worker killed) fails its file."""
        from distributed import as_completed

        limit = 2 * max(1, sum(self._client.nthreads().values()))
        finished = as_completed(loop=self._client.loop)
        submitted: dict[str, WriteJob] = {}
        for job in jobs:
            future = self._client.submit(fingerprint_and_write, job, pure=False)
            submitted[future.key] = job
            finished.add(future)
            if finished.count() >= limit:
                yield self._result(next(finished), submitted)
        for future in finished:
            yield self._result(future, submitted)

    @staticmethod
    def _result(future: Any, submitted: dict[str, WriteJob]) -> WriteResult:
        job = submitted.pop(future.key)
        try:
            result: WriteResult = future.result()
        except Exception as exc:  # e.g. KilledWorker: the file took its workers down with it
            return WriteResult(job.shown, job.shard, "failed",
                               f"{job.shown}: its dask task failed: {type(exc).__name__}: {one_line(str(exc))}")
        return result
