"""Shared fixtures: a real PostgreSQL for the whole session, a fresh migrated database per test.

Where the server comes from, in order:
1. ``FPSTORE_TEST_DATABASE_URL``: an existing server; its role must be allowed to CREATE DATABASE.
2. testcontainers' PostgreSQL, when a Docker engine answers.
3. fpstore's own embedded server, started from local binaries in a throwaway folder.
Each test that takes ``db_url`` gets its own database, cloned from a template migrated once per session.
``--no-postgres`` skips every test marked ``postgres``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from helpers import alive, wait_until
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fpstore.db.store import Store
from fpstore.db.urls import normalize_url

#: Beside the project's clone, as ``../shared/corpus/make_corpus_dev.sh`` builds it; $FPSTORE_CORPUS overrides.
CORPUS_DIR = Path(os.environ.get("FPSTORE_CORPUS", Path(__file__).resolve().parents[2] / "corpus" / "dev"))
CORPUS_SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "make_corpus_dev.sh"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-postgres", action="store_true", help="skip tests that need PostgreSQL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--no-postgres"):
        skip = pytest.mark.skip(reason="--no-postgres")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def rng_factory():
    """Make numpy generators from a fixed seed, so every run sees the same 'random' data."""

    def make(offset: int = 0) -> np.random.Generator:
        return np.random.default_rng(20261124 + offset)

    return make


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a maintenance database on a real PostgreSQL server, for the whole session."""
    env_url = os.environ.get("FPSTORE_TEST_DATABASE_URL")
    if env_url:
        yield normalize_url(env_url).render_as_string(hide_password=False)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    from fpstore.db.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="fpstore-test-pg-") as folder:
        os.chmod(folder, 0o755)  # the server's own user (when we are root) must reach its data folder
        with EmbeddedServer(Path(folder)) as server:
            yield server.url


def _admin(url: str) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(
        parsed.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    )


_counter = itertools.count()


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    """Name of a database migrated to head once per session; per-test databases are cloned from it."""
    name = f"fpstore_tpl_{uuid.uuid4().hex[:8]}"
    with _admin(pg_server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server_url).set(database=name)
    engine = create_engine(url)
    Store(engine).upgrade()
    engine.dispose()
    yield name
    with _admin(pg_server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _scratch_database(server_url: str, prefix: str, template: str | None) -> Iterator[str]:
    """Create a uniquely named database (a clone of ``template`` if given); drop it afterwards."""
    name = f"{prefix}{next(_counter)}_{uuid.uuid4().hex[:6]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin(server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """URL (SQLAlchemy form, with password) of a fresh database at schema head, dropped after the test."""
    with _scratch_database(pg_server_url, "fpstore_t", template_db) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """URL of a fresh database with no schema at all."""
    with _scratch_database(pg_server_url, "fpstore_e", None) as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on a fresh database at schema head."""
    engine = create_engine(db_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder for an embedded server of the test's own, in a fresh folder directly under /tmp.

    Not under pytest's ``tmp_path``: that lives in ``/tmp/pytest-of-<user>`` (mode 0700), which the
    unprivileged service user that runs PostgreSQL for root could not traverse.
    """
    base = Path(tempfile.mkdtemp(prefix="fpstore-test-", dir="/tmp"))
    base.chmod(0o755)
    data = base / "data"
    yield data
    # Never leak a server, even when a test failed half-way.
    pid_file = data / "pgdata" / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        if alive(pid):
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not alive(pid), 10)
    shutil.rmtree(base, ignore_errors=True)


def corpus_missing_message() -> str:
    """Why the real-music tests skip, with the command that builds the corpus, in absolute paths."""
    script = CORPUS_SCRIPT
    build = (f"`bash {script}` builds it in {script.parents[2] / 'corpus' / 'dev'}" if script.is_file()
             else f"the team's shared/corpus/make_corpus_dev.sh builds it (expected at {script})")
    return f"real-music corpus not built at {CORPUS_DIR}: {build}; FPSTORE_CORPUS names another corpus folder"


@pytest.fixture(scope="session")
def corpus_clips() -> list[Path]:
    """The real-music 30 s clips, or skip when the corpus has not been built."""
    clips = sorted((CORPUS_DIR / "clips30").glob("*.mp3"))
    if not clips:
        pytest.skip(corpus_missing_message())
    return clips


@pytest.fixture
def run(db_url: str):
    """Invoke the fpstore command line (CliRunner) on the test's database: ``run("report", "--format", "json")``."""
    from click.testing import CliRunner

    from fpstore.cli import cli

    runner = CliRunner()

    def invoke(*args: str, **options: Any):
        return runner.invoke(cli, ["--db", db_url, *args], catch_exceptions=False, **options)

    return invoke


@pytest.fixture
def reader_role(db_url) -> Iterator[tuple[str, str]]:
    """A LOGIN role with a password, created for the test; yields ``(role, its URL to db_url)``."""
    role = f"reader_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    password = "reader-secret"
    admin_url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        try:
            admin.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test server's role may not create roles")
    reader_url = make_url(db_url).set(username=role, password=password).render_as_string(hide_password=False)
    try:
        yield role, reader_url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
            admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))
