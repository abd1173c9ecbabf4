"""A shard stopped at a random moment during cluster ingests: are the reports true and do reruns converge?

The script starts its own servers in ``--workdir`` (the router from Debian's PostgreSQL with PL/Proxy,
``postgresql-15-plproxy``; four shard servers and the single database's server from fpstore's embedded
wheel), writes ``--tracks`` synthetic tunes and a re-encoded copy of every fourth one (another file, the
same recording: a duplicate the single database skips), and ingests them once into the single
database: the reference, and once into a 4-shard cluster undisturbed, which times each ingest. Then,
into a fresh 4-shard cluster each round, until ``--kills`` ingests had a shard killed while they ran
(at most ``--max-rounds`` rounds):

1. the originals, then the copies, each ingest with a random shard stopped immediately (``SIGQUIT``
   to its postmaster, as ``pg_ctl stop -m immediate``) at a random moment within the undisturbed
   ingest's time, and restarted when that ingest returns;
2. the same ingest again (``--reruns`` at most) until it fails no file.

Checked after every ingest, with every shard up, and counted:

- ``reported failed, stored``: a file reported failed whose track is stored;
- ``reported added, not stored``: a file reported added whose track is not stored;
- ``partial tracks``: a track whose postings are not all stored (``n_postings`` against ``hashes``), or
  a posting without its track;
- ``duplicates kept``: a stored copy that the single database skipped;
- ``not converged``: a round whose catalogue, after its reruns, differs from the single database's
  (file names, and postings per track).

Usage::

    python benchmarks/cluster_faults.py --kills 20 --tracks 12
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile
from cluster import new_database, plproxy_bindir

from fpstore.db.catalogue import open_store
from fpstore.db.cluster import init_cluster, open_cluster
from fpstore.db.embedded import EmbeddedServer
from fpstore.errors import EmbeddedServerError, FpstoreError
from fpstore.ingest import ingest
from fpstore.signal.synth import synth_tune

N_SHARDS = 4
RESTART_ATTEMPTS = 5
SR = 22050


class Shards:
    """One embedded server per shard, each of which can be killed (immediate shutdown) and started again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers = [EmbeddedServer(workdir / f"s{k}").__enter__() for k in range(N_SHARDS)]
        self.urls = [server.url for server in self.servers]

    def kill(self, k: int) -> None:
        pid = int((self.workdir / f"s{k}" / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            time.sleep(0.01)

    def restart(self, k: int) -> None:
        """Start shard ``k`` again; its crash recovery may outlast the embedded server's wait on a busy machine."""
        try:
            self.servers[k].__exit__(None, None, None)
        except FpstoreError:  # it was killed: nothing left to stop
            pass
        for attempt in range(RESTART_ATTEMPTS):
            try:
                self.servers[k] = EmbeddedServer(self.workdir / f"s{k}").__enter__()
                return
            except EmbeddedServerError:
                if attempt == RESTART_ATTEMPTS - 1:
                    raise

    def close(self) -> None:
        for server in self.servers:
            server.__exit__(None, None, None)


def write_corpus(folder: Path, n_tracks: int) -> tuple[Path, Path]:
    """``originals/`` (synthetic tunes) and ``copies/`` (every fourth one re-encoded at 44.1 kHz as FLAC)."""
    originals, copies = folder / "originals", folder / "copies"
    originals.mkdir(parents=True)
    copies.mkdir()
    for seed in range(n_tracks):
        y = synth_tune(500 + seed, duration_s=8.0)
        soundfile.write(originals / f"tune_{seed:03d}.wav", y, SR, subtype="PCM_16")
        if seed % 4 == 0:
            t_out = np.arange(int(len(y) * 44100 / SR)) / 44100
            soundfile.write(copies / f"copy_{seed:03d}.flac", np.interp(t_out, np.arange(len(y)) / SR, y), 44100,
                            subtype="PCM_16")
    return originals, copies


def catalogue(url: str) -> dict[str, int]:
    """Postings of each stored track, by file name."""
    with open_store(url) as store:
        return {str(t["file_name"]): int(t["n_postings"]) for t in store.tracks.search().tracks}


def partial_tracks(router_url: str) -> int:
    """Tracks whose postings are not all stored, plus postings without their track, over every shard."""
    found = 0
    with open_cluster(router_url) as cluster:
        for shard in cluster.shards:
            with shard.raw() as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM tracks t WHERE t.n_postings <>"
                    " (SELECT count(*) FROM hashes h WHERE h.track_id = t.id)),"
                    " (SELECT count(*) FROM hashes h WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = h.track_id))"
                ).fetchone()
                assert row is not None
                found += int(row[0]) + int(row[1])
    return found


def run_ingest(router_url: str, folder: Path) -> dict[str, set[str]]:
    """Ingest ``folder`` into the cluster as ``fpstore ingest --batch-postings 1`` would: file names by status."""
    reported: dict[str, set[str]] = {"added": set(), "skipped": set(), "failed": set()}
    with open_store(router_url) as store:
        ingest(store, folder, jobs=1, batch_postings=1, bulk=False,
               on_file=lambda event: reported[event.status].add(Path(event.path).name))
    return reported


def faulty_ingest(router_url: str, folder: Path, shards: Shards, rng: random.Random,
                  max_delay: float) -> tuple[dict[str, set[str]], float | None]:
    """Ingest ``folder`` while a random shard is killed after a random delay (restarted afterwards); when it was."""
    k, delay = rng.randrange(N_SHARDS), rng.uniform(0, max_delay)
    done = threading.Event()
    killed: list[float] = []
    started = time.perf_counter()

    def killer() -> None:
        if not done.wait(delay):
            shards.kill(k)
            killed.append(time.perf_counter() - started)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        reported = run_ingest(router_url, folder)
    finally:
        done.set()
        thread.join()
        if killed:
            shards.restart(k)
    return reported, killed[0] if killed else None


TALLIES = ["ingests", "shard killed during the ingest", "files reported failed", "reruns",
           "reported failed, stored", "reported added, not stored", "stored, not reported added", "partial tracks",
           "duplicates kept", "not converged"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="ingests with a shard killed while they ran")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--tracks", type=int, default=12, help="synthetic tunes (and a copy of every fourth)")
    parser.add_argument("--reruns", type=int, default=3, help="most reruns of an ingest until it fails no file")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--workdir", type=Path, help="servers' data folders (default: a temporary folder)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fpstore-faults-")))
        workdir.chmod(0o755)
        originals, copies = write_corpus(workdir / "music", args.tracks)
        router_server = stack.enter_context(EmbeddedServer(workdir / "router", bindir=plproxy_bindir()))
        single_url = new_database(stack.enter_context(EmbeddedServer(workdir / "one")).url, "faults_one")
        shards = Shards(workdir)
        stack.callback(shards.close)
        with open_store(single_url) as single:
            for folder in (originals, copies):
                ingest(single, folder, jobs=1, batch_postings=1, bulk=False)
        reference = catalogue(single_url)
        calibration = new_database(router_server.url, "faults_calibration")
        init_cluster(calibration, [new_database(url, "faults_calibration") for url in shards.urls])
        took = {}
        for folder in (originals, copies):
            started = time.perf_counter()
            run_ingest(calibration, folder)
            took[folder] = time.perf_counter() - started
        print(f"reference: {len(reference)} tracks on the single database ({args.tracks} tunes, "
              f"{len(list(copies.iterdir()))} copies); undisturbed cluster ingests took "
              + " and ".join(f"{seconds:.1f} s" for seconds in took.values()))
        tally = dict.fromkeys(TALLIES, 0)
        for round_index in range(args.max_rounds):
            if tally["shard killed during the ingest"] >= args.kills:
                break
            name = f"faults_{round_index}"
            router_url = new_database(router_server.url, name)
            init_cluster(router_url, [new_database(url, name) for url in shards.urls])
            said = []
            for folder in (originals, copies):
                before = set(catalogue(router_url))
                reported, killed_at = faulty_ingest(router_url, folder, shards, rng, took[folder])
                tally["ingests"] += 1
                tally["shard killed during the ingest"] += killed_at is not None
                said.append(f"{folder.name}: " + ("no kill" if killed_at is None else f"kill at {killed_at:.2f} s")
                            + f", {len(reported['added'])} added, {len(reported['failed'])} failed")
                for rerun in range(args.reruns + 1):
                    stored = set(catalogue(router_url))
                    tally["files reported failed"] += len(reported["failed"])
                    tally["reported failed, stored"] += len(reported["failed"] & (stored - before))
                    tally["reported added, not stored"] += len(reported["added"] - stored)
                    tally["stored, not reported added"] += len(stored - before - reported["added"])
                    tally["partial tracks"] += partial_tracks(router_url)
                    tally["duplicates kept"] += len(stored - set(reference))
                    if not reported["failed"] or rerun == args.reruns:
                        break
                    before, reported = stored, run_ingest(router_url, folder)
                    tally["reruns"] += 1
            converged = catalogue(router_url) == reference
            tally["not converged"] += not converged
            print(f"round {round_index + 1:>2}: " + "; ".join(said) + ("" if converged else "; NOT CONVERGED")
                  + f" [so far: {tally['shard killed during the ingest']} kills, "
                  + ", ".join(f"{what} {tally[what]}" for what in TALLIES[4:]) + "]", flush=True)
        print()
        print("| what | count |")
        print("|---|---:|")
        for what, count in tally.items():
            print(f"| {what} | {count} |")


if __name__ == "__main__":
    main()
