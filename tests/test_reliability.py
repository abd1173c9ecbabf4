"""Faults fpstore must survive, tried for real: bad files, hostile names, dying workers and servers,
concurrent writers, migrations, and who may touch the database.

Every test here runs real processes against a real PostgreSQL; the README's table "Faults and what
fpstore does" points at them by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile
from helpers import alive, oracle_pairs, sorted_pairs, wait_until, write_tunes
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fpstore.db.embedded import EmbeddedServer
from fpstore.db.store import Store, head_revision
from fpstore.errors import SchemaNotAtHead
from fpstore.ingest import ingest
from fpstore.runtime.files import unreadable_reason
from fpstore.signal.synth import synth_tune

pytestmark = pytest.mark.postgres

IS_ROOT = os.geteuid() == 0
FFMPEG = shutil.which("ffmpeg")
#: Wall-clock bound for one fpstore subprocess: far above its normal time, so only a hang reaches it.
PROCESS_TIMEOUT_S = 300


def fpstore_command(db_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "fpstore", "--db", db_url, "-q", *args]


def run_fpstore(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fpstore_command(db_url, *args), capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)


def incomplete_tracks(engine) -> int:
    """Tracks whose stored postings differ in number from their n_postings (partial or lost)."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM tracks t WHERE n_postings <> (SELECT count(*) FROM hashes h WHERE h.track_id = t.id)"
        )).scalar_one()


def orphan_postings(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM hashes h WHERE NOT EXISTS (SELECT 1 FROM tracks t WHERE t.id = h.track_id)"
        )).scalar_one()


def write_encoded(path: Path, seed: int, duration_s: float = 4.0) -> Path:
    """A synthetic tune encoded by its extension: soundfile for WAV/FLAC/OGG/MP3, ffmpeg for M4A."""
    y = synth_tune(seed, duration_s=duration_s)
    if path.suffix == ".m4a":
        wav = path.with_suffix(".tmp.wav")
        soundfile.write(wav, y, 22050)
        subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)], check=True)
        wav.unlink()
    else:
        soundfile.write(path, y, 22050)
    return path


# ---------------------------------------------------------------------------------------------------
# Bad input: one line per file naming it, the run goes on
# ---------------------------------------------------------------------------------------------------

ENCODED = [".mp3", ".flac", ".ogg"] + ([".m4a"] if FFMPEG else [])


