"""The manual's pages (README.md and docs/*.md) and their code blocks, for tests that check or run them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Written by hand: every page of docs/ but the generated references (cli.md, api.md generate their body).
MANUAL_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(language: str, pages: list[Path] = MANUAL_PAGES) -> list[tuple[Path, str]]:
    """Every fenced block of ``language`` (```` ```sql ````, ```` ```console ````, ...) as (page, text).

    Blocks indented inside a list item count too, their indentation removed.
    """
    pattern = re.compile(rf"^([ \t]*)```{re.escape(language)}\n(.*?)^\1```", flags=re.S | re.M)
    return [(page, textwrap.dedent(match.group(2))) for page in pages for match in pattern.finditer(page.read_text())]
