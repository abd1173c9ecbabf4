"""The manual builds with warnings as errors, its generated CLI reference covers every command and option,
and the README stays a front door.

The build runs ``sphinx-build`` as a process, as a user would (``-W -n``: warnings, broken links and
unknown references are errors; no network, intersphinx is off).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from docs_pages import MANUAL_PAGES, README, ROOT

from fpstore.cli import cli

#: Generous: the build takes about 20 s on a quiet 2-core machine, and the suite must pass on a busy one.
BUILD_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site built once from the repository's docs/ (the same command as docs/conf.py names)."""
    out = tmp_path_factory.mktemp("docs-html")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html", "-c", "docs", ".", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert build.returncode == 0, f"sphinx-build failed:\n{build.stderr}"
    return out


def commands(command: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group of the CLI, with its path of names (``()`` for ``fpstore`` itself)."""
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            yield from commands(sub, (*path, name))


def documented_options(site: Path) -> set[str]:
    """The ``std:cmdoption`` names of the site's inventory: ``fpstore-db-url.--with-password``, ``fpstore-ingest.FOLDER``."""
    header_and_body = (site / "objects.inv").read_bytes().split(b"\n", 4)
    lines = zlib.decompress(header_and_body[4]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if " std:cmdoption " in line}


def test_the_manual_builds_with_warnings_as_errors(built_docs: Path) -> None:
    pages = {p.relative_to(built_docs).as_posix() for p in built_docs.rglob("*.html")}
    assert {"docs/index.html", "docs/cli.html", "docs/api.html", "docs/ingest.html"} <= pages


def test_cli_reference_lists_every_command_and_option(built_docs: Path) -> None:
    cli_page = (built_docs / "docs" / "cli.html").read_text()
    options = documented_options(built_docs)
    missing = []
    for path, command in commands():
        program = "-".join(("fpstore", *path))
        if f'id="{program}"' not in cli_page:
            missing.append(program)
        for param in command.params:
            if isinstance(param, click.Option) and param.hidden or param.name == "help":
                continue
            names = [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) else [param.human_readable_name]
            missing += [f"{program}.{name}" for name in names if f"{program}.{name}" not in options]
    assert missing == []
    assert len(options) > 100  # the inventory was read (it has ~200 entries)


def test_every_public_name_is_in_the_api_reference(built_docs: Path) -> None:
    import fpstore

    api_page = (built_docs / "docs" / "api.html").read_text()
    public = [name for name in fpstore.__all__ if name != "__version__"]
    missing = [name for name in public if not re.search(rf'id="fpstore\.[\w.]*\.{name}"', api_page)]
    assert missing == [] and len(public) > 20


def test_every_command_is_described_in_a_written_page() -> None:
    """Each command (not only the generated reference) is named in README.md or a page of docs/."""
    text = "\n".join(page.read_text() for page in MANUAL_PAGES if page.name not in ("cli.md", "api.md"))
    assert [" ".join(("fpstore", *path)) for path, _ in commands() if " ".join(("fpstore", *path)) not in text] == []


def test_the_readme_is_a_front_door() -> None:
    readme = README.read_text()
    assert len(readme.splitlines()) <= 300
    quick_start = readme.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert quick_start.splitlines()[-1].startswith("fpstore match ")