@pytest.fixture
def bad_folder(tmp_path: Path, rng_factory) -> Path:
    """Two good tunes and every kind of bad input, with the reason (regex) each must fail with."""
    folder = tmp_path / "music"
    write_tunes(folder, [1, 2])
    rng = rng_factory(5)
    for ext in ENCODED:
        data = write_encoded(folder / f"full{ext}", 3).read_bytes()
        (folder / f"full{ext}").unlink()
        (folder / f"headeronly{ext}").write_bytes(data[:64])
        (folder / f"truncated{ext}").write_bytes(data[: len(data) // 10])
        damaged = np.frombuffer(data, np.uint8).copy()
        damaged[rng.integers(0, damaged.size, damaged.size // 20)] = rng.integers(0, 256, damaged.size // 20)
        (folder / f"corrupt{ext}").write_bytes(damaged.tobytes())
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "notes.mp3").write_text("these are my notes, not audio\n")
    soundfile.write(folder / "silence.wav", np.zeros(22050 * 3, np.float32), 22050)
    soundfile.write(folder / "short.wav", synth_tune(4, duration_s=0.04), 22050)  # 882 samples < n_fft
    (folder / "broken.wav").symlink_to("nowhere.wav")
    (folder / "loop_a.mp3").symlink_to("loop_b.mp3")
    (folder / "loop_b.mp3").symlink_to("loop_a.mp3")
    os.mkfifo(folder / "pipe.mp3")  # open() on it would block forever
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder link loop: must not be walked
    return folder


EXPECTED_REASONS = {
    "empty.mp3": r"empty file \(0 bytes\)",
    "notes.mp3": r"cannot decode audio \(",
    "silence.wav": r"no hashes: no spectral peak above peak_thresh=0\.01",
    "short.wav": r"no hashes: audio shorter than one STFT frame \(882 samples < n_fft=2048\)",
    "broken.wav": r"broken symbolic link \(to nowhere\.wav",
    "loop_a.mp3": r"symbolic link loop",
    "loop_b.mp3": r"symbolic link loop",
    "pipe.mp3": r"not a regular file",
    **{f"headeronly{ext}": r"cannot decode audio \(not a readable audio file" for ext in ENCODED},
}


def test_each_bad_file_fails_with_one_line_naming_it_and_the_run_goes_on(store, bad_folder) -> None:
    summary = ingest(store, bad_folder, jobs=2)
    reasons = {Path(event.path).name: event.detail for event in summary.failures}
    for name, pattern in EXPECTED_REASONS.items():
        assert name in reasons, f"{name} was not reported as failed"
        assert reasons[name].startswith(str(bad_folder / name) + ": "), reasons[name]
        assert re.search(pattern, reasons[name]), reasons[name]
    # Damaged files: a decoder may recover part of the audio (MP3 and FLAC resync), so they are either
    # stored from what decodes or failed with a reason; never a crash, never silently dropped.
    damaged = {f"{kind}{ext}" for kind in ("truncated", "corrupt") for ext in ENCODED}
    with store.engine.connect() as conn:
        stored = {row[0] for row in conn.execute(text("SELECT file_name FROM tracks"))}
        recorded = dict(conn.execute(text("SELECT path, reason FROM failures")).all())
    assert damaged <= stored | set(reasons)
    assert {"tune_001.wav", "tune_002.wav"} <= stored
    assert summary.files_seen == summary.tracks_added + summary.tracks_failed  # link loop sub/up not walked
    assert recorded == {event.path: event.detail for event in summary.failures}
    assert all("\n" not in reason for reason in recorded.values())


def test_failed_files_make_exit_status_3_unless_allowed(db_url, bad_folder) -> None:
    failing = run_fpstore(db_url, "ingest", str(bad_folder), "--jobs", "1")
    assert failing.returncode == 3, failing.stderr
    assert "Traceback" not in failing.stderr
    failed_lines = [line for line in failing.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) >= len(EXPECTED_REASONS)
    allowed = run_fpstore(db_url, "ingest", str(bad_folder), "--jobs", "1", "--allow-failures")
    assert allowed.returncode == 0, allowed.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        per_run = conn.execute(text("SELECT run_id, count(*) FROM failures GROUP BY run_id ORDER BY run_id")).all()
        counted = conn.execute(text("SELECT tracks_failed FROM runs ORDER BY id")).scalars().all()
    engine.dispose()
    assert [n for _, n in per_run] == counted and len(counted) == 2


def test_unreadable_file_gets_permission_denied(tmp_path) -> None:
    locked = write_tunes(tmp_path, [1])[0]
    locked.chmod(0)
    probe = ("from pathlib import Path; from fpstore.runtime.files import unreadable_reason; "
             f"print(unreadable_reason(Path({str(locked)!r})))")
    if IS_ROOT:  # root reads anything: drop the capabilities that let it, as an ordinary user lacks them
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop root's file-access capabilities")
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
                   sys.executable, "-c", probe]
        said = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    else:
        said = unreadable_reason(locked)
    assert said == f"{locked}: cannot read (permission denied)"


# ---------------------------------------------------------------------------------------------------
# Hostile and non-UTF-8 file names
# ---------------------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "it's.wav",
    'say "hi".wav',
    "a;b.wav",
    "'; DROP TABLE hashes; --.wav",
    "new\nline.wav",
    "back\\slash $(echo x).wav",
]


def test_hostile_file_names_are_stored_verbatim_and_harm_nothing(store, tmp_path) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    for seed, name in enumerate(HOSTILE_NAMES, start=1):
        soundfile.write(folder / name, synth_tune(seed, duration_s=3.0), 22050, format="WAV")
    latin1 = os.fsencode(folder) + b"/caf\xe9 \xff.wav"  # not UTF-8: shown with backslash escapes
    soundfile.write(latin1, synth_tune(99, duration_s=3.0), 22050, format="WAV")
    (folder / "'; DROP TABLE failures; --\n.mp3").write_text("not audio")
    summary = ingest(store, folder, jobs=2)
    assert (summary.tracks_added, summary.tracks_failed) == (len(HOSTILE_NAMES) + 1, 1)
    with store.engine.connect() as conn:
        tracks = dict(conn.execute(text("SELECT file_name, path FROM tracks")).all())
        failures = conn.execute(text("SELECT path, reason FROM failures")).all()
        tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars())
        n_hashes = conn.execute(text("SELECT count(*) FROM hashes")).scalar_one()
    assert set(tracks) == set(HOSTILE_NAMES) | {"caf\\xe9 \\xff.wav"}
    assert all(path == f"{folder}/{name}" for name, path in tracks.items())
    assert failures[0][0] == f"{folder}/'; DROP TABLE failures; --\n.mp3"
    assert "\n" not in failures[0][1] and "--\\n.mp3: " in failures[0][1]
    assert {"hashes", "tracks", "failures", "runs", "zones", "profile"} <= tables
    assert n_hashes == summary.postings
    # the escaped name still finds the file's own fingerprint: parity holds for a non-UTF-8 name
    track_id = store.tracks.id_by_sha256(hashlib.sha256(Path(os.fsdecode(latin1)).read_bytes()).digest())
    assert track_id is not None
    stored = {zone: sorted_pairs(*arrays) for zone, arrays in store.tracks.postings(track_id).items()}
    same_bytes = shutil.copy(os.fsdecode(latin1), tmp_path / "oracle_copy.wav")  # the oracle wants UTF-8 names
    assert stored == oracle_pairs(Path(same_bytes))


