"""Fingerprinting files in worker processes that survive the death of one of them.

:class:`Fingerprinter` decodes and fingerprints files, in order, with at most ``2 * jobs`` in flight, in
``jobs`` processes (or in this process when ``jobs`` is 1). Each file gives its
:class:`~fpstore.signal.fingerprint.Fingerprint` or a one-line reason why it has none.

Workers fork from a *forkserver* that imports the signal stack once. Two things can kill them that are
not a file's fault, and both are told apart from a file that crashes its decoder:

- The forkserver of Python 3.11 starts with the current folder first on ``sys.path`` (``python -c``)
  and ignores the parent's path, so a folder named ``fpstore`` in the current folder (the parent of a
  clone, say) would be imported instead of the installed package. It is started with
  ``PYTHONSAFEPATH=1``, so it imports what the parent imports.
- A script that starts a pool without ``if __name__ == "__main__":``: every worker re-imports the
  main module and dies starting a pool of its own. A probe with no file then dies too, and
  :class:`~fpstore.errors.FpstoreError` says so instead of failing every file.

When a worker dies, every file in flight gets ``BrokenProcessPool`` and nobody can tell whose file
killed it; the pool is replaced and each of those files is tried again *alone*: a file whose worker
dies again alone is the culprit and fails with a reason, the others go on.

When the process that started the pool dies without shutting it down (SIGKILL, the OOM killer), its
workers exit within a second instead of waiting forever for work (and holding its stdout and stderr
open): each one watches a pipe whose only writing end the parent holds, and the end of that pipe means
the parent is gone. This works wherever multiprocessing does, unlike Linux's ``PR_SET_PDEATHSIG``,
and does not mistake an unreaped parent (a zombie) for a living one, unlike polling its pid. The
forkserver and the resource tracker then exit by themselves: they stop once every process holding their
pipes (the parent and the workers) is gone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing.forkserver
import os
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import get_context as processes_started_by
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from fpstore.errors import AudioError, FpstoreError
from fpstore.signal.audio import display_path, load_audio
from fpstore.signal.fingerprint import Fingerprint, fingerprint_file
from fpstore.signal.params import FingerprintParams

#: What the caller carries along with each file (ingest: its content digest).
Tag = TypeVar("Tag")
Result = TypeVar("Result")

Outcome = Fingerprint | str


def fingerprint_job(path: Path, params: FingerprintParams) -> Outcome:
    """Worker body: the fingerprint, or a one-line reason why the file cannot be fingerprinted."""
    fingerprint = _attempt(path, lambda: fingerprint_file(path, params))
    if isinstance(fingerprint, str) or fingerprint.n_postings:
        return fingerprint
    return no_hashes_reason(path, fingerprint, params)


def signal_job(path: Path, params: FingerprintParams) -> np.ndarray | str:
    """The whole file's samples as the seed decodes them, or the reason :func:`fingerprint_job` would give."""
    return _attempt(path, lambda: load_audio(path, sample_rate=params.sample_rate, duration_s=None))


