"""Throughput and latency of ``fpstore serve`` under N concurrent clients, on a replicated catalogue.

The catalogue is built as ``benchmarks/match.py`` builds one (the real clips of ``--clips`` whose
``tracks.csv`` says ``in_db=1``, ingested, then transposed replicas up to ``--tracks``, server-side), in
a database ``fpstore_serve_bench_<N>`` on ``--server`` (or an embedded server with ``--embedded``);
``--reuse`` keeps one already built. Then ``fpstore --db URL serve --workers W`` is started as a
subprocess on a free port of 127.0.0.1 and driven by ``--clients`` threads, each with its own HTTP
connection, through a bounded list of requests:

- ``audio``: 10 s excerpts as 16-bit WAV uploads to ``POST /v1/match`` (raw body), half of them cut
  from clips in the database at random starts (positives), half from the held-out clips (``in_db=0``,
  negatives: the answer must be "no match");
- ``fingerprint``: the same excerpts fingerprinted once by this script with ``GET /v1/params``'s
  parameters and sent to ``POST /v1/match/fingerprint`` as JSON triples;
- ``compact``: the same postings in the compact binary body (``application/octet-stream``, 12 bytes
  a posting).

For each mode it prints the requests, queries per second (wall clock of the whole run), p50/p95/p99
latency, errors (a status other than 200, or a transport failure), how many positives were named
right and negatives named at all, and the server's resident memory (the serve process and its
workers, summed from /proc) at the start, the end and its peak, sampled every 0.5 s. With
``--embedded`` (a PostgreSQL server of this run's own) it also prints the CPU time per query of the
service and of PostgreSQL together, and the queries per second two idle cores would give at that cost
(2 / CPU s): on a machine shared with other jobs the wall-clock figures measure the load as much as
fpstore, the CPU time much less so. ``--shared-buffers`` starts that embedded server with another
``shared_buffers`` than fpstore's (the catalogue's covering index of 1,000 tracks is 237 MB).

Where one query's CPU goes, part by part: ``benchmarks/serve_profile.py``.

Usage::

    python benchmarks/serve.py --embedded /tmp/serve-bench-pg --clips ../corpus/dev --tracks 1000 \\
        --clients 16 --requests 400 --workers 2 --reuse --keep
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile
from match import admin, build, ensure_index, existing_tracks, run_on_server  # benchmarks/match.py: the catalogue
from sqlalchemy.engine import make_url

from fpstore.signal.analysis import Fingerprint
from fpstore.signal.audio import load_audio
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.params import FingerprintParams, Zone

SR = 22050


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def split_clips(corpus: Path, folder: Path) -> tuple[Path, list[Path], list[Path]]:
    """A folder of symlinks to the in-database clips; the in-database and held-out clip paths."""
    rows = list(csv.DictReader(open(corpus / "tracks.csv")))
    inside = [corpus / r["clip_file"] for r in rows if r["in_db"] == "1"]
    held_out = [corpus / r["clip_file"] for r in rows if r["in_db"] == "0"]
    folder.mkdir(parents=True, exist_ok=True)
    for path in inside:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return folder, inside, held_out


def excerpts(paths: list[Path], n: int, length_s: float, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    decoded = {p.stem: load_audio(p, sample_rate=SR, duration_s=30.0) for p in paths}
    names = sorted(decoded)
    chosen = []
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        y = decoded[name]
        start = int(rng.integers(0, y.size - int(length_s * SR)))
        chosen.append((name, y[start:start + int(length_s * SR)]))
    return chosen


def wav_bytes(y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, y, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def compact_body(fingerprint: Fingerprint, params: FingerprintParams) -> bytes:
    """The postings as ``POST /v1/match/fingerprint``'s compact body: little-endian uint32 (zone index, hash, t_anchor)."""
    zone_index = {zone.name: index for index, zone in enumerate(params.zones)}
    return b"".join(np.stack([np.full(zh.hashes.size, zone_index[name]), zh.hashes, zh.t_anchor_frames], axis=1)
                    .astype("<u4").tobytes() for name, zh in fingerprint.zones.items())


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and of its descendants (uvicorn's worker processes)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        pending += [int(c) for c in children]
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants, reaped children included (user + system, seconds)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return total


class MemoryWatch:
    """Samples the server's RSS every 0.5 s in a thread while a run goes."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self._stop = pid, [rss_bytes(pid)], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append(rss_bytes(self.pid))

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_bytes(self.pid))
        return self.samples


Request = tuple[str, bytes, str]  # path, body, content type


def drive(port: int, requests: list[Request], clients: int,
          progress: Callable[[int], None]) -> tuple[float, list]:
    """Send every request with ``clients`` threads (one kept-alive connection each); wall time and outcomes.

    The standard library's HTTP client, the lightest at hand: the load generator runs on the same cores
    as the service (its CPU time per query is printed). ``progress`` is called with the number of
    requests answered so far after each one.
    """
    local = threading.local()
    done = itertools.count(1)

    def one(request: Request) -> tuple[float, int, dict | None]:
        path, body, content_type = request
        started = time.perf_counter()
        try:
            if not hasattr(local, "connection"):
                local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            local.connection.request("POST", path, body=body, headers={"content-type": content_type})
            response = local.connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            local.__dict__.pop("connection", None)
            return time.perf_counter() - started, 0, None
        elapsed = time.perf_counter() - started
        progress(next(done))
        return elapsed, response.status, json.loads(answer) if response.status == 200 else None

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, requests))
    return time.perf_counter() - started, outcomes


def report(mode: str, clients: int, wall_s: float, outcomes: list, truths: list[str | None], memory: list[int],
           cpu_s: float | None, client_cpu_s: float) -> str:
    latencies = sorted(o[0] for o in outcomes)
    errors = sum(1 for o in outcomes if o[1] != 200)
    named = [(o[2] or {}).get("match") for o in outcomes]
    hits = sum(1 for m, t in zip(named, truths) if t is not None and m and m["file_name"].startswith(t))
    false_alarms = sum(1 for m, t in zip(named, truths) if t is None and m)
    q = lambda p: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]  # noqa: E731
    median = lambda values: f"{1000 * float(np.median(values)):.0f}" if values else "-"  # noqa: E731
    by_class = (median([o[0] for o, t in zip(outcomes, truths) if t is not None]),
                median([o[0] for o, t in zip(outcomes, truths) if t is None]))
    mib = lambda b: b / 2**20  # noqa: E731
    return (f"| {mode} | {clients} | {len(outcomes)} | {len(outcomes) / wall_s:.1f} | {q(0.5):.0f} | {q(0.95):.0f} | "
            f"{q(0.99):.0f} | {by_class[0]} / {by_class[1]} | {errors} | {hits}/{sum(t is not None for t in truths)} | "
            f"{false_alarms}/{sum(t is None for t in truths)} | {mib(memory[0]):.0f} / {mib(memory[-1]):.0f} / "
            f"{mib(max(memory)):.0f} | " + ("- | -" if cpu_s is None else
                                            f"{cpu_s / len(outcomes):.3f} | {2 * len(outcomes) / cpu_s:.1f}")
            + f" | {client_cpu_s / len(outcomes):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="URL of a maintenance database (role with CREATEDB)")
    parser.add_argument("--embedded", type=Path, help="instead of --server: an embedded PostgreSQL with its data here")
    parser.add_argument("--clips", type=Path, required=True, help="corpus folder with tracks.csv and clips30/")
    parser.add_argument("--tracks", type=int, default=1000, help="catalogue size")
    parser.add_argument("--store-zone", default="Fsmall_Tlong", help="zone stored (the default matcher's), or 'all'")
    parser.add_argument("--clients", default="16", help="concurrent clients, comma-separated runs")
    parser.add_argument("--requests", type=int, default=400, help="requests per mode and client count")
    parser.add_argument("--modes", default="audio,fingerprint,compact")
    parser.add_argument("--workers", type=int, default=2, help="fpstore serve --workers")
    parser.add_argument("--length", type=float, default=10.0, help="seconds per excerpt")
    parser.add_argument("--distinct", type=int, default=1000,
                        help="distinct excerpts at most; more requests go round them again (a long memory run)")
    parser.add_argument("--index", choices=("covering", "plain"), default="covering",
                        help="the catalogue's lookup index (fpstore db lookup-index; covering: index-only lookups)")
    parser.add_argument("--reuse", action="store_true", help="reuse a catalogue of the right size")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--negative-share", type=float, default=0.5, help="share of the requests that are negatives")
    parser.add_argument("--options", default="", help="query string of the match options, e.g. 'plain=true&min_votes=15'")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shared-buffers", help="with --embedded: start its server with this shared_buffers "
                        "(e.g. 512MB) instead of fpstore's setting")
    args = parser.parse_args()
    if (args.server is None) == (args.embedded is None):
        parser.error("give one of --server and --embedded")
    if args.shared_buffers:
        if args.embedded is None:
            parser.error("--shared-buffers is for --embedded")
        from fpstore.db.embedded import TUNING

        TUNING["shared_buffers"] = args.shared_buffers
    run_on_server(args, run)


def run(args: argparse.Namespace) -> None:
    name = f"fpstore_serve_bench_{args.tracks}"
    with tempfile.TemporaryDirectory(prefix="fpstore-serve-bench-") as scratch:
        folder, inside, held_out = split_clips(args.clips, Path(scratch) / "in_db")
        if args.reuse and existing_tracks(args.server, name) == args.tracks:
            url = make_url(args.server).set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False)
            print(f"reusing {name}", flush=True)
        else:
            url = build(args.server, name, folder, args.tracks, args.store_zone)
        ensure_index(url, args.index)
        try:
            serve_and_drive(args, url, inside, held_out)
        finally:
            if not args.keep:
                with admin(args.server) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve_and_drive(args: argparse.Namespace, url: str, inside: list[Path], held_out: list[Path]) -> None:
    rng = np.random.default_rng(args.seed)
    n_distinct = min(args.requests, args.distinct)
    n_negatives = round(n_distinct * args.negative_share) if held_out else 0
    positives = excerpts(inside, n_distinct - n_negatives, args.length, rng)
    negatives = excerpts(held_out, n_negatives, args.length, rng)
    queries = [(n, y) for n, y in positives] + [(None, y) for _, y in negatives]
    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    rounds = range(args.requests)
    truths = [queries[i % n_distinct][0] for i in rounds]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # With --embedded the PostgreSQL server is this run's alone: its CPU time is the queries'.
    pid_file = args.embedded / "pgdata" / "postmaster.pid" if args.embedded else None
    postmaster = int(pid_file.read_text().split()[0]) if pid_file and pid_file.exists() else None
    env = {k: v for k, v in os.environ.items() if k not in ("FPSTORE_SERVE_TOKEN",)}
    server = subprocess.Popen([sys.executable, "-m", "fpstore", "--db", url, "serve", "--port", str(port),
                               "--workers", str(args.workers)], env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("fpstore serve did not start")
            time.sleep(0.5)
        described = httpx.get(f"{base}/v1/params").json()
        profile = dict(described["params"])
        profile["zones"] = tuple(Zone(**z) for z in profile["zones"])
        params = FingerprintParams(duration_s=None, **profile)
        bodies = {"audio": [wav_bytes(y) for _, y in queries]}
        if "fingerprint" in args.modes or "compact" in args.modes:
            fingerprints = [fingerprint_signal(y, params) for _, y in queries]
            bodies["fingerprint"] = [json.dumps({"params_id": described["params_id"], "hashes": [
                [zone, h, t] for zone, zh in fingerprint.zones.items()
                for h, t in zip(zh.hashes.tolist(), zh.t_anchor_frames.tolist())]}).encode() for fingerprint in fingerprints]
            bodies["compact"] = [compact_body(fingerprint, params) for fingerprint in fingerprints]
        print(f"catalogue {make_url(url).database}, {args.tracks} tracks, {args.index} lookup index; "
              f"{len(positives)} positives and {len(negatives)} negatives of {args.length:g} s"
              f"{' (sent round again)' if args.requests > n_distinct else ''}; fpstore serve --workers {args.workers}; "
              f"match options {args.options or '(defaults)'}"
              f"{f'; shared_buffers {args.shared_buffers}' if args.shared_buffers else ''}; "
              f"load average before {os.getloadavg()[0]:.1f}", flush=True)
        print("| mode | clients | requests | queries/s | p50 ms | p95 ms | p99 ms | p50 ms positives / negatives | errors | "
              "positives named right | negatives named | server RSS MiB start / end / peak | CPU s per query (serve + "
              "PostgreSQL) | q/s 2 idle cores would give (2 / CPU s) | CPU s per query of this load generator |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        traces = []
        for clients in [int(c) for c in args.clients.split(",")]:
            for mode in args.modes.split(","):
                query = "&".join(([f"params_id={described['params_id']}"] if mode == "compact" else [])
                                 + ([args.options] if args.options else []))
                path = ("/v1/match" if mode == "audio" else "/v1/match/fingerprint") + (f"?{query}" if query else "")
                content_type = {"audio": "audio/wav", "fingerprint": "application/json"}.get(mode, "application/octet-stream")
                requests = [(path, bodies[mode][i % n_distinct], content_type) for i in rounds]
                tenth = max(len(requests) // 10, 1)
                trace: list[int] = []
                watch = MemoryWatch(server.pid)
                cpu_before = cpu_seconds(server.pid) + (cpu_seconds(postmaster) if postmaster else 0.0)
                client_before = time.process_time()
                wall_s, outcomes = drive(port, requests, clients, lambda done, trace=trace, tenth=tenth:
                                         trace.append(rss_bytes(server.pid)) if done % tenth == 0 else None)
                client_cpu_s = time.process_time() - client_before
                cpu_s = cpu_seconds(server.pid) + (cpu_seconds(postmaster) if postmaster else 0.0) - cpu_before
                print(report(mode, clients, wall_s, outcomes, truths, watch.stop(), cpu_s if postmaster else None,
                             client_cpu_s), flush=True)
                traces.append(f"{mode}, {clients} clients: server RSS MiB after each tenth of the requests: "
                              + ", ".join(f"{b / 2**20:.0f}" for b in trace))
        print(f"load average after {os.getloadavg()[0]:.1f}")
        print("\n".join(traces))
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
