"""Where a monitored stream's work waits on itself: CPU of the monitor's two threads and of each one's server backend.

``StreamMonitor(read_ahead=True)`` (what ``fpstore monitor FILE`` runs) decides a window in the main thread while
its analysis thread fingerprints the next window and looks up the postings it will most likely need, each
thread on a connection of its own. This script monitors the dev streams in one process (no start-up) and
prints, over all of them:

- the main thread's CPU, and the CPU of the server backend serving its connection (the main thread waits for
  each of its statements: their sum is one chain of work that cannot overlap itself);
- the same for the analysis thread (its CPU is counted while it runs the read-ahead);
- the wall time and the load average.

On an idle 2-core machine the wall time is at least the longer chain, and at least half of all four; on a
machine shared with other jobs only the CPU figures mean much. Backend CPU is read from ``/proc`` (Linux; the
server on this machine), before and after each statement.

Usage (from the project root; the database is ``--db`` or ``$FPSTORE_HOME``'s embedded server, which must be up,
e.g. ``fpstore db serve``, and hold the monitor corpus's tracks: run ``benchmarks/monitor.py`` once)::

    FPSTORE_HOME=/tmp/monitor-home python benchmarks/monitor_threads.py --corpus ../corpus/devlarge
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from monitor import STREAM_SUFFIXES

from fpstore.db.catalogue import open_store
from fpstore.monitor import StreamMonitor, audio_blocks


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=pathlib.Path, default=pathlib.Path("../corpus/devlarge"))
    parser.add_argument("--db", help="database URL (default: FPSTORE_HOME's embedded server)")
    args = parser.parse_args()
    streams = sorted(p for p in (args.corpus / "monitor").iterdir() if p.suffix in STREAM_SUFFIXES)
    served: dict[str, float] = {"main": 0.0, "analysis": 0.0}  # backend CPU per thread
    analysing = [0.0]  # the analysis thread's CPU

    with open_store(args.db) as store:
        raw = store.raw

        @contextlib.contextmanager
        def counted_raw() -> Iterator[Any]:
            thread = "main" if threading.current_thread() is threading.main_thread() else "analysis"
            with raw() as conn:
                before = backend_cpu(conn.info.backend_pid)
                yield conn
                served[thread] += backend_cpu(conn.info.backend_pid) - before

        store.raw = counted_raw  # type: ignore[method-assign]
        analyse = StreamMonitor._analyse

        def counted_analyse(self: StreamMonitor, *args: Any) -> None:
            began = time.thread_time()
            analyse(self, *args)
            analysing[0] += time.thread_time() - began

        StreamMonitor._analyse = counted_analyse  # type: ignore[method-assign]
        rate = store.params(duration_s=None).sample_rate
        began_wall, began_main = time.perf_counter(), time.thread_time()
        for stream in streams:
            for _ in StreamMonitor(store, read_ahead=True).run(audio_blocks(stream, rate)):
                pass
        wall, main_cpu = time.perf_counter() - began_wall, time.thread_time() - began_main
    chains = main_cpu + served["main"], analysing[0] + served["analysis"]
    print(f"{len(streams)} streams in one process; machine: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}\n"
          f"main thread {main_cpu:.1f} s + its server {served['main']:.1f} s = {chains[0]:.1f} s\n"
          f"analysis thread {analysing[0]:.1f} s + its server {served['analysis']:.1f} s = {chains[1]:.1f} s\n"
          f"all {sum(chains):.1f} s of CPU; wall {wall:.1f} s")


if __name__ == "__main__":
    main()
