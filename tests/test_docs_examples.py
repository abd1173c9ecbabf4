"""The manual's examples run: the README's quick start, and every block a page marks with
``<!-- runs in a test ... -->`` (see :data:`docs_pages.EXAMPLE_MARK`).

Each example runs as a user would type it, in bash, in a fresh folder, with ``fpstore`` on the PATH and
``$FPSTORE_DATABASE_URL`` naming a fresh database of its own; a console block's outputs are compared
line by line (``...`` stands for what may differ: paths, sizes, times).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from docs_pages import README, Example, code_blocks, examples, output_matches

#: Generous: an example ingests a few tunes, and the suite must pass on a busy machine.
EXAMPLE_TIMEOUT_S = 600
SEPARATOR = "--8<-- fpstore example step --8<--"


def example_env(db_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FPSTORE_CONFIG", "FPSTORE_DATABASE_URL")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", FPSTORE_DATABASE_URL=db_url,
               FPSTORE_HOME=str(home), COLUMNS="200", PYTHONPATH=str(Path(__file__).parent))  # seed_port
    return env


def run_steps(setup: str, commands: list[str], *, cwd: Path, env: dict[str, str]) -> list[str]:
    """Run ``setup`` then each command in one bash (so ``cd`` and variables carry); each command's output."""
    script = [f"{{ {setup or 'true'}\n}} > .setup.log 2>&1 || {{ echo 'setup failed:'; cat .setup.log; exit 97; }}"]
    for command in commands:
        script += [f"echo {shlex.quote(SEPARATOR)}", f"{{ {command}\n}} 2>&1"]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=EXAMPLE_TIMEOUT_S, check=False)
    assert done.returncode != 97, done.stdout + done.stderr
    return done.stdout.split(SEPARATOR + "\n")[1:]


@pytest.mark.postgres
@pytest.mark.parametrize("example", examples(), ids=lambda example: example.name)
def test_marked_example_runs(example: Example, db_url: str, tmp_path: Path) -> None:
    env = example_env(db_url, tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    if example.language == "python":
        (work / "example.py").write_text(example.body)
        ran = run_steps(example.setup, ["python example.py && echo example ran"], cwd=work, env=env)
        assert ran[-1].splitlines()[-1:] == ["example ran"], ran
        return
    steps = example.steps()
    outputs = run_steps(example.setup, [command for command, _ in steps], cwd=work, env=env)
    for (command, expected), actual in zip(steps, outputs, strict=True):
        assert output_matches(expected, actual), f"$ {command}\nexpected:\n" + "\n".join(expected) + f"\ngot:\n{actual}"


def test_the_examples_are_found() -> None:
    assert len(examples()) >= 5
    assert output_matches(["a ... c", "...", "end"], "a b c\nx\ny\nend\n")
    assert not output_matches(["a ... c", "end"], "a b c\nx\nend\n")


@pytest.mark.postgres
def test_readme_quick_start_ends_in_a_match(db_url: str, tmp_path: Path) -> None:
    """Its lines but the install (this test runs in that install), then the match line it shows."""
    quick_start = README.read_text().split("## Quick start", 1)[1]
    lines = [line.split("  #", 1)[0].strip() for line in code_blocks("sh", [README])[0][1].splitlines()]
    assert lines[0].startswith("python3 -m venv") and len(lines) == 5
    shown = quick_start.split("The last line prints", 1)[1].split("```\n", 2)[1].strip()
    outputs = run_steps("", lines[1:], cwd=tmp_path, env=example_env(db_url, tmp_path / "home"))
    printed = outputs[-1].strip()
    # The votes, score and confidence follow the matcher's tuning; the track and the offset are the clip's own.
    numbers = re.compile(r"(votes|score|confidence) [\d.]+")
    assert numbers.sub(r"\1 N", printed) == numbers.sub(r"\1 N", shown), printed
