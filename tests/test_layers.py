"""The tree shows the pipeline: signal → db → operations → cli, imports one way, SQL only under fpstore/db."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fpstore"

#: What the issue's check greps for: SQL text, statements, COPY and raw connections.
# `text(` as a word: SQLAlchemy's, not the tail of contextlib's `enter_context(`.
SQL_PATTERN = re.compile(r"\btext\(|\.execute\(|copy\(|raw_connection")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported_modules(path: Path) -> set[str]:
    """fpstore modules imported anywhere in the file (functions included), except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        found.update(name for name in names if name.split(".")[0] == "fpstore")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> str:
    if module.startswith("fpstore.signal") or module == "fpstore.errors":
        return "signal"
    if module.startswith("fpstore.db"):
        return "db"
    if module in ("fpstore.cli", "fpstore.__main__"):
        return "cli"
    return "operations"


ALLOWED = {
    "signal": {"signal"},
    "db": {"signal", "db"},
    "operations": {"signal", "db", "operations"},
    "cli": {"signal", "db", "operations", "cli"},
}


def test_the_layers_are_where_the_readme_says() -> None:
    assert len(MODULES) > 20
    assert {"fpstore.signal.audio", "fpstore.signal.hashing", "fpstore.db.store", "fpstore.db.tracks",
            "fpstore.ingest", "fpstore.match", "fpstore.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    """signal imports neither db nor operations; db imports no operation; only __main__ imports the CLI."""
    for target in GRAPH[module]:
        if target == "fpstore":  # the package itself, for __version__
            continue
        assert layer(target) in ALLOWED[layer(module)], f"{module} ({layer(module)}) imports {target}"
        if target == "fpstore.cli":
            assert module == "fpstore.__main__", f"{module} imports the CLI"


def test_no_import_cycle() -> None:
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_sql_lives_under_fpstore_db_only() -> None:
    """``grep -rlE "\\btext\\(|\\.execute\\(|copy\\(|raw_connection" fpstore`` lists only files under fpstore/db/."""
    with_sql = {str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                if SQL_PATTERN.search(path.read_text())}
    assert with_sql, "the pattern finds nothing at all: the check would be empty"
    assert {path for path in with_sql if not path.startswith("fpstore/db/")} == set()


def test_the_public_api_is_importable_from_the_package() -> None:
    import fpstore

    for name in fpstore.__all__:
        assert getattr(fpstore, name) is not None, name
    from fpstore import FingerprintParams, fingerprint_file, ingest, match_files, open_store  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        fpstore.nothing_here  # noqa: B018
