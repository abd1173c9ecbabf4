"""The vote-count rule against the calibrated one, from one ``fpstore eval`` per_query.csv.

With ``--min-ratio 1`` (the default) the vote-count rule names the best track exactly when its votes
reach ``--min-votes``, and the calibrated rule exactly when its score exceeds ``-log10 alpha``: both
read from the same rows (``votes``, ``score``, ``best_is_true``), so one evaluation measures both.

    python benchmarks/compare_rules.py /tmp/ev_large_q_alpha/per_query.csv --min-votes 15 --alpha 1e-3

prints a Markdown table per degradation and length: positives, argmax accuracy (the best-voted track,
no rule), top-1 accuracy under each rule, negatives and false positives under each rule.

With ``--before`` it compares two evaluations of the same queries instead, each as ``fpstore eval`` decided
it (the ``outcome`` column): top-1 and false positives before and after, per degradation and length::

    python benchmarks/compare_rules.py /tmp/ev_hard_default/per_query.csv --before /tmp/ev_hard_plain/per_query.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Callable

Row = dict[str, str]


def _share(hits: int, total: int) -> str:
    return f"{100 * hits / total:.1f}%" if total else "–"


def _counts(members: list[Row], named: Callable[[Row], bool]) -> tuple[int, int, int, int]:
    """Positives, those named correctly, negatives, those named at all."""
    positives = [r for r in members if r["true_track"]]
    negatives = [r for r in members if not r["true_track"]]
    correct = sum(named(r) and r["best_is_true"] == "1" for r in positives)
    return len(positives), correct, len(negatives), sum(map(named, negatives))


def _cells(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """The answered rows by (degradation, length_s), and all of them under ``("*", "*")``, in table order."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row["outcome"] != "failed":
            groups[(row["degradation"], row["length_s"])].append(row)
            groups[("*", "*")].append(row)
    return {key: groups[key] for key in sorted(groups, key=lambda k: (k[0] == "*", k[0], float(k[1]) if k[1] != "*" else 0.0))}


def table(rows: list[Row], min_votes: int, alpha: float) -> str:
    """The Markdown table, one line per (degradation, length_s) and an overall ``*`` line."""
    groups = _cells(rows)
    by_votes = lambda r: int(r["votes"]) >= min_votes  # noqa: E731
    by_score = lambda r: float(r["score"]) > -math.log10(alpha)  # noqa: E731
    lines = [f"| degradation | length_s | positives | argmax | top-1 `--min-votes {min_votes}` | top-1 `--alpha {alpha:g}` "
             f"| negatives | FP `--min-votes {min_votes}` | FP `--alpha {alpha:g}` |", "|---|---|---|---|---|---|---|---|---|"]
    for key, members in groups.items():
        n_pos, votes_right, n_neg, votes_fp = _counts(members, by_votes)
        _, score_right, _, score_fp = _counts(members, by_score)
        argmax = sum(r["best_is_true"] == "1" for r in members if r["true_track"])
        lines.append(f"| {key[0]} | {key[1]} | {n_pos} | {_share(argmax, n_pos)} | {_share(votes_right, n_pos)} "
                     f"| {_share(score_right, n_pos)} | {n_neg} | {votes_fp} ({_share(votes_fp, n_neg)}) "
                     f"| {score_fp} ({_share(score_fp, n_neg)}) |")
    return "\n".join(lines)


def before_after(before: list[Row], after: list[Row]) -> str:
    """The Markdown table of two evaluations' own decisions, one line per (degradation, length_s) and ``*``."""
    named = lambda r: r["outcome"] in ("correct", "wrong", "false_positive")  # noqa: E731
    lines = ["| degradation | length_s | positives | top-1 before | top-1 after | negatives | FP before | FP after |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    before_cells = _cells(before)
    for key, members in _cells(after).items():
        n_pos, right_after, n_neg, fp_after = _counts(members, named)
        n_pos_before, right_before, n_neg_before, fp_before = _counts(before_cells.get(key, []), named)
        if (n_pos_before, n_neg_before) != (n_pos, n_neg):
            raise SystemExit(f"cell {key}: {n_pos_before} + {n_neg_before} queries before, {n_pos} + {n_neg} after")
        lines.append(f"| {key[0]} | {key[1]} | {n_pos} | {_share(right_before, n_pos)} | {_share(right_after, n_pos)} "
                     f"| {n_neg} | {fp_before} ({_share(fp_before, n_neg)}) | {fp_after} ({_share(fp_after, n_neg)}) |")
    return "\n".join(lines)


def _read(path: str) -> list[Row]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("per_query_csv")
    parser.add_argument("--min-votes", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--before", metavar="PER_QUERY_CSV", help="compare with this evaluation's own decisions")
    args = parser.parse_args()
    rows = _read(args.per_query_csv)
    print(before_after(_read(args.before), rows) if args.before else table(rows, args.min_votes, args.alpha))


if __name__ == "__main__":
    main()
