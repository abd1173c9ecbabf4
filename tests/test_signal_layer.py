"""The signal layer stands alone: what its modules import, read from their source.

The source is parsed rather than imported, so the check holds whatever ``fpstore/__init__.py`` imports.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import fpstore.signal

SIGNAL_DIR = Path(fpstore.signal.__file__).parent
#: What signal modules may import at module level, besides the standard library and each other.
ALLOWED = {"numpy", "soundfile", "soxr", "fpstore.errors"}
#: Imports allowed inside a function: librosa, only for the files libsndfile cannot read (M4A).
LAZY_ALLOWED = {("audio", "librosa")}


def imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Modules imported at module level and inside functions."""
    top: set[str] = set()
    nested: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module}
        else:
            continue
        (top if node in tree.body else nested).update(names)
    return top, nested


def signal_modules() -> dict[str, ast.Module]:
    modules = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(SIGNAL_DIR.glob("*.py"))}
    assert {"analysis", "audio", "fingerprint", "stream"} <= set(modules)
    return modules


def test_signal_modules_import_only_numpy_soundfile_soxr_errors_and_each_other() -> None:
    for name, tree in signal_modules().items():
        top, nested = imports(tree)
        outside = {m for m in top if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"
                   and m not in ALLOWED and not m.startswith("fpstore.signal.")}
        assert not outside, f"fpstore/signal/{name}.py imports {sorted(outside)}"
        assert {(name, m) for m in nested} <= LAZY_ALLOWED, f"fpstore/signal/{name}.py imports inside a function"


def test_signal_imports_run_one_way() -> None:
    graph = {name: {m.removeprefix("fpstore.signal.") for m in imports(tree)[0] if m.startswith("fpstore.signal.")}
             for name, tree in signal_modules().items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle in fpstore/signal: {error.args[1]}") from None
    assert order.index("analysis") < order.index("stream") < order.index("fingerprint")
