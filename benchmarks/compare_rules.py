"""The vote-count rule against the calibrated one, from one ``fpstore eval`` per_query.csv.

With ``--min-ratio 1`` (the default) the vote-count rule names the best track exactly when its votes
reach ``--min-votes``, and the calibrated rule exactly when its score exceeds ``-log10 alpha``: both
read from the same rows (``votes``, ``score``, ``best_is_true``), so one evaluation measures both.

    python benchmarks/compare_rules.py /tmp/ev_large_q_alpha/per_query.csv --min-votes 15 --alpha 1e-3

prints a Markdown table per degradation and length: positives, argmax accuracy (the best-voted track,
no rule), top-1 accuracy under each rule, negatives and false positives under each rule.
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


def table(rows: list[Row], min_votes: int, alpha: float) -> str:
    """The Markdown table, one line per (degradation, length_s) and an overall ``*`` line."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row["outcome"] != "failed":
            groups[(row["degradation"], row["length_s"])].append(row)
            groups[("*", "*")].append(row)
    by_votes = lambda r: int(r["votes"]) >= min_votes  # noqa: E731
    by_score = lambda r: float(r["score"]) > -math.log10(alpha)  # noqa: E731
    lines = [f"| degradation | length_s | positives | argmax | top-1 `--min-votes {min_votes}` | top-1 `--alpha {alpha:g}` "
             f"| negatives | FP `--min-votes {min_votes}` | FP `--alpha {alpha:g}` |", "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0] == "*", k[0], float(k[1]) if k[1] != "*" else 0.0)):
        members = groups[key]
        n_pos, votes_right, n_neg, votes_fp = _counts(members, by_votes)
        _, score_right, _, score_fp = _counts(members, by_score)
        argmax = sum(r["best_is_true"] == "1" for r in members if r["true_track"])
        lines.append(f"| {key[0]} | {key[1]} | {n_pos} | {_share(argmax, n_pos)} | {_share(votes_right, n_pos)} "
                     f"| {_share(score_right, n_pos)} | {n_neg} | {votes_fp} ({_share(votes_fp, n_neg)}) "
                     f"| {score_fp} ({_share(score_fp, n_neg)}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("per_query_csv")
    parser.add_argument("--min-votes", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=1e-3)
    args = parser.parse_args()
    with open(args.per_query_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    print(table(rows, args.min_votes, args.alpha))


if __name__ == "__main__":
    main()
