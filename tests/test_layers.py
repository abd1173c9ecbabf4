"""The tree shows the pipeline: signal and the pure matching math → db → operations → cli, imports one way.

SQL lives only under fpstore/db; the pure matching math (:data:`PURE_MATCHING`) imports nothing from db.
"""

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


def imported_modules(path: Path, *, type_only: bool = True) -> set[str]:
    """fpstore modules imported anywhere in the file (functions included); ``if TYPE_CHECKING:`` blocks if ``type_only``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node) and not type_only:
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


#: Every import, type-only ones included: the layers hold for annotations too.
GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
#: The imports that run when the module is imported.
RUNTIME_GRAPH = {name: imported_modules(path, type_only=False) - {name} for name, path in MODULES.items()}

#: The matching math on arrays and plain values: at the bottom with the signal layer, no database.
PURE_MATCHING = {"fpstore.matching", "fpstore.matching.defaults", "fpstore.matching.vote", "fpstore.matching.significance",
                 "fpstore.matching.evidence", "fpstore.matching.results"}


def layer(module: str) -> str:
    if module.startswith("fpstore.signal") or module == "fpstore.errors" or module in PURE_MATCHING:
        return "signal"
    if module.startswith("fpstore.db"):
        return "db"
    if module == "fpstore.cli" or module.startswith("fpstore.cli.") or module == "fpstore.__main__":
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
            "fpstore.ingest", "fpstore.matching.matcher", "fpstore.runtime.workers", "fpstore.cli"} <= set(MODULES)
    assert PURE_MATCHING <= set(MODULES)


def test_no_pure_array_module_at_the_top_level() -> None:
    """vote, significance and the histogram live in fpstore/matching/, the infrastructure in fpstore/runtime/."""
    top_level = {path.stem for path in PACKAGE.glob("*.py")}
    assert top_level & {"vote", "significance", "histogram", "match", "workers", "dask_workers", "files",
                        "config", "wording"} == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    """signal and the pure matching math import neither db nor operations; db imports no operation; only the CLI
    imports the CLI (type-only imports count)."""
    for target in GRAPH[module]:
        if target == "fpstore":  # the package itself, for __version__
            continue
        assert layer(target) in ALLOWED[layer(module)], f"{module} ({layer(module)}) imports {target}"
        if layer(target) == "cli":
            assert layer(module) == "cli", f"{module} imports the CLI"


@pytest.mark.parametrize("graph", [RUNTIME_GRAPH, GRAPH], ids=["run-time imports", "type-only imports included"])
def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    """No circle of imports; the package itself (``import fpstore`` for ``__version__``) is every module's root."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, set()) - {"fpstore"}):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
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


def _imported_top_level(path: Path) -> set[str]:
    """Top-level packages a file imports (functions and type-only blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_fpstore_db_and_the_migrations_import_sqlalchemy_or_psycopg() -> None:
    importers = {name for name, path in MODULES.items() if _imported_top_level(path) & {"sqlalchemy", "psycopg"}}
    assert importers, "the check would be empty"
    assert {name for name in importers if not name.startswith("fpstore.db")} == set()


def test_no_operation_asks_which_kind_of_store_it_holds() -> None:
    """``isinstance(x, Store)``, ``ClusterStore`` or the contract only under fpstore/db: the contract says what differs."""
    asking = re.compile(r"isinstance\([^)]*\b(\w*Store|Catalogue)\b")
    found = [name for name, path in MODULES.items() if not name.startswith("fpstore.db") and asking.search(path.read_text())]
    assert found == []
    assert asking.search("isinstance(self.store, ClusterStore)"), "the pattern finds what it is for"


def test_the_database_is_found_in_one_place() -> None:
    """$FPSTORE_DATABASE_URL is read by fpstore.db.locate alone, which the CLI and open_store() both call."""
    readers = {name for name, path in MODULES.items() if re.search(r"environ[^\n]*(DATABASE_URL_ENV|FPSTORE_DATABASE_URL)",
                                                                   path.read_text())}
    assert readers == {"fpstore.db.locate"}
    assert "fpstore.db.locate" in GRAPH["fpstore.db.catalogue"] and "fpstore.db.locate" in GRAPH["fpstore.runtime.config"]


def test_the_schema_head_the_commands_compare_with_is_the_migrations_head() -> None:
    from fpstore.db.store import SCHEMA_HEAD, head_revision

    assert SCHEMA_HEAD == head_revision(), "a new migration: set fpstore.db.store.SCHEMA_HEAD to its revision"
