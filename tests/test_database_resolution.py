"""Every command that touches a database finds it the same way: --db, $FPSTORE_DATABASE_URL, the config file, embedded."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import write_tunes

from fpstore.cli import cli

#: Nothing listens on port 1: connecting fails at once, and the error must name this server.
UNREACHABLE = "postgresql://team@127.0.0.1:1/team_catalogue"
SHOWN = "postgresql+psycopg://team@127.0.0.1:1/team_catalogue"


@pytest.fixture
def inputs(tmp_path):
    """Valid arguments for every command, so that each gets as far as opening its database."""
    write_tunes(tmp_path / "music", [1], duration_s=2.0)
    (tmp_path / "queries.csv").write_text("file,true_track\nmusic/tune_001.wav,\n")
    (tmp_path / "hash_db.pkl").write_bytes(b"")
    return tmp_path


COMMANDS = [
    ["ingest", "{dir}/music", "--jobs", "1"],
    ["report"],
    ["match", "{dir}/music/tune_001.wav"],
    ["eval", "{dir}/queries.csv", "--out", "{dir}/eval_out"],
    ["import-pickle", "{dir}/hash_db.pkl"],
    ["export-pickle", "{dir}/out.pkl"],
    ["tracks", "list"],
    ["tracks", "show", "1"],
    ["tracks", "remove", "1", "--yes"],
    ["db", "upgrade"],
    ["db", "downgrade", "base"],
    ["db", "current"],
    ["db", "grant-reader", "someone"],
    ["db", "lookup-index", "plain"],
    ["db", "compact"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(a for a in args if "{" not in a))
def test_the_config_files_database_is_used_by_every_command(inputs, tmp_path, monkeypatch, args) -> None:
    config = tmp_path / "team.toml"
    config.write_text(f'[database]\nurl = "{UNREACHABLE}"\n')
    monkeypatch.delenv("FPSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("FPSTORE_CONFIG", str(config))
    monkeypatch.setenv("FPSTORE_HOME", str(tmp_path / "embedded"))  # were it used, it would be this one
    result = CliRunner().invoke(cli, [arg.format(dir=inputs) for arg in args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: cannot connect to {SHOWN}: "), result.output
    assert not (tmp_path / "embedded").exists()


def test_config_option_on_the_group_and_after_the_command(inputs, tmp_path, monkeypatch) -> None:
    config = tmp_path / "team.toml"
    config.write_text(f'[database]\nurl = "{UNREACHABLE}"\n')
    monkeypatch.delenv("FPSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("FPSTORE_CONFIG", raising=False)
    for args in (["--config", str(config), "report"], ["ingest", str(inputs / "music"), "--config", str(config)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and f"cannot connect to {SHOWN}" in result.output, result.output


def test_db_option_beats_environment_beats_config_file(tmp_path, monkeypatch) -> None:
    config = tmp_path / "team.toml"
    config.write_text('[database]\nurl = "postgresql://from_file@127.0.0.1:1/f"\n')
    monkeypatch.setenv("FPSTORE_CONFIG", str(config))
    monkeypatch.setenv("FPSTORE_DATABASE_URL", "postgresql://from_env@127.0.0.1:1/e")
    said_env = CliRunner().invoke(cli, ["report"]).output
    said_option = CliRunner().invoke(cli, ["--db", "postgresql://from_option@127.0.0.1:1/o", "report"]).output
    assert "from_env@127.0.0.1:1/e" in said_env
    assert "from_option@127.0.0.1:1/o" in said_option


@pytest.mark.postgres
@pytest.mark.parametrize("args", [["report"], ["db", "current"], ["ingest", "."]])
def test_a_sql_ascii_database_gets_one_line_naming_the_encoding_needed(pg_server_url, args, tmp_path,
                                                                      monkeypatch) -> None:
    """``initdb`` under the C locale makes SQL_ASCII databases, whose text the driver returns as bytes."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    name = f"fpstore_ascii_{uuid.uuid4().hex[:6]}"
    admin = make_url(pg_server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        write_tunes(tmp_path, [1], duration_s=2.0)
        monkeypatch.chdir(tmp_path)
        url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
        result = CliRunner().invoke(cli, ["--db", url, *args], catch_exceptions=False)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("Error: database ") and "has encoding SQL_ASCII: fpstore needs a UTF8 " \
            "database" in result.output
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
@pytest.mark.parametrize("named_by", ["config file", "environment"])
def test_open_store_without_an_argument_opens_what_db_url_prints(db_url, tmp_path, monkeypatch, named_by) -> None:
    """A script and a command run side by side open the same database: one function finds it for both."""
    from fpstore import open_store
    from fpstore.db.urls import libpq_url

    config = tmp_path / "team.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    monkeypatch.delenv("FPSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("FPSTORE_CONFIG", str(config) if named_by == "config file" else "")
    if named_by == "environment":
        monkeypatch.setenv("FPSTORE_DATABASE_URL", db_url)
    monkeypatch.setenv("FPSTORE_HOME", str(tmp_path / "embedded"))  # were the embedded server used, it would be this
    printed = CliRunner().invoke(cli, ["db", "url", "--with-password"])
    assert printed.exit_code == 0, printed.output
    with open_store() as store:
        assert libpq_url(store.engine.url, with_password=True) == printed.output.strip()
        assert store.schema_revision() is not None  # it is the test database, which holds the schema
    assert not (tmp_path / "embedded").exists()
