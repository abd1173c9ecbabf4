"""Read another revision's module, for migrations that restore an earlier revision's SQL on downgrade."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).with_name("versions")


def revision_module(file_name: str) -> ModuleType:
    """The module of ``versions/<file_name>``, read from its file (revision modules are not importable by name)."""
    path = VERSIONS / file_name
    spec = importlib.util.spec_from_file_location(f"fpstore_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rewritten(text: str, rewrites: tuple[tuple[str, str], ...]) -> str:
    """``text`` (another revision's SQL) with each ``(old, new)`` replaced; each ``old`` must occur exactly once."""
    for old, new in rewrites:
        assert text.count(old) == 1, f"the earlier revision's SQL no longer holds {old[:40]!r} once"
        text = text.replace(old, new)
    return text
