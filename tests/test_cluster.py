"""A catalogue on several servers: a router (Debian PostgreSQL + PL/Proxy) and four shards on real servers.

The servers are started here from local binaries: the router from the Debian PostgreSQL that has
PL/Proxy (``postgresql-15-plproxy``, which ``.ci/run`` installs), each shard from fpstore's embedded
wheel, one server per shard so that a test can stop one. Without PL/Proxy these tests are skipped on a
developer's machine and fail in CI.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile
from click.testing import CliRunner
from helpers import wait_until, write_resampled_copy, write_tunes
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.cli import cli
from fpstore.db.catalogue import open_store
from fpstore.db.cluster import ClusterStore, init_cluster, is_router, open_cluster, opened, shard_of_digest
from fpstore.db.embedded import EmbeddedServer
from fpstore.db.store import Store
from fpstore.errors import NotFound, ParameterError, ShardDown
from fpstore.ingest import ingest
from fpstore.matching.evidence import DecisionRule, Null
from fpstore.matching.matcher import match_signal
from fpstore.pickle_io import POSTING_T_BITS, POSTING_T_MASK, export_seed_pickle, read_seed_pickle
from fpstore.report import build_report
from fpstore.runtime.dask_workers import WriteJob, fingerprint_and_write
from fpstore.runtime.files import file_sha256
from fpstore.signal.fingerprint import fingerprint_signal
from fpstore.signal.synth import synth_tune

pytestmark = pytest.mark.postgres

N_SHARDS = 4
SEEDS = list(range(31, 43))
HOP, SR = 1024, 22050


def _plproxy_bindir() -> Path | None:
    """The bin folder of a Debian PostgreSQL whose extension folder holds PL/Proxy."""
    for control in sorted(glob.glob("/usr/share/postgresql/*/extension/plproxy.control")):
        bindir = Path("/usr/lib/postgresql") / Path(control).parents[1].name / "bin"
        if (bindir / "postgres").is_file():
            return bindir
    return None


class Servers:
    """The router's server and one server per shard, each in its own data folder."""

    def __init__(self, folder: Path, bindir: Path) -> None:
        self.folder, self.bindir = folder, bindir
        self.router = EmbeddedServer(folder / "router", bindir=bindir).__enter__()
        self.shards: list[EmbeddedServer | None] = [None] * N_SHARDS
        for k in range(N_SHARDS):
            self.start_shard(k)

    def start_shard(self, k: int) -> None:
        if self.shards[k] is None:
            self.shards[k] = EmbeddedServer(self.folder / f"s{k}").__enter__()

    def stop_shard(self, k: int) -> None:
        server, self.shards[k] = self.shards[k], None
        if server is not None:
            server.__exit__(None, None, None)

    def shard_url(self, k: int) -> str:
        return _url_in(self.folder / f"s{k}" / "run")

    def close(self) -> None:
        for k in range(N_SHARDS):
            self.stop_shard(k)
        self.router.__exit__(None, None, None)


def _url_in(socket_dir: Path) -> str:
    return f"postgresql+psycopg://fpstore@/fpstore?host={socket_dir}&port=5432"


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    bindir = _plproxy_bindir()
    if bindir is None:
        message = "PL/Proxy is not installed (apt-get install postgresql-15-plproxy)"
        if os.environ.get("CI"):
            pytest.fail(message + ": the cluster tests must run in CI")
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="fpstore-test-cluster-") as folder:
        os.chmod(folder, 0o755)  # the servers' own user (when we are root) must reach their folders
        started = Servers(Path(folder), bindir)
        try:
            yield started
        finally:
            started.close()


def _new_database(server_url: str) -> str:
    name = f"fpstore_c_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def cluster_url(servers: Servers) -> str:
    """A new cluster: a fresh router database and a fresh database on every shard's server."""
    for k in range(N_SHARDS):
        servers.start_shard(k)
    router = _new_database(_url_in(servers.folder / "router" / "run"))
    init_cluster(router, [_new_database(servers.shard_url(k)) for k in range(N_SHARDS)])
    return router


@pytest.fixture
def tunes(tmp_path: Path) -> Path:
    write_tunes(tmp_path / "music", SEEDS)
    return tmp_path / "music"


