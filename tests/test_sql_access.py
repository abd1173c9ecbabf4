"""SQL access from outside fpstore: `db url`, `db shell` and `db serve`, with real psql and real servers.

psql writes to the process's own file descriptors, so these commands run as real processes
(``python -m fpstore``), not through click's CliRunner.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from docs_pages import code_blocks
from helpers import alive, wait_until, write_tunes
from psycopg.conninfo import conninfo_to_dict

from fpstore.cli import cli
from fpstore.db.embedded import find_psql
from fpstore.db.urls import libpq_url, normalize_url

#: Generous: on a loaded machine the first start of a cluster (initdb) can take many seconds.
SLOW = 180


def fpstore_process_env(data_dir: Path) -> dict[str, str]:
    """Environment of an fpstore process whose database in force is the embedded server in ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if k not in ("FPSTORE_DATABASE_URL", "FPSTORE_CONFIG")}
    env["FPSTORE_HOME"] = str(data_dir)
    return env


def fpstore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fpstore", *args], capture_output=True, text=True, env=env,
                          timeout=SLOW, check=False)


def manual_sql_blocks() -> list[str]:
    # docs/sql.md runs in tests/test_docs_sql.py, on the example audio its printed outputs come from.
    blocks = [text for page, text in code_blocks("sql") if page.name != "sql.md"]
    assert len(blocks) >= 2, "the manual's SQL examples moved: update this test"
    return blocks


def test_libpq_url_is_what_libpq_parses() -> None:
    socket = libpq_url(normalize_url("postgresql+psycopg://fpstore@/fpstore?host=/tmp/a%20b/run&port=5432"))
    assert socket == "postgresql://fpstore@/fpstore?host=/tmp/a%20b/run&port=5432"
    assert conninfo_to_dict(socket) == {"user": "fpstore", "dbname": "fpstore", "host": "/tmp/a b/run", "port": "5432"}
    team = normalize_url("postgresql://m%40e:p%3Aw@[::1]:5433/fp?sslmode=require")
    assert libpq_url(team) == "postgresql://m%40e@[::1]:5433/fp?sslmode=require"
    assert conninfo_to_dict(libpq_url(team, with_password=True)) == {
        "user": "m@e", "password": "p:w", "host": "::1", "port": "5433", "dbname": "fp", "sslmode": "require"}


def test_db_url_of_a_named_database_leaves_out_the_password() -> None:
    url = "postgresql+psycopg://team:s3cret@dbhost:5433/fp"
    assert CliRunner().invoke(cli, ["--db", url, "db", "url"]).output == "postgresql://team@dbhost:5433/fp\n"
    shown = CliRunner().invoke(cli, ["--db", url, "db", "url", "--with-password"]).output
    assert shown == "postgresql://team:s3cret@dbhost:5433/fp\n"


@pytest.mark.postgres
def test_manual_sql_runs_through_db_shell_on_the_embedded_database(data_dir: Path, tmp_path: Path) -> None:
    env = fpstore_process_env(data_dir)
    write_tunes(tmp_path / "music", [1, 2, 3], duration_s=6.0)
    ingest = fpstore("-q", "ingest", str(tmp_path / "music"), "--jobs", "1", env=env)
    assert ingest.returncode == 0, ingest.stderr

    count = fpstore("db", "shell", "--", "-X", "-A", "-t", "-c", "SELECT count(*) FROM tracks", env=env)
    assert (count.returncode, count.stdout) == (0, "3\n"), count.stderr

    script = tmp_path / "manual.sql"
    script.write_text("\n".join(manual_sql_blocks()))
    result = fpstore("db", "shell", "--", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), env=env)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr
    for zone in ("Fsmall_Tshort", "Fsmall_Tlong", "Flarge_Tshort", "Flarge_Tlong"):
        assert re.search(rf"^\s*{zone}\s*\|\s*\d+\s*\|\s*3\s*$", result.stdout, flags=re.M), zone  # per-zone counts

    failed = fpstore("db", "shell", "--", "-X", "-c", "SELECT no_such_column FROM tracks", env=env)
    assert failed.returncode == 1 and 'column "no_such_column" does not exist' in failed.stderr
    # The server ran for psql only: it is down again.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    down = fpstore("db", "url", env=env)
    assert down.stdout == f"postgresql://fpstore@/fpstore?host={data_dir / 'run'}&port=5432\n"
    assert "the embedded server is not running; keep it up with `fpstore db serve`" in down.stderr


@pytest.mark.postgres
def test_db_shell_on_a_named_database(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FPSTORE_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "fpstore", "--db", db_url, "db", "shell", "--", "-X", "-A", "-t",
                             "-c", "SELECT current_database()"],
                            capture_output=True, text=True, env=env, timeout=SLOW, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == normalize_url(db_url).database


@pytest.mark.postgres
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_psql_reaches_the_embedded_database_while_db_serve_runs(data_dir: Path, stop_signal: int) -> None:
    env = fpstore_process_env(data_dir)
    server = subprocess.Popen([sys.executable, "-m", "fpstore", "db", "serve"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        with selectors.DefaultSelector() as waiting:
            waiting.register(server.stdout, selectors.EVENT_READ)
            assert waiting.select(timeout=SLOW), "db serve printed no URL"
        served_url = server.stdout.readline().strip()
        assert served_url.startswith("postgresql://fpstore@/fpstore?host="), (served_url, server.poll())

        printed = fpstore("db", "url", env=env)
        assert printed.returncode == 0 and printed.stdout.strip() == served_url
        assert printed.stderr == ""  # no "not running" note while db serve runs
        psql = subprocess.run([str(find_psql(bundled_first=True)), printed.stdout.strip(), "-X", "-A", "-t",
                               "-c", "SELECT current_user || ' ' || current_database()"],
                              capture_output=True, text=True, timeout=SLOW, check=False)
        assert (psql.returncode, psql.stdout) == (0, "fpstore fpstore\n"), psql.stderr
        with psycopg.connect(served_url) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert alive(pid)

        server.send_signal(stop_signal)
        assert server.wait(timeout=SLOW) == 0
        assert server.stderr is not None and "stopped" in server.stderr.read()
        assert wait_until(lambda: not alive(pid), 10)
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.postgres
def test_db_serve_of_a_named_database_has_nothing_to_serve(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["--db", db_url, "db", "serve"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: nothing to serve: the database in force, postgresql+psycopg://")
    assert len(result.output.splitlines()) == 1
