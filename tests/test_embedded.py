"""Tests of fpstore.db.embedded with real PostgreSQL processes (no mocks).

Every test gets its own data folder (the ``data_dir`` fixture of conftest.py).
"""

from __future__ import annotations

import os
import pathlib
import pwd
import re
import signal
import stat
import subprocess
import sys
import time

import psycopg
import pytest
import sqlalchemy as sa
from helpers import alive, wait_until

from fpstore.db.embedded import EmbeddedServer, default_data_dir, find_bindir
from fpstore.errors import EmbeddedServerError

pytestmark = pytest.mark.postgres

REPO = pathlib.Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0

#: A client in another process: enter, print the postmaster pid, wait for a line on stdin, exit.
CLIENT = """
import pathlib, sys
from fpstore.db.embedded import EmbeddedServer
data = pathlib.Path(sys.argv[1])
with EmbeddedServer(data):
    print((data / "pgdata" / "postmaster.pid").read_text().split()[0], flush=True)
    sys.stdin.readline()
"""


def postmaster_pid(data_dir: pathlib.Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def start_client(data_dir: pathlib.Path) -> tuple[subprocess.Popen[str], int]:
    """Start a client process; return it and the postmaster pid it reports once it holds the server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"client failed (exit {proc.wait()})"
    return proc, int(line)


def finish_client(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=90) == 0


def test_find_bindir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("FPSTORE_PG_BINDIR", raising=False)
    default = find_bindir()
    assert os.access(default / "postgres", os.X_OK) and os.access(default / "initdb", os.X_OK)
    debian = pathlib.Path("/usr/lib/postgresql/15/bin")
    if not (debian / "postgres").exists():
        pytest.skip("no Debian PostgreSQL 15 to point FPSTORE_PG_BINDIR at")
    monkeypatch.setenv("FPSTORE_PG_BINDIR", str(debian))
    assert find_bindir() == debian
    monkeypatch.setenv("FPSTORE_PG_BINDIR", str(tmp_path))
    with pytest.raises(EmbeddedServerError, match="FPSTORE_PG_BINDIR"):
        find_bindir()


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPSTORE_HOME", "/srv/somewhere")
    assert default_data_dir() == pathlib.Path("/srv/somewhere")
    monkeypatch.delenv("FPSTORE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    expected = pathlib.Path("/var/lib/fpstore") if IS_ROOT else pathlib.Path("/xdg/fpstore")
    assert default_data_dir() == expected


def test_url_needs_enter(data_dir: pathlib.Path) -> None:
    with pytest.raises(EmbeddedServerError):
        _ = EmbeddedServer(data_dir).url


def test_first_use_creates_cluster_and_stops_after_exit(data_dir: pathlib.Path) -> None:
    with EmbeddedServer(data_dir) as server:
        assert (data_dir / "pgdata" / "PG_VERSION").is_file()
        for name in ("run", "server.log", "clients.lock", "start.lock"):
            assert (data_dir / name).exists(), name
        pid = postmaster_pid(data_dir)
        assert alive(pid)
        engine = sa.create_engine(server.url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
                assert conn.execute(sa.text("SELECT current_database()")).scalar() == "fpstore"
                assert conn.execute(sa.text("SELECT current_user")).scalar() == "fpstore"
                assert conn.execute(sa.text("SHOW fsync")).scalar() == "on"
        finally:
            engine.dispose()
    assert not alive(pid)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    with pytest.raises(EmbeddedServerError):
        _ = server.url


def test_second_use_reuses_cluster_and_starts_fast(data_dir: pathlib.Path) -> None:
    with EmbeddedServer(data_dir):
        pass
    version_file = data_dir / "pgdata" / "PG_VERSION"
    before = version_file.stat().st_mtime_ns
    t0 = time.monotonic()
    with EmbeddedServer(data_dir) as server:
        elapsed = time.monotonic() - t0
        with psycopg.connect(sa.make_url(server.url).set(drivername="postgresql").render_as_string()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert version_file.stat().st_mtime_ns == before
    assert elapsed < 10


def test_two_processes_share_one_server(data_dir: pathlib.Path) -> None:
    first, pid = start_client(data_dir)
    second, pid2 = start_client(data_dir)
    try:
        assert pid2 == pid
        finish_client(first)
        assert alive(pid), "server stopped although a client is left"
        with psycopg.connect(host=str(data_dir / "run"), port=5432, user="fpstore", dbname="fpstore") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finish_client(second)
        # The last client stops the server synchronously, before its process ends.
        assert not alive(pid)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_watchdog_stops_server_after_sigkill(data_dir: pathlib.Path) -> None:
    client, pid = start_client(data_dir)
    try:
        assert alive(pid)
        client.send_signal(signal.SIGKILL)
        client.wait()
        assert wait_until(lambda: not alive(pid), 15), "watchdog did not stop the server"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # And the folder is usable again afterwards.
    with EmbeddedServer(data_dir):
        assert alive(postmaster_pid(data_dir))


def test_listens_on_unix_socket_only(data_dir: pathlib.Path) -> None:
    with EmbeddedServer(data_dir) as server:
        run = data_dir / "run"
        assert server.socket_dir == run
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        sock = run / ".s.PGSQL.5432"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        assert re.search(r"[?&]host=/", server.url)
        with psycopg.connect(host=str(run), port=5432, user="fpstore", dbname="fpstore") as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            assert conn.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)


@pytest.mark.skipif(not IS_ROOT, reason="only root runs PostgreSQL as a service user")
def test_root_runs_postgres_as_service_user(data_dir: pathlib.Path) -> None:
    with EmbeddedServer(data_dir):
        pid = postmaster_pid(data_dir)
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None
        owner = pwd.getpwuid(int(uids.group(2))).pw_name
        assert int(uids.group(1)) != 0 and int(uids.group(2)) != 0
        assert owner in ("fpstore", "postgres")
        assert pwd.getpwuid((data_dir / "pgdata").stat().st_uid).pw_name == owner
        assert pwd.getpwuid(data_dir.stat().st_uid).pw_name == owner


@pytest.mark.skipif(not IS_ROOT, reason="only root runs PostgreSQL as a service user")
def test_root_refuses_untraversable_ancestor(data_dir: pathlib.Path) -> None:
    locked = data_dir.parent / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServerError, match=re.escape(str(locked))) as info:
        EmbeddedServer(locked / "inner" / "data").__enter__()
    assert "FPSTORE_HOME" in str(info.value)
    assert stat.S_IMODE(locked.stat().st_mode) == 0o700  # parent folders are never opened up
