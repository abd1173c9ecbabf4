"""Which look of the default matcher names each query, and what the looks before it scored (issue 25).

For every query of a ``queries.csv`` (the corpus layout), matches it as ``fpstore match`` does by default
against a database and records, per look taken (the query as it is, the pooled shifts, the speeds
screen, the speed looked at with every shift, ...), its best score and whether it named a track. Prints
how many positives each look names, and how many of those named after the first look had scored below
a threshold in every look before: what an early exit on the earlier looks' scores would lose.

Usage::

    python benchmarks/step_answers.py --embedded "$FPSTORE_HOME" --database fpstore \\
        --queries ../corpus/devlarge/hard/queries.csv --below 0.5
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

import fpstore.matching.matcher as matcher
from fpstore.db.store import Store
from fpstore.matching.evidence import ROBUST
from fpstore.matching.query import prepare_query


def looks_of(store: Store, rows: list[dict[str, str]], folder: Path) -> list[tuple[dict[str, str], list[tuple[float, str]]]]:
    """Per query, each look's (best score, track named or "")."""
    looks: list[tuple[float, str]] = []
    original = matcher.match_fingerprint

    def recorded(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        looks.append((result.score, Path(result.match.file_name).stem if result.match else ""))
        return result

    matcher.match_fingerprint = recorded  # type: ignore[assignment]
    params, out = store.params(duration_s=None), []
    for row in rows:
        prepared = prepare_query(folder / row["file"], params, ROBUST)
        if isinstance(prepared, str):
            continue
        looks.clear()
        matcher.match_prepared(store, prepared, params, evidence=ROBUST)
        out.append((row, list(looks)))
    matcher.match_fingerprint = original
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=Path, required=True, help="fpstore's embedded server, its data here")
    parser.add_argument("--database", default="fpstore")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--below", type=float, default=0.5, help="the early exit's threshold on the earlier looks")
    args = parser.parse_args()
    with open(args.queries, newline="") as f:
        rows = list(csv.DictReader(f))
    from fpstore.db.embedded import EmbeddedServer

    with EmbeddedServer(args.embedded) as server:
        engine = create_engine(make_url(server.url).set(drivername="postgresql+psycopg", database=args.database)
                               .render_as_string(hide_password=False))
        answers = looks_of(Store(engine), rows, args.queries.parent)
        engine.dispose()
    named_at: dict[int, int] = {}
    after_low = 0
    for row, looks in answers:
        right = [i for i, (_, named) in enumerate(looks) if named and named == row["true_track"]]
        if not row["true_track"] or not right:
            continue
        named_at[right[0]] = named_at.get(right[0], 0) + 1
        after_low += right[0] > 0 and max(score for score, _ in looks[:right[0]]) < args.below
    positives = sum(1 for row, _ in answers if row["true_track"])
    print(f"{positives} positives; named right by look: " + ", ".join(f"{k + 1}: {n}" for k, n in sorted(named_at.items())))
    print(f"named after the first look with every earlier look below {args.below}: {after_low}")


if __name__ == "__main__":
    main()
