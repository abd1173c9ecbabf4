"""Start-up: a command loads the heavy libraries it needs and no others (what is loaded, not how long it takes).

The figures are in benchmarks/results/2026-12-07-startup.md (``benchmarks/startup.py``); this checks the
structure behind them, in a fresh interpreter each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
    allowed = {"numpy", "soundfile", "soxr"} if args[0] == "match" else set()  # match's defaults: Evidence, signal
    assert loaded_by(args) - allowed == set()


def test_db_url_loads_neither_alembic_nor_the_audio_stack(tmp_path) -> None:
    """``fpstore db url`` parses the URL (SQLAlchemy) and nothing more: no migrations, no numpy, no plots."""
    env = {"FPSTORE_DATABASE_URL": "postgresql://team@127.0.0.1:1/fp", "FPSTORE_CONFIG": ""}
    assert loaded_by(["db", "url"], env) <= {"sqlalchemy", "psycopg"}