def _attempt(path: Path, work: Callable[[], Result]) -> Result | str:
    """``work()``, or the one-line reason its decoding or fingerprinting of ``path`` failed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return work()
    except AudioError as exc:
        return str(exc)
    except (FpstoreError, ValueError, MemoryError) as exc:
        return f"{display_path(path)}: {type(exc).__name__}: {exc}"


def no_hashes_reason(path: Path, fingerprint: Fingerprint, params: FingerprintParams) -> str:
    """Why a decoded file gave no posting: too short, silent, or peaks that pair with nothing."""
    n_samples = round(fingerprint.duration_s * params.sample_rate)
    if n_samples < params.n_fft:
        why = f"audio shorter than one STFT frame ({n_samples} samples < n_fft={params.n_fft})"
    elif fingerprint.n_peaks == 0:
        why = f"no spectral peak above peak_thresh={params.peak_thresh} (silence?)"
    else:
        why = f"{fingerprint.n_peaks} peaks, but no anchor has a target inside any zone"
    return f"{display_path(path)}: no hashes: {why}"


class Fingerprinter(Generic[Tag]):
    """Fingerprint files in order, in ``jobs`` worker processes (in this process if ``jobs`` is 1).

    Parameters
    ----------
    params : FingerprintParams
    jobs : int or None
        Worker processes; None uses every core.
    """

    def __init__(self, params: FingerprintParams, jobs: int | None) -> None:
        self.params = params
        self.jobs = jobs or os.cpu_count() or 1
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        # The pipe the workers watch (their end, ours): closing ours (or our death) tells them to exit.
        self._pipe: tuple[Connection, Connection] | None = None

    def __enter__(self) -> Fingerprinter[Tag]:
        if self.jobs > 1:
            self._executor, self._pipe = _new_executor(self.jobs)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._pipe is not None:
            for end in self._pipe:
                end.close()

    def run(self, files: Iterable[tuple[Path, Tag]]) -> Iterator[tuple[Path, Tag, Outcome]]:
        """Yield ``(path, tag, fingerprint or failure reason)`` for each of ``files``, in their order.

        ``files`` is consumed lazily: at most ``2 * jobs`` files are in flight.
        """
        if self._executor is None:
            for path, tag in files:
                yield path, tag, fingerprint_job(path, self.params)
            return
        in_flight: deque[tuple[Path, Tag, concurrent.futures.Future[Outcome]]] = deque()
        for path, tag in files:
            in_flight.append((path, tag, self._submit(path)))
            if len(in_flight) >= 2 * self.jobs:
                yield from self._collect(in_flight, until=2 * self.jobs - 1)
        yield from self._collect(in_flight, until=0)

    def _submit(self, path: Path) -> concurrent.futures.Future[Outcome]:
        assert self._executor is not None
        return self._executor.submit(fingerprint_job, path, self.params)

    def _collect(self, in_flight: deque[tuple[Path, Tag, concurrent.futures.Future[Outcome]]], *,
                 until: int) -> Iterator[tuple[Path, Tag, Outcome]]:
        """Yield finished files from the head of ``in_flight`` (in order) until ``until`` remain."""
        while len(in_flight) > until:
            path, tag, future = in_flight.popleft()
            try:
                yield path, tag, _result(path, future)
            except concurrent.futures.process.BrokenProcessPool:
                suspects = [(path, tag)] + [(p, t) for p, t, _ in in_flight]
                in_flight.clear()
                self._replace()
                self._check_workers_start()
                yield from self._retry_alone(suspects)

    def _check_workers_start(self) -> None:
        """Raise if a fresh worker dies without any file: then no file is to blame."""
        assert self._executor is not None
        try:
            self._executor.submit(os.getpid).result()
        except concurrent.futures.process.BrokenProcessPool:
            self._replace()
            raise FpstoreError(_death_at_start_message()) from None

    def _retry_alone(self, suspects: list[tuple[Path, Tag]]) -> Iterator[tuple[Path, Tag, Outcome]]:
        for path, tag in suspects:
            try:
                outcome = _result(path, self._submit(path))
            except concurrent.futures.process.BrokenProcessPool:
                self._replace()
                outcome = (
                    f"{display_path(path)}: the worker process died while decoding it, twice (a crash in a "
                    "native decoder, or killed for lack of memory)"
                )
            yield path, tag, outcome

    def _replace(self) -> None:
        """Swap the broken executor (its surviving workers are told to exit) for a fresh one."""
        assert self._executor is not None and self._pipe is not None
        self._executor.shutdown(wait=False, cancel_futures=True)
        for end in self._pipe:
            end.close()
        self._executor, self._pipe = _new_executor(self.jobs)


def _new_executor(jobs: int) -> tuple[concurrent.futures.ProcessPoolExecutor, tuple[Connection, Connection]]:
    """A pool of ``jobs`` workers, and the pipe they watch: its reading end, given to each, and its writing end."""
    forkserver = processes_started_by("forkserver")
    # Workers fork from a server that has imported the signal stack (numpy, soundfile, soxr) once.
    forkserver.set_forkserver_preload(["fpstore.signal.fingerprint"])
    with _safe_path():
        multiprocessing.forkserver.ensure_running()
    watched, alive = forkserver.Pipe(duplex=False)
    executor = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=forkserver, initializer=_exit_with_parent,
                                                      initargs=(watched,))
    return executor, (watched, alive)


def _exit_with_parent(watched: Connection) -> None:
    """Worker initializer: a thread that ends this process as soon as ``watched`` reaches its end.

    Nothing is ever sent on the pipe: its end comes when the parent closes its writing end or dies.
    """
    def watch() -> None:
        try:
            watched.recv_bytes()
        except EOFError:
            pass
        os._exit(1)

    threading.Thread(target=watch, name="fpstore-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _safe_path() -> Iterator[None]:
    """Set PYTHONSAFEPATH for the processes started in the block (the forkserver), then restore it.

    The forkserver is a ``python -c`` process: without it, the current folder comes first on its
    ``sys.path``, ahead of the installed fpstore.
    """
    before = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = before


def _death_at_start_message() -> str:
    """Why fresh workers die before any file, naming the cause only where it can be known."""
    said = "worker processes die as they start, before any file"
    entry = getattr(sys.modules.get("__main__"), "main", None)
    if getattr(entry, "__module__", None) == "fpstore.cli":
        # fpstore's own command: no user script is re-imported; the workers' error is printed above.
        return f"{said} (their error is printed above); `--jobs 1` fingerprints in this process instead"
    return (f"{said}; a script that calls ingest() with jobs > 1 must do so under "
            "'if __name__ == \"__main__\":' (workers re-import the main module)")


def _result(path: Path, future: concurrent.futures.Future[Outcome]) -> Outcome:
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise
    except Exception as exc:  # a worker-side crash we did not foresee: report it against the file
        return f"{display_path(path)}: {type(exc).__name__}: {exc}"