def _excerpt(seed: int, start_frames: int, seconds: float) -> np.ndarray:
    y = synth_tune(seed, duration_s=8.0)
    return y[start_frames * HOP:start_frames * HOP + int(seconds * SR)].astype(np.float32)


def _pairs_by_name(store: Store) -> dict[str, dict[str, list[tuple[int, int]]]]:
    listing = store.tracks.search()
    return {t["file_name"]: {zone: sorted(zip(h.tolist(), ts.tolist()))
                             for zone, (h, ts) in store.tracks.postings(int(t["id"])).items()}
            for t in listing.tracks}


def _answers(store: Store, method: str, null: Null = "tracks") -> list[list[tuple[str, int, int, float]]]:
    queries = [_excerpt(33, 40, 3.0), _excerpt(38, 5, 4.0), synth_tune(99, duration_s=3.0)]
    rule = DecisionRule(null=null)
    results = [match_signal(store, y, method=method, zone="all", top_k=5, rule=rule) for y in queries]
    # Ties are ranked by track id, and the ids differ between the two catalogues: rank them by name, and
    # leave out the tie at the cut, whose members depend on the ids too.
    return [sorted((c.file_name, c.votes, c.offset_frames, c.score) for c in r.candidates
                   if c.votes > r.candidates[-1].votes or len(r.candidates) < 5) for r in results]


def test_a_cluster_gives_the_single_databases_answers(cluster_url: str, db_url: str, tunes: Path,
                                                      tmp_path: Path) -> None:
    with open_store(cluster_url) as cluster, open_store(db_url) as single:
        assert isinstance(cluster, ClusterStore) and not isinstance(single, ClusterStore)
        summary = ingest(cluster, tunes, jobs=1)
        ingest(single, tunes, jobs=1)
        assert summary.tracks_added == len(SEEDS) and summary.tracks_failed == 0
        assert len(summary.shard_run_ids) == N_SHARDS

        # Each track lives on the shard its digest picks, under an id that names that shard.
        for k, shard in enumerate(cluster.shards):
            for track in shard.tracks.search().tracks:
                assert int(track["id"]) % N_SHARDS == k
                assert shard_of_digest(file_sha256(Path(track["path"])), N_SHARDS) == k
        assert sum(1 for shard in cluster.shards if shard.tracks.count()) > 1

        assert _pairs_by_name(cluster) == _pairs_by_name(single)
        ours, theirs = build_report(cluster), build_report(single)
        keys = ("zone", "total_hashes", "num_tracks", "unique_hashes", "avg_hashes_per_track", "postings_per_hash")
        assert [{k: z[k] for k in keys} for z in ours.zones] == [{k: z[k] for k in keys} for z in theirs.zones]

        for method in ("python", "sql"):
            for null in ("tracks", "poisson"):
                assert _answers(cluster, method, null) == _answers(single, method, null), (method, null)
        for null in ("tracks", "poisson"):
            assert _answers(cluster, "python", null) == _answers(cluster, "sql", null), null

        export_seed_pickle(cluster, tmp_path / "cluster.pkl")
        export_seed_pickle(single, tmp_path / "single.pkl")

        # Every id is checked on its shard before anything is removed, a name read before or not.
        ids = [int(t["id"]) for t in cluster.tracks.search().tracks]
        on_0, on_1 = (next(i for i in ids if i % N_SHARDS == k) for k in (0, 1))
        assert len(cluster.tracks.names([on_0, on_1])) == 2
        cluster.tracks.remove([on_0])
        with pytest.raises(NotFound, match=f"no track with id {on_0}: nothing removed"):
            cluster.tracks.remove([on_0, on_1])
        assert cluster.tracks.count() == len(SEEDS) - 1
    exported = [read_seed_pickle(tmp_path / name)[0] for name in ("cluster.pkl", "single.pkl")]
    assert _pickle_by_name(exported[0]) == _pickle_by_name(exported[1])


def _pickle_by_name(db: dict) -> dict[str, dict[int, list[tuple[str, int]]]]:
    """The pickle's index with each posting's track number replaced by the track's file name."""
    names = db["tracks"]
    return {zone: {h: sorted((names[p >> POSTING_T_BITS], p & POSTING_T_MASK) for p in postings)
                   for h, postings in index.items()} for zone, index in db["index"].items()}