# ---------------------------------------------------------------------------------------------------
# A worker process dies (segfault or OOM kill in a native decoder)
# ---------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            match = re.search(r"^PPid:\s+(\d+)", status, re.M)
            if match and int(match.group(1)) == pid:
                found.append(int(entry.name))
    return found


def _kill_workers_decoding(marker: bytes, ingest_pid: int, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the worker whose ffmpeg child is decoding a file named ``marker``, each time one appears."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                parent = int(re.search(r"^PPid:\s+(\d+)", (entry / "status").read_text(), re.M).group(1))
            except (OSError, AttributeError):
                continue
            if argv[0].endswith(b"ffmpeg") and any(marker in arg for arg in argv) and parent != ingest_pid:
                try:
                    os.kill(parent, signal.SIGKILL)
                    killed.append(parent)
                except ProcessLookupError:
                    pass
        time.sleep(0.005)


@pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg, the decoder whose process we watch")
def test_a_killed_worker_fails_only_its_file_and_the_run_goes_on(db_url, tmp_path) -> None:
    folder = tmp_path / "music"
    write_tunes(folder, [1, 2, 3, 4, 5], duration_s=4.0)
    # three minutes of AAC: only ffmpeg decodes it, slowly enough for the watcher to see it
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=180",
                    "-c:a", "aac", str(folder / "doomed.m4a")], check=True)
    process = subprocess.Popen(fpstore_command(db_url, "ingest", str(folder), "--jobs", "2", "--duration", "full"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_workers_decoding, args=(b"doomed.m4a", process.pid, stop, killed))
    watcher.start()
    try:
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT_S)
    finally:
        stop.set()
        watcher.join()
    assert len(set(killed)) >= 2, "the worker decoding doomed.m4a was never seen (retried alone, it dies again)"
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        failures = conn.execute(text("SELECT path, reason FROM failures")).all()
        names = set(conn.execute(text("SELECT file_name FROM tracks")).scalars())
        status = conn.execute(text("SELECT status FROM runs")).scalar_one()
    assert [Path(path).name for path, _ in failures] == ["doomed.m4a"]
    assert "the worker process died while decoding it" in failures[0][1]
    assert names == {f"tune_{seed:03d}.wav" for seed in [1, 2, 3, 4, 5]}
    assert status == "completed" and incomplete_tracks(engine) == 0
    engine.dispose()


def test_a_script_without_main_guard_gets_one_clear_error(db_url, tmp_path) -> None:
    """Workers re-import the main module; unguarded, each dies starting its own pool. No file is blamed."""
    write_tunes(tmp_path / "music", [1, 2], duration_s=3.0)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        "from fpstore.ingest import ingest\n"
        "from fpstore.db.catalogue import open_store\n"
        "with open_store(sys.argv[1]) as store:\n"
        "    ingest(store, sys.argv[2], jobs=2)\n"
    )
    done = subprocess.run([sys.executable, str(script), db_url, str(tmp_path / "music")],
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode != 0
    # Not necessarily the last line: a multiprocessing resource_tracker warning may follow it on a busy machine.
    errors = [line for line in done.stderr.splitlines() if line.startswith("fpstore.errors.")]
    assert errors == [
        "fpstore.errors.FpstoreError: worker processes die as they start, before any file; a script that calls "
        "ingest() with jobs > 1 must do so under 'if __name__ == \"__main__\":' (workers re-import the main module)"]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM failures")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM tracks")).scalar_one() == 0
    engine.dispose()


