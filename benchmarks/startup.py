"""Start-up cost of the ``fpstore`` command: ``--help``, ``db url`` and ``match`` of one clip, whole processes.

Each command runs ``--runs`` times after one warm-up run; the figures are wall-clock and CPU (user +
system) seconds of the whole process, min / median / max, as ``hyperfine`` would report them. Measure a
non-editable install (``pip install .`` into its own venv): an editable one adds its import hook.

    python benchmarks/startup.py --fpstore /tmp/venv/bin/fpstore --query clip.wav [--runs 10]

The database is the one in force for that ``fpstore`` (set ``FPSTORE_HOME`` for a private embedded
server, or ``FPSTORE_DATABASE_URL``); it must hold the catalogue the clip is matched against. With the
embedded server (the default), the script keeps it up with ``fpstore db serve`` while it measures, as a
user does between commands, so that ``match`` is timed without the server's own start.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system, children) seconds of one run of ``command``; its output is discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(label: str, command: list[str], runs: int) -> str:
    """One line of figures for ``command``: wall and CPU seconds, min / median / max over ``runs`` after a warm-up."""
    timed(command)
    walls, cpus = zip(*(timed(command) for _ in range(runs)))

    def spread(values: tuple[float, ...]) -> str:
        return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"

    return f"{label:<14} wall {spread(walls)} s   cpu {spread(cpus)} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fpstore", default="fpstore", help="The fpstore command to time [fpstore on PATH].")
    parser.add_argument("--query", required=True, help="An audio clip for `fpstore match`.")
    parser.add_argument("--runs", type=int, default=10, help="Counted runs per command [10].")
    args = parser.parse_args()
    server = None
    if not os.environ.get("FPSTORE_DATABASE_URL"):
        server = subprocess.Popen([args.fpstore, "db", "serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert server.stdout is not None
        server.stdout.readline()  # its URL: the server is up
    try:
        print(f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{args.runs} runs after 1 warm-up; min / median / max")
        print(f"fpstore = {args.fpstore}; CLIP = {args.query}")
        for label, command in (("--help", ["--help"]), ("db url", ["db", "url"]), ("match CLIP", ["match", args.query])):
            print(measure(label, [args.fpstore, *command], args.runs), flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
