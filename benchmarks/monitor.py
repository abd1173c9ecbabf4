"""Broadcast monitoring on the dev streams: airtime named right, segments found, false airtime, start error, speed.

Runs what a user runs. The whole in-database tracks of the monitor corpus (``<corpus>/monitor/db/``, built by
``../shared/corpus/make_monitor_streams.py``) are ingested whole (``fpstore ingest --duration full``; files
already stored are skipped, so a second run reuses the database), then ``fpstore monitor --json`` runs on
each stream, one at a time, its output written to ``OUT/<stream>.json`` and its wall time to
``OUT/<stream>.time``; ``../shared/corpus/score_monitor.py`` scores them against ``truth.csv`` and its table
is printed (per stream and overall: airtime recall, false airtime, segments found, held-out alarms, median
start error, stream seconds per wall second; the last line gives the start error's p90).

Usage (from the project root; the database is ``$FPSTORE_HOME``'s embedded server unless ``--db``, kept up
for the whole run)::

    FPSTORE_HOME=/tmp/monitor-home python benchmarks/monitor.py --corpus ../corpus/devlarge --out /tmp/monitor_out
    python benchmarks/monitor.py --db postgresql://... --out /tmp/monitor_out -- --window 8 --hop 4

Arguments after ``--`` go to ``fpstore monitor`` as they are.

Wall time depends on what else runs on the machine; the CPU time does much less. After the table, a
line gives the CPU seconds the monitors used (their processes) and, for the embedded server, the CPU
seconds its processes used meanwhile, and the stream seconds per CPU second of both together: a figure
to compare runs taken under different loads (``--db`` pointing at a server of other users: the
server's share is not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import resource
import subprocess
import sys
import time

import soundfile

#: Stream files the monitor corpus holds (any of these extensions).
STREAM_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")


def fpstore(db: str | None, *args: str) -> list[str]:
    """The command line of ``fpstore [--db DB] ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fpstore", *(["--db", db] if db else []), *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=pathlib.Path, default=pathlib.Path("../corpus/devlarge"),
                        help="folder with monitor/ [../corpus/devlarge]")
    parser.add_argument("--db", help="database URL (default: FPSTORE_HOME's embedded server)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for <stream>.json and .time")
    parser.add_argument("--jobs", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--streams", nargs="*", help="only these streams (file stems, e.g. s1_clean)")
    parser.add_argument("--scorer", type=pathlib.Path,
                        help="score_monitor.py [shared/corpus/ beside the corpus folder's parent]")
    args, monitor_args = parser.parse_known_args()
    monitor_args = [a for a in monitor_args if a != "--"]
    folder = args.corpus / "monitor"
    if not (folder / "truth.csv").exists():
        sys.exit(f"{folder / 'truth.csv'} is missing: run ../shared/corpus/make_monitor_streams.py first")
    subprocess.run(fpstore(args.db, "-q", "ingest", str(folder / "db"), "--duration", "full", "--jobs",
                           str(args.jobs), "--allow-failures"), check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    streams = sorted(p for p in folder.iterdir() if p.suffix in STREAM_SUFFIXES)
    if args.streams:
        streams = [p for p in streams if p.stem in args.streams]
    with contextlib.ExitStack() as held:
        if not args.db:  # kept up for the whole run: the monitors attach to it, and its CPU can be read
            from fpstore.db.embedded import EmbeddedServer

            held.enter_context(EmbeddedServer())
        server = None if args.db else embedded_server_pid()
        client_cpu = server_cpu = 0.0
        for stream in streams:
            began, children, served = time.perf_counter(), children_cpu(), process_tree_cpu(server)
            with open(args.out / f"{stream.stem}.json", "w") as output:
                subprocess.run(fpstore(args.db, "monitor", str(stream), "--json", *monitor_args), stdout=output,
                               check=True)
            wall = time.perf_counter() - began
            client_cpu += children_cpu() - children
            server_cpu += process_tree_cpu(server) - served
            (args.out / f"{stream.stem}.time").write_text(f"{wall:.3f}\n")
            print(f"{stream.name}: {wall:.1f} s", file=sys.stderr, flush=True)
    print(f"fpstore monitor {' '.join(monitor_args) or '(default settings)'}; {len(streams)} streams; "
          f"machine: {os.cpu_count()} cores")
    scorer = args.scorer or args.corpus.resolve().parent.parent / "shared" / "corpus" / "score_monitor.py"
    subprocess.run([sys.executable, str(scorer), str(folder / "truth.csv"), str(args.out)], check=True)
    heard = sum(soundfile.info(str(stream)).duration for stream in streams)
    used = client_cpu + server_cpu
    print(f"CPU: monitors {client_cpu:.1f} s, embedded server {server_cpu:.1f} s"
          f"{'' if server else ' (not counted: --db)'}; {heard:.0f} s of streams, {heard / used:.1f} s per CPU second;"
          f" load average {os.getloadavg()[0]:.1f}")


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def embedded_server_pid() -> int | None:
    """The postmaster of ``$FPSTORE_HOME``'s embedded server, if it runs."""
    from fpstore.db.embedded import default_data_dir

    pid_file = default_data_dir() / "pgdata" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def process_tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its children, alive or ended (PostgreSQL: the postmaster and its backends), Linux.

    An ended child's time is in its parent's ``cutime`` and ``cstime`` once the parent has waited for it (the
    postmaster does).
    """
    if pid is None:
        return 0.0
    ticks = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(stat.parent.name) == pid:
            ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