# ---------------------------------------------------------------------------------------------------
# Concurrent writers
# ---------------------------------------------------------------------------------------------------


def test_concurrent_ingests_store_every_file_exactly_once(db_url, tmp_path) -> None:
    root = tmp_path / "all"
    tunes = write_tunes(root / "x", list(range(1, 25)), duration_s=3.0)
    # Overlapping folders, and the same content under other names (so path order differs from sha256
    # order between processes): the case where two writers could lock the same rows in opposite orders.
    copies = root / "y"
    copies.mkdir()
    for index, tune in enumerate(reversed(tunes)):
        shutil.copy(tune, copies / f"copy_{index:02d}.wav")
    folders = [root, root / "x", copies]
    processes = [
        subprocess.Popen(fpstore_command(db_url, "ingest", str(folder), "--jobs", "1", "--batch-postings", "3000"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for folder in folders
    ]
    outcomes = [process.communicate(timeout=PROCESS_TIMEOUT_S) for process in processes]  # bounded: no deadlock
    assert [p.returncode for p in processes] == [0, 0, 0], [err for _, err in outcomes]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        n_tracks, n_distinct = conn.execute(text("SELECT count(*), count(DISTINCT sha256) FROM tracks")).one()
        statuses = conn.execute(text("SELECT status, tracks_added FROM runs")).all()
        n_hashes = conn.execute(text("SELECT count(*) FROM hashes")).scalar_one()
        n_postings = conn.execute(text("SELECT sum(n_postings) FROM tracks")).scalar_one()
    assert (n_tracks, n_distinct) == (24, 24)
    assert [status for status, _ in statuses] == ["completed"] * 3
    assert sum(added for _, added in statuses) == 24
    assert n_hashes == n_postings and incomplete_tracks(engine) == 0 and orphan_postings(engine) == 0
    store = Store(engine)
    some = tunes[7]
    with engine.connect() as conn:
        track_id = conn.execute(text("SELECT id FROM tracks WHERE sha256 = :d"),
                                {"d": hashlib.sha256(some.read_bytes()).digest()}).scalar_one()
    assert {z: sorted_pairs(*a) for z, a in store.tracks.postings(track_id).items()} == oracle_pairs(some)
    engine.dispose()


# ---------------------------------------------------------------------------------------------------
# The database server dies mid-run
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[Path]:
    """Data folder for a throwaway embedded server this test may kill (directly under /tmp, mode 0755)."""
    folder = Path(tempfile.mkdtemp(prefix="fpstore-kill-"))
    folder.chmod(0o755)
    try:
        yield folder / "data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_server_killed_mid_copy_gives_one_line_error_and_rerun_completes(own_server, tmp_path) -> None:
    write_tunes(tmp_path, list(range(1, 13)), duration_s=6.0)
    with EmbeddedServer(own_server) as server:
        url = server.url
        command = fpstore_command(url, "ingest", str(tmp_path), "--jobs", "1", "--batch-postings", "1")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        engine = create_engine(url, pool_size=1)
        deadline = time.monotonic() + 120
        with engine.connect() as conn:
            while time.monotonic() < deadline:  # kill during a COPY if we catch one, else after 3 tracks
                copying = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY hashes%'"
                )).scalar_one()
                stored = conn.execute(text("SELECT count(*) FROM tracks")).scalar_one() if _has_tracks(conn) else 0
                conn.rollback()
                if copying or stored >= 3:
                    break
                time.sleep(0.002)
        engine.dispose()
        postmaster = int((own_server / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT_S)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: database ") and "run the command again" in last, stderr
    with EmbeddedServer(own_server) as server:  # restarted: crash recovery replays committed work only
        engine = create_engine(server.url)
        with engine.connect() as conn:
            stored_before = conn.execute(text("SELECT count(*) FROM tracks")).scalar_one()
        assert stored_before < 12 and incomplete_tracks(engine) == 0 and orphan_postings(engine) == 0
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
        assert rerun.returncode == 0, rerun.stderr
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*), count(DISTINCT sha256) FROM tracks")).one() == (12, 12)
            statuses = conn.execute(text("SELECT status FROM runs ORDER BY id")).scalars().all()
        assert statuses == ["interrupted", "completed"]
        assert incomplete_tracks(engine) == 0 and orphan_postings(engine) == 0
        engine.dispose()


