"""The examples of docs/sql.md and docs/matching.md run, on a real database holding `fpstore example-audio`.

docs/sql.md: every ```sql block is followed by a ```text block with its psql output. The blocks run in
order in one psql session (the first ones create a temporary table the others read), and each block's
output must be the text shown. docs/matching.md: its ```python example runs against the same kind of
database, with the query files it names made from the examples.

To refresh docs/sql.md after a deliberate change, run ``python tests/test_docs_sql.py URL`` on a database
holding only the five examples (ids 1 to 5): it prints each example's output.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from fpstore.db.embedded import find_psql
from fpstore.db.store import Store
from fpstore.db.urls import libpq_url, normalize_url
from fpstore.ingest import ingest
from fpstore.matching import matcher
from fpstore.signal.synth import write_example_audio

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: psql prints this line between two examples, so that one session's output splits into each example's.
MARKER = "-- next docs/sql.md example --"
#: Generous: on a loaded machine psql and the votes can take a while.
SLOW = 180


def sql_examples(page: str) -> list[tuple[str, str]]:
    """Every ```sql block of ``page`` with the ```text block that follows it (its expected psql output)."""
    pairs = re.findall(r"```sql\n(.*?)```\s*```text\n(.*?)```", page, flags=re.S)
    assert len(pairs) == page.count("```sql\n"), "every ```sql example of docs/sql.md needs its ```text output after it"
    return pairs


def run_in_one_session(url: str, blocks: list[str]) -> list[str]:
    """Run the blocks in order in one psql session, stopping at the first error; return each block's output."""
    script = "".join(f"\\echo '{MARKER}'\n{block}\n" for block in blocks)
    done = subprocess.run([str(find_psql(bundled_first=True)), url, "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                          input=script, capture_output=True, text=True, timeout=SLOW, check=False)
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr
    outputs = done.stdout.split(MARKER + "\n")
    assert outputs[0] == "" and len(outputs) == len(blocks) + 1, done.stdout
    return outputs[1:]


def normalised(output: str) -> str:
    """psql output without trailing blanks on its lines or blank lines around it."""
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


def write_queries(examples: list[Path], folder: Path) -> None:
    """The query files docs/matching.md's Python example names: excerpts of the examples and an empty file."""
    sample_rate = 22050
    folder.joinpath("queries").mkdir()
    for source, target, start_s in ((examples[2], folder / "query.wav", 10.0),
                                    (examples[3], folder / "queries" / "q2.flac", 3.0)):
        y, rate = soundfile.read(source, dtype="float32")
        assert rate == sample_rate
        soundfile.write(target, y[int(start_s * rate):int((start_s + 5.0) * rate)], rate)
    folder.joinpath("empty.wav").write_bytes(b"")


@pytest.fixture
def examples_store(store: Store, tmp_path: Path) -> Iterator[tuple[Store, list[Path]]]:
    """A fresh database holding the five tracks of `fpstore example-audio` (ids 1 to 5)."""
    examples = write_example_audio(tmp_path / "examples")
    summary = ingest(store, tmp_path / "examples", jobs=1)
    assert summary.tracks_added == 5
    yield store, examples


@pytest.mark.postgres
def test_every_sql_example_runs_and_prints_what_the_page_shows(examples_store: tuple[Store, list[Path]],
                                                               db_url: str) -> None:
    examples = sql_examples((DOCS / "sql.md").read_text())
    assert len(examples) >= 10
    outputs = run_in_one_session(libpq_url(normalize_url(db_url), with_password=True), [sql for sql, _ in examples])
    for (sql, expected), output in zip(examples, outputs):
        assert normalised(output) == normalised(expected), f"docs/sql.md example\n{sql}\nprinted\n{output}"


@pytest.mark.postgres
def test_the_sql_page_lists_every_public_function(store: Store) -> None:
    with store.raw() as conn:
        names = {row[0] for row in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.proname LIKE 'fpstore%'").fetchall()}
        tables = {row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition AND c.relname <> 'alembic_version'").fetchall()}
    page = (DOCS / "sql.md").read_text()
    assert len(names) >= 14 and {"hashes", "postings", "tracks"} <= tables
    for name in names | tables:
        assert f"`{name}" in page, f"docs/sql.md does not document {name}"


@pytest.mark.postgres
def test_the_python_example_of_the_matching_page_runs(examples_store: tuple[Store, list[Path]], db_url: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "matching.md").read_text(), flags=re.S)
    assert len(blocks) == 1
    _, examples = examples_store
    write_queries(examples, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FPSTORE_CONFIG", raising=False)
    monkeypatch.setenv("FPSTORE_DATABASE_URL", db_url)  # what open_store() opens
    printed = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(blocks[0], "docs/matching.md", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("example_03.wav ") and lines[0].endswith(" speed 1.0"), lines
    assert lines[1:] == ["q2.flac example_04.wav", "empty.wav empty.wav: empty file (0 bytes)"], lines
    for name in ("strict", "notebook", "mixed"):
        assert namespace[name][0].match.file_name == "example_03.wav", name  # type: ignore[index]
    answers = namespace["answers"]
    assert [answer.error is None for answer in answers] == [True, False]  # type: ignore[attr-defined]
    assert np.isclose(namespace["m"].offset_s, 10.0, atol=0.05)  # type: ignore[attr-defined]



def test_the_lookup_settings_of_the_matching_page_name_what_exists(store: Store) -> None:
    """The settings listing (a fragment, not run: it changes module state) names real attributes."""
    listings = re.findall(r"```\{code-block\} python\n(.*?)```", (DOCS / "matching.md").read_text(), flags=re.S)
    assert len(listings) == 1
    targets = {"store.lookup": store.lookup, "fpstore.matching.matcher": matcher}
    assigned = re.findall(r"^([\w.]+)\.(\w+) = ", listings[0], flags=re.M)
    assert len(assigned) == 3
    for owner, attribute in assigned:
        assert hasattr(targets[owner], attribute), f"{owner}.{attribute}"

if __name__ == "__main__":
    pairs = sql_examples((DOCS / "sql.md").read_text())
    for (sql, _), output in zip(pairs, run_in_one_session(sys.argv[1], [sql for sql, _ in pairs])):
        print(f"{sql}=>\n{output}")
