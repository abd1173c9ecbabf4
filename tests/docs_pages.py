"""The manual's pages (README.md and docs/*.md) and their code blocks, for tests that check or run them."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
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


#: A page marks an example that a test runs with this comment on the line before its block; the setup
#: (optional) is shell run first, in the same folder:
#: ``<!-- runs in a test; setup: fpstore example-audio examples && fpstore -q ingest examples -->``
EXAMPLE_MARK = re.compile(r"^<!-- runs in a test(?:; setup: (?P<setup>.*?))? -->\n```(?P<language>console|python)\n"
                          r"(?P<body>.*?)^```", flags=re.S | re.M)


@dataclass(frozen=True)
class Example:
    """One marked example: a ``console`` block (``$ command`` lines, each followed by its output) or ``python``."""

    page: Path
    line: int
    language: str
    setup: str
    body: str

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"

    def steps(self) -> list[tuple[str, list[str]]]:
        """A console block's (command, expected output lines); a command may go on over lines ending in ``\\``."""
        steps: list[tuple[str, list[str]]] = []
        continued = False
        for line in self.body.splitlines():
            if continued:
                steps[-1] = (steps[-1][0] + "\n" + line, steps[-1][1])
            elif line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
            continued = line.endswith("\\") and not steps[-1][1]
        return steps


def examples(pages: list[Path] = MANUAL_PAGES) -> list[Example]:
    """Every marked example of the manual, in page order."""
    found = []
    for page in pages:
        text = page.read_text()
        for match in EXAMPLE_MARK.finditer(text):
            found.append(Example(page, text.count("\n", 0, match.start()) + 1, match["language"],
                                 match["setup"] or "", match["body"]))
    return found


def output_matches(expected: list[str], actual: str) -> bool:
    """Whether ``actual`` is the ``expected`` lines, where a line ``...`` stands for any lines (none too) and
    ``...`` inside a line for any text on that line; trailing spaces do not count."""
    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == "..." else
                      re.escape(line.rstrip()).replace(re.escape("..."), r"[^\n]*") + r"\n" for line in expected)
    text = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch(pattern, text) is not None