def _has_tracks(conn) -> bool:
    return conn.execute(text("SELECT to_regclass('tracks') IS NOT NULL")).scalar_one()


def test_unreachable_server_mid_run_is_a_database_error_not_a_traceback(store, tmp_path) -> None:
    """A connection that the server drops (its backend terminated) surfaces as one DatabaseError line."""
    from fpstore.errors import DatabaseError

    write_tunes(tmp_path, [1])
    with store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        raw = conn.connection.driver_connection
        backend = raw.info.backend_pid
        with psycopg.connect(store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        with pytest.raises(DatabaseError, match=r"^database .* failed: .*run the command again"):
            conn.execute(text("SELECT count(*) FROM tracks"))


def test_a_server_gone_before_a_raw_connection_is_checked_out_is_a_database_error(own_server) -> None:
    """The checkout of a raw connection (pre-ping, then a reconnect to a dead server) gives one line too.

    CI saw this through the duplicate check's posting lookup: the server died between two statements, and
    the reconnect's psycopg error escaped as a traceback.
    """
    from fpstore.errors import DatabaseError

    with EmbeddedServer(own_server) as server:
        store = Store(create_engine(server.url, pool_pre_ping=True, pool_size=1))
        with store.raw() as conn:  # one pooled connection that the pre-ping will find dead
            backend = conn.info.backend_pid
        postmaster = int((own_server / "pgdata" / "postmaster.pid").read_text().split()[0])
        # A backend outlives a killed postmaster until it next checks: kill both, and wait until both are
        # gone, so that the pre-ping meets a dead connection and the reconnect a dead server every time.
        for pid in (postmaster, backend):
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not any(alive(pid) for pid in (postmaster, backend)), timeout=60)
        try:
            with pytest.raises(DatabaseError, match=r"^database .* failed: .*run the command again"):
                with store.raw():
                    pass
        finally:
            store.engine.dispose()


# ---------------------------------------------------------------------------------------------------
# Schema: migrations only, round trip, drift, refusal of a newer schema
# ---------------------------------------------------------------------------------------------------


def _schema_objects(engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        return {
            "tables": set(conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
            )).scalars()),
            "views": set(conn.execute(text("SELECT viewname FROM pg_views WHERE schemaname = current_schema()")).scalars()),
            "functions": set(conn.execute(text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = current_schema()")).scalars()),
            "indexes": set(conn.execute(text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                " AND tablename <> 'alembic_version'")).scalars()),
        }


def test_upgrade_downgrade_upgrade_round_trip_on_a_populated_database(store, tmp_path) -> None:
    write_tunes(tmp_path, [1, 2])
    ingest(store, tmp_path, jobs=1)
    at_head = _schema_objects(store.engine)
    assert {"hashes", "tracks", "runs", "failures", "zones", "profile"} <= at_head["tables"]
    store.downgrade("base")  # drops the data with the tables, as documented
    assert store.schema_revision() is None
    assert _schema_objects(store.engine) == {"tables": set(), "views": set(), "functions": set(), "indexes": set()}
    store.upgrade()
    assert store.schema_revision() == head_revision()
    assert _schema_objects(store.engine) == at_head
    assert ingest(store, tmp_path, jobs=1).tracks_added == 2


def test_models_and_migrations_do_not_drift(store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from fpstore.db.models import include_in_comparison, metadata

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_in_comparison})
        differences = compare_metadata(context, metadata)
    assert differences == []


MODELS_SCHEMA = "fpstore_models"

CHECKS_AND_DEFAULTS = text("""
    SELECT 'check', c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
      FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
     WHERE c.contype = 'c' AND r.relnamespace = CAST(:schema AS regnamespace) AND r.relname NOT LIKE 'hashes\\_%'
    UNION ALL
    SELECT 'default', r.relname, a.attname, pg_get_expr(d.adbin, d.adrelid)
      FROM pg_attrdef d
      JOIN pg_class r ON r.oid = d.adrelid
      JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
     WHERE r.relnamespace = CAST(:schema AS regnamespace) AND r.relname NOT LIKE 'hashes\\_%'
""")


def _checks_and_defaults(conn, schema: str) -> set[tuple[str, str, str, str]]:
    """Every CHECK constraint and column default in ``schema``, as PostgreSQL itself prints them."""
    rows = conn.execute(CHECKS_AND_DEFAULTS, {"schema": schema}).all()
    # regclass prints a schema-qualified name outside the search path; compare bare table names.
    return {(kind, table.rpartition(".")[2], name, definition.replace(f"{schema}.", ""))
            for kind, table, name, definition in rows}


