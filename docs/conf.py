"""Sphinx configuration of fpstore's manual (``sphinx-build -W -n -c docs . build/docs``, from the repository root).

The pages are Markdown (MyST); the command-line reference is generated from the click commands
(sphinx-click) and the API reference from the numpy-style docstrings of ``fpstore.__all__`` (autodoc +
numpydoc). Nothing is fetched at build time: no intersphinx, so the build works offline and in CI.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

import fpstore

project = "fpstore"
author = "fpstore developers"
release = version = fpstore.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "numpydoc", "sphinx_click"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # .rst: numpydoc loads autosummary
# The source folder is the repository root, so that the pages link the dated measurement files in
# benchmarks/results/ with paths that also work on a forge's file view (../benchmarks/results/...).
root_doc = "docs/index"
include_patterns = ["docs/**", "benchmarks/results/**"]
html_theme = "furo"
html_title = f"fpstore {release}"
myst_heading_anchors = 3
# Keep "--alpha" as typed in the help texts (smart quotes would turn "--" into an en dash).
smartquotes = False
myst_enable_extensions = ["colon_fence"]
# Types in signatures name numpy, SQLAlchemy and click classes this manual does not document; the
# parameters' types are in the numpy-style docstrings, which numpydoc renders.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
nitpicky = True
# The docstrings also name the layers' internal functions and modules (fpstore.db.urls.normalize_url, ...),
# which this manual leaves to the source: only the public names of fpstore.__all__ are documented.
nitpick_ignore_regex = [(r"py:.*", r".*")]


def _api_reference() -> str:
    """The autodoc directives of every name in ``fpstore.__all__``, under the module that defines it."""
    lines = []
    for name in sorted(fpstore.__all__, key=str.lower):
        if name == "__version__":
            continue
        value = getattr(fpstore, name)
        module = fpstore._LAZY.get(name) or value.__module__  # the errors are imported eagerly, not lazily
        if isinstance(value, type) and issubclass(value, BaseException):
            directive = "autoexception"
        elif isinstance(value, type):
            directive = "autoclass"
        elif callable(value):
            directive = "autofunction"
        else:
            directive = "autodata"
        lines.append(f".. {directive}:: {module}.{name}\n")
    return "\n".join(lines)


def _add_api_reference(app: Any, docname: str, source: list[str]) -> None:
    """Append the generated reference to ``api.md`` where it says ``<!-- api-reference -->``."""
    if docname == "docs/api":
        source[0] = source[0].replace("<!-- api-reference -->", "```{eval-rst}\n" + _api_reference() + "```\n")


def setup(app: Any) -> dict[str, Any]:
    """Sphinx's hook for this configuration: add the generated API reference to ``api.md``."""
    app.connect("source-read", _add_api_reference)
    # sphinx-click imports it too: fail early with a clear traceback. Its commands are imported on first use;
    # load them all, as sphinx-click documents the group's loaded commands once there are any.
    cli = importlib.import_module("fpstore.cli").cli
    context = click.Context(cli)
    for name in cli.list_commands(context):
        cli.get_command(context, name)
    return {"parallel_read_safe": True}