def test_the_sql_functions_on_the_router_answer_as_on_one_database(cluster_url: str, db_url: str,
                                                                   tunes: Path) -> None:
    with open_store(cluster_url) as cluster, open_store(db_url) as single:
        ingest(cluster, tunes, jobs=1)
        ingest(single, tunes, jobs=1)
        fp = fingerprint_signal(_excerpt(35, 20, 4.0), single.params())
        zone = fp.zones["Fsmall_Tlong"]
        args = (zone.hashes.astype(np.int64).tolist(), zone.t_anchor_frames.tolist())
        answers = []
        for url in (cluster_url, db_url):
            with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                                 prepare_threshold=0) as conn:
                # Prepared from the first execution on: the vote must keep its per-call plan.
                rows = [conn.execute(
                    "SELECT t.file_name, m.offset_frames, m.votes, round(m.score::numeric, 6) FROM"
                    " fpstore_match('Fsmall_Tlong', %s, %s, 3) m JOIN (SELECT * FROM fpstore_tracks("
                    "(SELECT array_agg(track_id) FROM fpstore_match('Fsmall_Tlong', %s, %s, 3)))) t ON t.id = m.track_id"
                    " ORDER BY m.votes DESC, t.file_name", (*args, *args)).fetchall() for _ in range(7)]
                assert all(r == rows[0] for r in rows)
                n_postings = conn.execute(
                    "SELECT count(*) FROM fpstore_postings(2::smallint,"
                    " (SELECT array_agg(fpstore_hash_key(h)) FROM unnest(%s::bigint[]) AS h))", (args[0],)).fetchone()
                answers.append((rows[0], n_postings))
        assert answers[0] == answers[1]
        assert answers[0][0][0][0] == "tune_035.wav"