def test_models_and_migrations_agree_on_checks_and_server_defaults(store) -> None:
    """Alembic's comparison ignores CHECK constraints and, by default, server defaults: compare the catalogs."""
    from fpstore.db.models import metadata

    with store.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {MODELS_SCHEMA}"))
        try:
            metadata.create_all(conn.execution_options(schema_translate_map={None: MODELS_SCHEMA}))
            from_models = _checks_and_defaults(conn, MODELS_SCHEMA)
            from_migrations = _checks_and_defaults(conn, "public")
        finally:
            conn.execute(text(f"DROP SCHEMA {MODELS_SCHEMA} CASCADE"))
    assert {kind for kind, *_ in from_models} == {"check", "default"}
    assert from_models == from_migrations


def test_a_newer_schema_is_refused_before_anything_is_written(store, tmp_path) -> None:
    write_tunes(tmp_path, [1])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": "9999_from_the_future"})
    with pytest.raises(SchemaNotAtHead, match=r"newer than this fpstore"):
        ingest(store, tmp_path, jobs=1)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar_one() == 0


# ---------------------------------------------------------------------------------------------------
# Access: read-only role, no TCP, nobody else through the socket
# ---------------------------------------------------------------------------------------------------


WRITES = [
    "INSERT INTO hashes (zone, hash, track_id, t_anchor) VALUES (1, 1, 1, 1)",
    "UPDATE tracks SET path = 'x'",
    "DELETE FROM hashes",
    "DELETE FROM runs",
    "TRUNCATE hashes",
    "DROP TABLE hashes",
    "DROP VIEW postings",
    "DROP FUNCTION fpstore_hash_key(bigint)",
    "CREATE TABLE intruder (x int)",
    "ALTER TABLE tracks ADD COLUMN intruder int",
]


def test_grant_reader_gives_select_and_execute_but_no_write(store, reader_role, tmp_path) -> None:
    from fpstore.db.access import grant_reader

    role, reader_url = reader_role
    write_tunes(tmp_path, [1])
    ingest(store, tmp_path, jobs=1)
    first = grant_reader(store, role)
    again = grant_reader(store, role)  # idempotent
    assert first == again
    assert {"hashes", "tracks", "runs", "failures", "zones", "profile", "postings"} <= set(first.relations)
    assert {"fpstore_hash_key(bigint)", "fpstore_hash_value(integer)"} <= set(first.functions)
    reader = make_url(reader_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM postings").fetchone()[0] > 0
        assert conn.execute("SELECT fpstore_hash_value(fpstore_hash_key(4294967295))").fetchone() == (4294967295,)
        unexecutable = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = current_schema() AND NOT has_function_privilege(p.oid, 'EXECUTE')").fetchone()
        assert unexecutable == (0,)  # every fpstore function, fpstore_match included once it exists
        for statement in WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM hashes")).scalar_one() > 0


def test_grant_reader_command(db_url, reader_role) -> None:
    from click.testing import CliRunner

    from fpstore.cli import cli

    role, _ = reader_role
    result = CliRunner().invoke(cli, ["--db", db_url, "db", "grant-reader", role])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{role} may now read ") and "(read-only)" in result.output
    missing = CliRunner().invoke(cli, ["--db", db_url, "db", "grant-reader", "no_such_role_x"])
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: role 'no_such_role_x' does not exist")


def _socket_folder(url: str) -> Path | None:
    host = make_url(url).query.get("host")
    return Path(host) if isinstance(host, str) and host.startswith("/") else None


def test_embedded_server_has_no_tcp_and_other_users_cannot_reach_its_socket(pg_server_url) -> None:
    folder = _socket_folder(pg_server_url)
    if folder is None or not IS_ROOT:
        pytest.skip("needs the embedded test server and root (to act as another OS user)")
    with psycopg.connect(make_url(pg_server_url).set(drivername="postgresql").render_as_string(
            hide_password=False)) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n"
             "except OSError as e:\n    print(type(e).__name__)\nelse:\n    print('connected')")
    said = subprocess.run([python, "-c", probe, str(folder / ".s.PGSQL.5432")], user="nobody",
                          capture_output=True, text=True, timeout=60)
    assert said.stdout.strip() == "PermissionError", said.stderr
