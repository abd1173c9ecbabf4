"""Worker processes import the installed fpstore whatever the current folder holds, and say why they die."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import alive, wait_until, write_tunes
from sqlalchemy import create_engine, text

from fpstore import cli
from fpstore.runtime.workers import _death_at_start_message

PROCESS_TIMEOUT_S = 300


@pytest.mark.postgres
def test_ingest_with_workers_from_a_folder_holding_a_folder_named_fpstore(db_url, tmp_path) -> None:
    """The parent folder of a clone holds ``fpstore/``: workers must not import it instead of the package."""
    command = Path(sys.executable).parent / "fpstore"
    assert command.exists(), f"the console script {command} is installed with the package"
    (tmp_path / "fpstore").mkdir()
    write_tunes(tmp_path / "music", [1, 2, 3], duration_s=3.0)
    done = subprocess.run([str(command), "--db", db_url, "-q", "ingest", "music", "--jobs", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("run 1: 3 files: 3 added, 0 skipped, 0 failed")
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tracks")).scalar_one() == 3
    engine.dispose()


def test_workers_dying_under_the_cli_do_not_blame_a_script(monkeypatch) -> None:
    main_module = sys.modules["__main__"]
    monkeypatch.setattr(main_module, "main", cli.main, raising=False)
    said = _death_at_start_message()
    assert said.startswith("worker processes die as they start, before any file (their error is printed above)")
    assert "__main__" not in said and "script" not in said
    monkeypatch.setattr(main_module, "main", lambda: None)
    assert "must do so under 'if __name__ == \"__main__\":'" in _death_at_start_message()


def _descendants(pid: int) -> set[int]:
    """The living processes below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            said = stat.read_text()
        except OSError:
            continue
        parent = int(said[said.rfind(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.postgres
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigkill_of_the_ingest_ends_its_worker_processes(db_url, tmp_path) -> None:
    """The forkserver, the resource tracker and the pool's workers exit when the ingest is killed."""
    write_tunes(tmp_path / "music", list(range(1, 9)), duration_s=20.0)
    process = subprocess.Popen([sys.executable, "-m", "fpstore", "--db", db_url, "-q", "ingest", str(tmp_path / "music"),
                                "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The forkserver and the resource tracker, and the two workers forked from the forkserver.
        assert wait_until(lambda: len(_descendants(process.pid)) >= 4, timeout=PROCESS_TIMEOUT_S), "no workers started"
        started = _descendants(process.pid)
    finally:
        process.kill()
        process.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in started), timeout=30), \
        f"still running after the ingest was killed: {sorted(p for p in started if alive(p))}"
    # Nobody holds the killed run's output open any more: a pipeline reading it ends.
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(), process.stderr.read()
