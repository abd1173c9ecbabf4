"""Start-up: a command loads the heavy libraries it needs and no others (what is loaded, not how long it takes).

The figures are in benchmarks/results/2026-12-07-startup.md (``benchmarks/startup.py``); this checks the
structure behind them, in a fresh interpreter each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fpstore.db.embedded import socket_accepts_connections, socket_libpq_url, socket_url
from fpstore.db.urls import libpq_url, normalize_url

#: Libraries that cost a tenth of a second or more to import.
HEAVY = {"sqlalchemy", "alembic", "psycopg", "numpy", "scipy", "librosa", "matplotlib", "soundfile", "soxr", "tqdm",
         "fastapi"}


def loaded_by(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The heavy top-level packages in ``sys.modules`` after ``fpstore ARGS`` ran in a fresh interpreter."""
    code = ("import json, sys\nfrom fpstore.cli import cli\n"
            f"try:\n    cli.main({args!r}, prog_name='fpstore')\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return set(json.loads(done.stdout.splitlines()[-1])) & HEAVY


def test_importing_the_command_line_loads_no_heavy_library() -> None:
    code = "import json, sys\nimport fpstore.cli\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert {name.split(".")[0] for name in json.loads(done.stdout)} & HEAVY == set()


@pytest.mark.parametrize("args", [["--help"], ["db", "--help"], ["match", "--help"], ["--version"]])
def test_help_loads_no_heavy_library_but_what_option_defaults_need(args) -> None:
    assert loaded_by(args) == set()  # match's option defaults come from fpstore.matching.defaults, not numpy's side


def test_match_loads_what_it_uses_and_no_more(run, db_url, tmp_path) -> None:
    """Matching one clip: the decoder (soundfile, soxr), numpy and the store's SQLAlchemy + psycopg, nothing else.

    No librosa, scipy or matplotlib (fpstore decodes and fingerprints on its own), no Alembic (the schema's
    revision is read, not migrated), no tqdm (no progress bar for one clip).
    """
    rng = np.random.default_rng(24)
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.1 * rng.standard_normal(44_100 * 8), 44_100)
    assert run("ingest", "--jobs", "1", str(clip)).exit_code == 0
    loaded = loaded_by(["--db", db_url, "match", str(clip)])
    assert {"numpy", "soundfile", "soxr", "sqlalchemy", "psycopg"} - loaded == set()  # it did decode and match
    assert loaded - {"numpy", "soundfile", "soxr", "sqlalchemy", "psycopg"} == set()


def test_db_url_of_a_named_database_loads_neither_alembic_nor_the_audio_stack() -> None:
    """``fpstore db url`` of a URL given parses it (SQLAlchemy) and nothing more: no migrations, no numpy, no plots."""
    env = {"FPSTORE_DATABASE_URL": "postgresql://team@127.0.0.1:1/fp", "FPSTORE_CONFIG": ""}
    assert loaded_by(["db", "url"], env) <= {"sqlalchemy"}


def test_db_url_of_the_embedded_server_loads_no_heavy_library(tmp_path) -> None:
    """On the embedded default the URL and the server's state come from the standard library alone."""
    env = {"FPSTORE_HOME": str(tmp_path), "FPSTORE_DATABASE_URL": "", "FPSTORE_CONFIG": ""}
    assert loaded_by(["db", "url"], env) == set()


@pytest.mark.parametrize("socket_dir", ["/home/me/.local/share/fpstore/run", "/tmp/a b/c+d%e/ü&x=1/run"])
def test_the_embedded_servers_libpq_url_is_the_one_sqlalchemy_gives(socket_dir) -> None:
    assert socket_libpq_url(Path(socket_dir)) == libpq_url(normalize_url(socket_url(Path(socket_dir))))


def test_nothing_accepts_connections_on_a_folder_without_a_server(tmp_path) -> None:
    assert not socket_accepts_connections(tmp_path)