def test_cli_on_the_router(cluster_url: str, tunes: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", cluster_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "(one per shard)" in run("ingest", "--jobs", "1", str(tunes))
    status = run("cluster", "status")
    assert status.splitlines()[-1].split()[1] == str(len(SEEDS))
    assert "tune_031.wav" in run("tracks", "list")
    query = tmp_path / "q.wav"
    soundfile.write(query, _excerpt(40, 10, 4.0), SR, subtype="PCM_16")
    for extra in ([], ["--sql"], ["--sql", "--null", "poisson"], ["--null", "poisson"]):
        assert run("match", *extra, str(query)).startswith("q.wav: tune_040.wav")
    assert "Fsmall_Tlong" in run("report", "--plots", str(tmp_path / "plots"))
    assert len(list((tmp_path / "plots").glob("*.png"))) >= 2
    assert "tune_031.wav" in run("tracks", "show", "tune_031.wav")
    recording = tmp_path / "recording.wav"
    soundfile.write(recording, np.concatenate([synth_tune(40, duration_s=8.0), synth_tune(33, duration_s=8.0)]), SR,
                    subtype="PCM_16")
    followed = run("monitor", "--window", "4", "--hop", "2", str(recording))
    assert "tune_040.wav" in followed and "tune_033.wav" in followed
    (tmp_path / "queries.csv").write_text(f"file,true_track,start_s\n{query},tune_040,{10 * HOP / SR}\n")
    assert run("eval", str(tmp_path / "queries.csv"), "--out", str(tmp_path / "eval")).strip()
    assert (tmp_path / "eval" / "per_query.csv").read_text().count("tune_040") >= 2
    run("export-pickle", str(tmp_path / "all.pkl"))
    assert len(read_seed_pickle(tmp_path / "all.pkl")[0]["tracks"]) == len(SEEDS)
    run("db", "upgrade")
    track_id = next(int(line.split()[0]) for line in run("tracks", "list").splitlines() if "tune_031" in line)
    run("tracks", "remove", "--yes", str(track_id))
    assert "tune_031.wav" not in run("tracks", "list")


def test_cluster_init_checks_its_shards(servers: Servers) -> None:
    router = _new_database(_url_in(servers.folder / "router" / "run"))
    shards = [_new_database(servers.shard_url(k)) for k in range(3)]
    with pytest.raises(ParameterError, match="power of two"):
        init_cluster(router, shards)
    with pytest.raises(ParameterError, match="twice"):
        init_cluster(router, [shards[0], shards[0]])
    # Shard 1 gave ids before (tracks stored and removed since): its new ids come after them, never again.
    with opened(shards[1]) as used, used.raw() as conn:
        used.upgrade()
        conn.execute("SELECT setval('tracks_id_seq', 40), setval('tracks_bulk_id_seq', %s)", (1_000_004_999,))
    init_cluster(router, shards[:2])
    assert len(init_cluster(router, shards[:2])) == 2  # again: only upgrades
    first_ids = []
    for shard in shards[:2]:
        with opened(shard) as store, store.raw() as conn:
            first_ids.append(conn.execute("SELECT nextval('tracks_id_seq'), nextval('tracks_bulk_id_seq')").fetchone())
    assert first_ids == [(2, 1_000_000_000), (41, 1_000_005_001)]
    with pytest.raises(ParameterError, match="already routes"):
        init_cluster(router, [shards[0], shards[2]])


def _whole_tracks_only(cluster_url: str) -> int:
    """Every stored track has exactly its postings on its shard; returns the number of tracks."""
    n_tracks = 0
    with open_cluster(cluster_url) as cluster:
        for shard in cluster.shards:
            with shard.raw() as conn:
                rows = conn.execute("SELECT t.id, t.n_postings, (SELECT count(*) FROM hashes h WHERE h.track_id = t.id)"
                                    " FROM tracks t").fetchall()
                orphans = conn.execute("SELECT count(*) FROM hashes h WHERE NOT EXISTS"
                                       " (SELECT 1 FROM tracks t WHERE t.id = h.track_id)").fetchone()
            assert all(n == found for _, n, found in rows) and orphans == (0,)
            n_tracks += len(rows)
    return n_tracks


def _shard_of(path: Path) -> int:
    return shard_of_digest(file_sha256(path), N_SHARDS)


def test_a_shard_down_at_the_start_stores_nothing_new_and_a_rerun_completes(servers: Servers, cluster_url: str,
                                                                            tunes: Path) -> None:
    """Its own files fail as not written; every other new file fails too: it could not be checked against it."""
    down = 1
    on_down = {p.name for p in tunes.iterdir() if _shard_of(p) == down}
    assert on_down, "pick seeds that put a tune on the stopped shard"
    servers.stop_shard(down)
    with open_store(cluster_url) as cluster:
        summary = ingest(cluster, tunes, jobs=1)
    assert (summary.tracks_added, summary.tracks_failed) == (0, len(SEEDS))
    reasons = {Path(f.path).name: f.detail for f in summary.failures}
    assert all("\n" not in reason and reason.startswith(f.path) for f, reason in zip(summary.failures, reasons.values()))
    assert all(f"not written, shard {down} " in reasons[name] for name in on_down)
    assert all(f"not stored: it could not be checked for duplicates on shard {down} " in reason
               for name, reason in reasons.items() if name not in on_down)
    assert summary.shard_run_ids[down] is None
    servers.start_shard(down)
    assert _whole_tracks_only(cluster_url) == 0
    reported = []

    def on_file(event) -> None:
        reported.append(event)
        if len(reported) == len(SEEDS):  # every file reported: the shard stops as the runs are being closed
            servers.stop_shard(down)

    with open_store(cluster_url) as cluster:
        again = ingest(cluster, tunes, jobs=1, on_file=on_file)
    assert (again.tracks_added, again.tracks_skipped, again.tracks_failed) == (len(SEEDS), 0, 0)
    servers.start_shard(down)
    assert _whole_tracks_only(cluster_url) == len(SEEDS)


def _stored_names(cluster_url: str) -> set[str]:
    with open_cluster(cluster_url) as cluster:
        return {str(t["file_name"]) for t in cluster.tracks.search().tracks}


def test_a_shard_that_dies_during_ingest_leaves_reports_true_and_nothing_unchecked(servers: Servers,
                                                                                   cluster_url: str,
                                                                                   tunes: Path) -> None:
    """Every file is reported as what became of it; after the stop no new file is stored; the rerun completes."""
    dying = 2
    on_dying = [p for p in sorted(tunes.iterdir()) if _shard_of(p) == dying]
    assert len(on_dying) >= 2, "pick seeds that put two tunes on the dying shard"

    def on_file(event) -> None:
        if event.status == "added" and Path(event.path).name == on_dying[0].name:
            servers.stop_shard(dying)

    with open_store(cluster_url) as cluster:
        summary = ingest(cluster, tunes, jobs=1, batch_postings=1, bulk=False, on_file=on_file)
    failed = {Path(f.path).name for f in summary.failures}
    assert {p.name for p in on_dying[1:]} <= failed and summary.tracks_added + len(failed) == len(SEEDS)
    assert all(f"shard {dying} " in f.detail and f.detail.startswith(f.path) for f in summary.failures)
    servers.start_shard(dying)
    assert len(_stored_names(cluster_url)) == summary.tracks_added == _whole_tracks_only(cluster_url)
    assert not _stored_names(cluster_url) & failed
    with open_store(cluster_url) as cluster:
        assert ingest(cluster, tunes, jobs=1).tracks_added == len(failed)
    assert _whole_tracks_only(cluster_url) == len(SEEDS)


def _tunes_by_shard(folder: Path, seeds: range) -> dict[int, list[Path]]:
    placed: dict[int, list[Path]] = {}
    for path in write_tunes(folder, list(seeds)):
        placed.setdefault(_shard_of(path), []).append(path)
    return placed


def test_a_batch_committed_before_its_shard_fails_is_reported_written(servers: Servers, cluster_url: str,
                                                                      tmp_path: Path) -> None:
    """The shard fails after the writer thread committed a batch and before the main thread collected it."""
    dying = 2
    placed = _tunes_by_shard(tmp_path / "pool", range(100, 124))
    elsewhere = next(paths[0] for k, paths in placed.items() if k != dying)
    music = tmp_path / "music"
    music.mkdir()
    for name, source in (("a.wav", placed[dying][0]), ("b.wav", elsewhere), ("c.wav", placed[dying][1])):
        (music / name).write_bytes(source.read_bytes())
    with open_store(cluster_url) as cluster:
        ingest(cluster, music / "b.wav", jobs=1)

        def on_file(event) -> None:
            # b.wav is skipped (stored) after a.wav was handed to the writer: stop the shard once a.wav is committed.
            if event.path.endswith("b.wav"):
                assert wait_until(lambda: cluster.shards[dying].tracks.count() == 1, timeout=120)
                servers.stop_shard(dying)

        summary = ingest(cluster, music, jobs=1, batch_postings=1, bulk=False, on_file=on_file)
    servers.start_shard(dying)
    assert (summary.tracks_added, summary.tracks_skipped, summary.tracks_failed) == (1, 1, 1), summary.failures
    assert [Path(f.path).name for f in summary.failures] == ["c.wav"]
    assert _stored_names(cluster_url) == {"a.wav", "b.wav"}


def test_a_copy_of_a_track_on_a_down_shard_is_not_stored_unchecked(servers: Servers, cluster_url: str, db_url: str,
                                                                  tunes: Path, tmp_path: Path) -> None:
    with open_store(cluster_url) as cluster:
        ingest(cluster, tunes, jobs=1)
    copies = tmp_path / "copies"
    copies.mkdir()
    # A re-encoded copy whose own digest picks another shard than its original's.
    for original in sorted(tunes.iterdir()):
        copy = write_resampled_copy(original, copies / f"{original.stem}.flac")
        if _shard_of(copy) != _shard_of(original):
            break
        copy.unlink()
    down = _shard_of(original)
    servers.stop_shard(down)
    result = CliRunner().invoke(cli, ["--db", cluster_url, "ingest", "--jobs", "1", str(copies)])
    assert result.exit_code == 3, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1, result.output
    assert failed[0].startswith(f"failed: {copy}: not stored: it could not be checked for duplicates on shard {down} (")
    assert failed[0].endswith("; run the ingest again once that shard is back")
    servers.start_shard(down)
    assert _whole_tracks_only(cluster_url) == len(SEEDS)
    # Once the shard is back the rerun finishes the work: the copy is found and skipped, as on one database.
    with open_store(cluster_url) as cluster, open_store(db_url) as single:
        again = ingest(cluster, copies, jobs=1)
        ingest(single, tunes, jobs=1)
        alone = ingest(single, copies, jobs=1)
    assert (again.tracks_added, again.tracks_skipped) == (alone.tracks_added, alone.tracks_skipped) == (0, 1)
    assert _whole_tracks_only(cluster_url) == len(SEEDS)


def test_a_dask_worker_names_the_file_and_never_stores_it_unchecked(servers: Servers, cluster_url: str,
                                                                    tunes: Path) -> None:
    """``fingerprint_and_write`` (the dask task) run here, with a shard down."""
    with open_store(cluster_url) as cluster:
        summary = ingest(cluster, tunes / "tune_031.wav", jobs=1)
        zone_ids, params = cluster.zone_ids(), cluster.params()
    new = [p for p in sorted(tunes.iterdir()) if p.name != "tune_031.wav"]
    down = _shard_of(new[0])
    other = next(p for p in new if _shard_of(p) != down)
    run_ids = summary.shard_run_ids
    servers.stop_shard(down)
    try:
        for path in (new[0], other):
            k = _shard_of(path)
            result = fingerprint_and_write(WriteJob(str(path), path.name, file_sha256(path), cluster_url, k,
                                                    int(run_ids[k] or 1), zone_ids, params, False, "skip", 0.1))
            assert result.status == "failed" and result.detail.startswith(f"{path.name}: not stored: "), result
            assert f"shard {down} " in result.detail and result.failed_shard == down
    finally:
        servers.start_shard(down)
    assert _whole_tracks_only(cluster_url) == 1


READ_COMMANDS = [["match", "q.wav"], ["match", "--sql", "q.wav"], ["report"], ["tracks", "list"],
                 ["tracks", "show", "tune_033.wav"], ["export-pickle", "all.pkl"], ["db", "current"],
                 ["monitor", "--window", "4", "--hop", "2", "q.wav"], ["eval", "queries.csv", "--out", "eval"]]


def test_a_shard_down_during_reads_is_an_error_naming_it(servers: Servers, cluster_url: str, tunes: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(cluster_url) as cluster:
        ingest(cluster, tunes, jobs=1)
    down = 3
    servers.stop_shard(down)
    try:
        with open_store(cluster_url) as cluster:
            for method in ("python", "sql"):
                with pytest.raises(ShardDown, match=f"shard {down} of the cluster"):
                    match_signal(cluster, _excerpt(33, 40, 3.0), method=method)
        monkeypatch.chdir(tmp_path)
        soundfile.write(tmp_path / "q.wav", _excerpt(33, 40, 3.0), SR, subtype="PCM_16")
        (tmp_path / "queries.csv").write_text(f"file,true_track,start_s\nq.wav,tune_033,{40 * HOP / SR}\n")
        for command in READ_COMMANDS:
            result = CliRunner().invoke(cli, ["--db", cluster_url, *command])
            said = [line for line in result.output.splitlines() if f"shard {down} " in line]
            assert result.exit_code != 0 and said, (command, result.output)
            assert "nothing was changed" in said[0] and "rolled back" not in result.output, (command, result.output)
        status = CliRunner().invoke(cli, ["--db", cluster_url, "cluster", "status"])
        assert status.exit_code == 3, status.output
        states = {int(words[0]): words[1] for words in map(str.split, status.output.splitlines())
                  if words[0].isdigit() and words[1] in ("up", "down")}
        assert states == {k: "down" if k == down else "up" for k in range(N_SHARDS)}
        assert "error: " in status.output and f"down: shard {down} (1 of {N_SHARDS}): " in status.output
    finally:
        servers.start_shard(down)
    assert CliRunner().invoke(cli, ["--db", cluster_url, "cluster", "status"]).exit_code == 0


def test_a_killed_ingest_leaves_whole_tracks_on_every_shard(cluster_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    write_tunes(folder, list(range(50, 74)), duration_s=20.0)
    env = {**os.environ, "FPSTORE_DATABASE_URL": cluster_url}
    command = [sys.executable, "-m", "fpstore", "ingest", "--jobs", "1", str(folder)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _stored(cluster_url) >= 2, timeout=240), "no track was stored in time"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    stored = _whole_tracks_only(cluster_url)
    assert stored >= 2
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _whole_tracks_only(cluster_url) == 24


def _stored(cluster_url: str) -> int:
    with open_cluster(cluster_url) as cluster:
        return cluster.tracks.count()


@pytest.mark.parametrize("command", [["report"], ["cluster", "status"], ["ingest", "."]])
def test_a_router_that_cannot_be_reached_is_one_line(tmp_path: Path, command: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No server answers on the router's socket (a router down): one line, nothing written."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", _url_in(tmp_path), *command])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: cannot connect to postgresql+psycopg://fpstore@/fpstore?host=")


def test_a_single_database_is_not_a_router(db_url: str) -> None:
    engine = create_engine(db_url)
    assert not is_router(engine)
    engine.dispose()
    result = CliRunner().invoke(cli, ["--db", db_url, "cluster", "status"])
    assert result.exit_code != 0 and "not a cluster's router" in result.output


def test_dask_workers_fingerprint_and_write_to_the_owning_shards(cluster_url: str, db_url: str, tunes: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as dask_cluster:
        with open_store(cluster_url) as cluster:
            summary = ingest(cluster, tunes, scheduler=dask_cluster.scheduler_address)
            again = ingest(cluster, tunes, scheduler=dask_cluster.scheduler_address)
        with open_store(db_url) as single:
            alone = ingest(single, tunes, scheduler=dask_cluster.scheduler_address)
    assert (summary.tracks_added, summary.tracks_failed) == (len(SEEDS), 0)
    assert (again.tracks_added, again.tracks_skipped) == (0, len(SEEDS))
    assert alone.tracks_added == len(SEEDS) and alone.postings_by_zone == summary.postings_by_zone
    with open_store(cluster_url) as cluster, open_store(db_url) as single:
        assert _pairs_by_name(cluster) == _pairs_by_name(single)
        for k, shard in enumerate(cluster.shards):
            assert all(int(t["id"]) % N_SHARDS == k for t in shard.tracks.search().tracks)
            # Each shard's run counted what its workers wrote.
            with shard.connect() as conn:
                from sqlalchemy import text

                added = conn.execute(text("SELECT coalesce(sum(tracks_added), 0) FROM runs")).scalar_one()
            assert added == shard.tracks.count()
    assert _whole_tracks_only(cluster_url) == len(SEEDS)


@pytest.mark.parametrize("command", [["db", "compact"], ["db", "lookup-index", "covering"],
                                     ["db", "grant-reader", "somebody"], ["db", "downgrade", "base"],
                                     ["tracks", "duplicates"]])
def test_what_needs_one_database_is_refused_through_the_router(cluster_url: str, command: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--db", cluster_url, *command])
    assert result.exit_code != 0
    said = result.output.strip().splitlines()
    assert len(said) == 1 and ("one database" in said[0] or "within one database" in said[0]), result.output


def _partitions_of(shard: Store, *, filled: bool = False) -> int:
    """Partitions of the shard's ``hashes`` (only those holding postings with ``filled``)."""
    with shard.raw() as conn:
        sizes = conn.execute("SELECT pg_relation_size(i.inhrelid) FROM pg_inherits i"
                             " WHERE i.inhparent = 'hashes'::regclass").fetchall()
    return sum(1 for (size,) in sizes if size or not filled)


def test_ingest_merges_the_partitions_of_each_shard_on_its_own(cluster_url: str, tmp_path: Path) -> None:
    with open_store(cluster_url) as cluster:
        for load in range(3):
            write_tunes(tmp_path / f"load{load}", [50 + 4 * load + i for i in range(4)], duration_s=4.0)
            ingest(cluster, tmp_path / f"load{load}", bulk=True, jobs=1, max_partitions=0)
        before, answers = _pairs_by_name(cluster), _answers(cluster, "python")
        assert max(_partitions_of(shard, filled=True) for shard in cluster.shards) >= 2
        partitions = sum(_partitions_of(shard) for shard in cluster.shards)

        summary = ingest(cluster, tmp_path / "load0", jobs=1, max_partitions=1)  # nothing new: merges only

        assert summary.tracks_added == 0 and summary.merges and not summary.merge_failures
        assert sum(merged.partitions_merged - merged.partitions_made for merged in summary.merges) == \
            partitions - sum(_partitions_of(shard) for shard in cluster.shards)
        assert _pairs_by_name(cluster) == before and _answers(cluster, "python") == answers
