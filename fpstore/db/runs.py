"""Runs: one row of ``runs`` per ingest or import, with every parameter, its counts and its final status.

A run holds one database session open from start to finish (its *lease*): the session's backend pid is
stored in ``runs.backend_pid``, so that if the process dies, the session ends with it and the next run
can tell (:func:`mark_interrupted_runs`). :func:`open_run` owns the whole lifecycle, for ingest and
import alike::

    with store.run("ingest", "/music", params) as run:
        ...  # write tracks with run.id and run.zone_ids; run.record_failure(path, reason)

Conventions
-----------
- Status: ``running`` until the block ends; then ``completed``, ``interrupted`` (Ctrl-C, or the
  process or server died: the next run marks it) or ``failed`` (any other error).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

import fpstore
from fpstore.signal.params import FingerprintParams

if TYPE_CHECKING:
    from fpstore.db.database import Database

_START_RUN = text(
    "INSERT INTO runs (command, source, fpstore_version, host, pid, backend_pid, sample_rate, n_fft, hop_length,"
    " bin_max, peak_dist_freq, peak_dist_time, peak_thresh, top_k_targets, duration_s, zone_ids)"
    " VALUES (:command, :source, :version, :host, :pid, pg_backend_pid(), :sample_rate, :n_fft, :hop_length,"
    " :bin_max, :peak_dist_freq, :peak_dist_time, :peak_thresh, :top_k_targets, :duration_s,"
    " CAST(:zone_ids AS jsonb)) RETURNING id"
)


@dataclass
class Run:
    """An open run.

    Attributes
    ----------
    id : int
        ``runs.id``.
    zone_ids : dict[str, int]
        ``zones.id`` by zone name, for the rows this run writes.
    """

    id: int
    zone_ids: dict[str, int]
    _store: Database
    _lease: Connection

    def record_failure(self, path: str, reason: str) -> None:
        """Record that ``path`` could not be ingested, and why."""
        with self._store.begin() as conn:
            conn.execute(text("INSERT INTO failures (run_id, path, reason) VALUES (:r, :p, :why)"),
                         {"r": self.id, "p": path, "why": reason})
            conn.execute(text("UPDATE runs SET tracks_failed = tracks_failed + 1 WHERE id = :id"), {"id": self.id})

    def finish(self, status: str) -> None:
        """Set the run's final status and finish time, and end its lease."""
        try:
            with self._store.begin() as conn:
                conn.execute(text("UPDATE runs SET status = :s, finished_at = now() WHERE id = :id"),
                             {"s": status, "id": self.id})
        finally:
            self._lease.close()


@contextlib.contextmanager
def open_run(store: Database, command_name: str, source: str, params: FingerprintParams) -> Iterator[Run]:
    """Record ``params`` as the profile (or check them against it), start a run, finish it with the block.

    Parameters
    ----------
    store : Database
        At schema head.
    command_name : str
        ``runs.command``, e.g. ``"ingest"``.
    source : str
        What the run reads (a folder, a pickle file).
    params : FingerprintParams

    Yields
    ------
    run : Run

    Raises
    ------
    ProfileMismatch
        Before any run is recorded, if ``params`` differ from the database's profile.
    """
    zone_ids = store.ensure_profile(params)
    mark_interrupted_runs(store)
    lease = store.engine.connect()
    try:
        run_id = int(lease.execute(_START_RUN, dict(
            command=command_name, source=source, version=fpstore.__version__, host=socket.gethostname(),
            pid=os.getpid(), sample_rate=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
            bin_max=params.bin_max, peak_dist_freq=params.peak_dist_freq, peak_dist_time=params.peak_dist_time,
            peak_thresh=params.peak_thresh, top_k_targets=params.top_k_targets, duration_s=params.duration_s,
            zone_ids=json.dumps([zone_ids[zone.name] for zone in params.zones]),
        )).scalar_one())
        lease.commit()
    except BaseException:
        lease.close()
        raise
    run = Run(run_id, zone_ids, store, lease)
    try:
        yield run
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            run.finish(status)
        except Exception as finish_error:  # the server may be what failed: the first error matters most
            # The run stays 'running' and the next run marks it 'interrupted' (its session is gone).
            exc.add_note(f"(run {run_id} could not be marked {status}: {finish_error})")
        raise
    run.finish("completed")


def mark_interrupted_runs(store: Database) -> int:
    """Mark as ``interrupted`` every ``running`` run whose database session has ended.

    A run's session ends without finishing the run only if its process or the server died; the
    transaction it had open was rolled back, so no partial track remains.

    Returns
    -------
    n_marked : int
    """
    with store.begin() as conn:
        return conn.execute(text(
            "UPDATE runs SET status = 'interrupted', finished_at = now() WHERE status = 'running'"
            " AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
        )).rowcount
