"""Recognition evaluation: run a table of labelled queries through the matcher and score the answers.

Input is a CSV with a ``file`` column (absolute, or relative to the CSV's folder), a ``true_track``
column (a stored track's file name or its file name's stem, e.g. ``track001``; empty for a query whose
track is not in the database) and label columns (e.g. ``degradation``, ``length_s``). Output: a
per-query CSV, a summary CSV and a PNG plot.

Conventions
-----------
- ``top1_accuracy``: among queries whose track is stored, the share the matcher *names* correctly
  (the "no match" rule applies); ``top1_no_rule``: the share whose best-voted track is the true one,
  whatever the rule says (the seed notebook's argmax has no rule).
- ``false_positive_rate``: among queries whose track is not stored, the share that name a track.
- Excerpt lengths are measured from the decoded audio, in seconds, rounded to 0.1 s.
- A query file that cannot be matched (missing, unreadable, undecodable, no hashes: the reasons
  ingest gives) does not stop the evaluation: its rows have ``outcome`` ``failed`` and the reason in
  ``error``, and it counts in no rate.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.errors import NotFound, ParameterError
from fpstore.matching.evidence import ALL_ZONES, ROBUST, DecisionRule, Evidence
from fpstore.matching.matcher import match_prepared
from fpstore.matching.query import prepare_query
from fpstore.matching.results import MatchResult

#: Columns that are never labels.
RESERVED_COLUMNS = ("file", "true_track", "start_s")
#: A column with at most this many distinct values is taken as a label when none are named.
MAX_LABEL_VALUES = 8

PER_QUERY_COLUMNS = (
    "file", "true_track", "zone", "measured_length_s", "predicted", "predicted_id", "votes", "score", "runner_up",
    "runner_up_votes", "runner_up_score", "confidence", "offset_s", "offset_error_s", "speed", "best", "outcome",
    "error",
)
#: ``outcome`` of a query that could not be matched.
FAILED = "failed"
SUMMARY_COLUMNS = (
    "zone", "n_positive", "top1_accuracy", "top1_no_rule", "n_wrong", "n_negative", "false_positive_rate",
)


@dataclass(frozen=True)
class Query:
    """One row of the queries CSV.

    Attributes
    ----------
    path : Path
        The audio file, resolved against the CSV's folder.
    file : str
        As written in the CSV.
    true_track : str
        Stored file name or stem; empty if the query is not in the database.
    labels : dict[str, str]
    start_s : float or None
        Where the excerpt starts in its track, seconds, if the CSV says.
    """

    path: Path
    file: str
    true_track: str
    labels: dict[str, str]
    start_s: float | None


@dataclass(frozen=True)
class EvalOutcome:
    """Where an evaluation wrote its files, and its summary rows."""

    per_query_csv: Path
    summary_csv: Path
    plot_png: Path
    scores_png: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    labels: list[str]
    failures: list[str]


def read_queries(csv_path: str | os.PathLike[str], labels: Sequence[str] | None = None) -> tuple[list[Query], list[str]]:
    """Read the queries CSV; choose label columns if none are named.

    Parameters
    ----------
    csv_path : path-like
    labels : sequence of str or None
        Label columns; None takes every column but file/true_track/start_s with at most
        :data:`MAX_LABEL_VALUES` distinct values.

    Returns
    -------
    queries : list of Query
    labels : list of str

    Raises
    ------
    ParameterError
        If a required or named column is missing, the file holds no query, or a ``start_s`` is not a
        number (``path:line``).
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        records = list(reader)
    for needed in ("file", "true_track"):
        if needed not in columns:
            raise ParameterError(f"{csv_path}: column {needed!r} is missing (has {columns})")
    if not records:
        raise ParameterError(f"{csv_path}: no queries (a header and no rows); nothing to evaluate")
    if labels is None:
        labels = [c for c in columns if c not in RESERVED_COLUMNS
                  and 1 < len({r[c] for r in records}) <= MAX_LABEL_VALUES]
    for label in labels:
        if label not in columns:
            raise ParameterError(f"{csv_path}: label column {label!r} is not one of {columns}")
    queries = []
    for line, record in enumerate(records, start=2):
        path = Path(record["file"])
        path = path if path.is_absolute() else csv_path.parent / path
        start = (record.get("start_s") or "").strip()
        try:
            start_s = float(start) if start else None
        except ValueError:
            raise ParameterError(f"{csv_path}:{line}: start_s={start!r} is not a number") from None
        queries.append(Query(path, record["file"], (record["true_track"] or "").strip(),
                             {label: record[label] for label in labels}, start_s))
    return queries, list(labels)


def score_row(query: Query, true_id: int | None, result: MatchResult, length_s: float | None) -> dict[str, Any]:
    """One per-query CSV row: the answer, and whether it was right.

    ``outcome`` is ``correct`` / ``wrong`` (named another track) / ``missed`` (said no match) for a
    stored track, ``false_positive`` / ``true_negative`` for a query not in the database, and
    ``failed`` for a query that could not be matched (``error`` says why; ``length_s`` is None).
    """
    best, runner, named = result.best, result.runner_up, result.match
    if result.error is not None:
        outcome = FAILED
    elif true_id is None:
        outcome = "true_negative" if named is None else "false_positive"
    elif named is None:
        outcome = "missed"
    else:
        outcome = "correct" if named.track_id == true_id else "wrong"
    offset_error = (
        round(named.offset_s - query.start_s, 3)
        if outcome == "correct" and named is not None and query.start_s is not None else ""
    )
    return {
        "file": query.file, "true_track": query.true_track, **query.labels, "zone": result.zone,
        "measured_length_s": "" if length_s is None else length_s,
        "predicted": named.file_name if named else "", "predicted_id": named.track_id if named else "",
        "votes": best.votes if best else 0, "score": round(best.score, 3) if best else 0.0,
        "runner_up": runner.file_name if runner else "",
        "runner_up_votes": runner.votes if runner else 0, "runner_up_score": round(runner.score, 3) if runner else 0.0,
        "confidence": round(result.confidence, 4),
        "offset_s": round(best.offset_s, 3) if best else "", "offset_error_s": offset_error, "speed": result.speed,
        "best": best.file_name if best else "",
        "best_is_true": int(best is not None and best.track_id == true_id),
        "outcome": outcome, "error": result.error or "",
    }


def evaluate_queries(
    store: Catalogue,
    queries: Sequence[Query],
    *,
    zones: Sequence[str] | None = None,
    rule: DecisionRule = DecisionRule(),  # noqa: B008 (frozen dataclass: an immutable default)
    on_query: Callable[[str], None] | None = None,
    evidence: Evidence = ROBUST,
) -> list[dict[str, Any]]:
    """Fingerprint each query once, match it in every asked zone, and score it; a bad query file fails alone.

    Parameters
    ----------
    store : Catalogue
    queries : sequence of Query
    zones : sequence of str or None
        Zone names (or ``"all"``); None evaluates every zone and ``"all"``.
    rule : DecisionRule
    on_query : callable(str) or None
        Called with each query's path when it is done.

    Returns
    -------
    rows : list of dict
        One per query and zone (see :func:`score_row`); a query that cannot be matched gets rows with
        ``outcome`` ``failed`` and its one-line reason in ``error``.

    Raises
    ------
    NotFound
        If a ``true_track`` names no stored track.
    """
    store.check_schema()
    params = store.params(duration_s=None)
    zone_names = [z.name for z in params.zones] + [ALL_ZONES] if zones is None else list(zones)
    for name in zone_names:
        if name != ALL_ZONES:
            params.zone(name)
    known = store.tracks.ids_by_file_name()
    rows = []
    for query in queries:
        true_id = None
        if query.true_track:
            if query.true_track not in known:
                raise NotFound(f"{query.file}: true_track {query.true_track!r} is not a stored track's file name")
            true_id = known[query.true_track]
        prepared = prepare_query(query.path, params, evidence)
        for zone in zone_names:
            if isinstance(prepared, str):
                rows.append(score_row(query, true_id, MatchResult.failed(query.file, zone, prepared), None))
                continue
            result = match_prepared(store, prepared, params, evidence=evidence, zone=zone, rule=rule, query=query.file)
            rows.append(score_row(query, true_id, result, round(prepared.first.fingerprints[0].duration_s, 1)))
        if on_query is not None:
            on_query(str(query.path))
    return rows


def summarise(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Top-1 accuracy and false-positive rate per zone and label group, plus a ``*`` row per zone.

    Rows of failed queries count in no group.

    Returns
    -------
    summary : list of dict
        Keys ``zone``, each label, then :data:`SUMMARY_COLUMNS` after ``zone``; rates are in [0, 1]
        (None when the group has no query of that kind).
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in answered(rows):
        groups.setdefault((row["zone"], *(str(row[label]) for label in labels)), []).append(row)
        groups.setdefault((row["zone"], *("*" for _ in labels)), []).append(row)
    summary = []
    for key in sorted(groups, key=lambda k: (k[0], ["~" if v == "*" else v for v in k[1:]])):
        members = groups[key]
        positives = [r for r in members if r["true_track"]]
        negatives = [r for r in members if not r["true_track"]]
        summary.append({
            "zone": key[0], **dict(zip(labels, key[1:])),
            "n_positive": len(positives),
            "top1_accuracy": _share(positives, lambda r: r["outcome"] == "correct"),
            "top1_no_rule": _share(positives, lambda r: r["best_is_true"] == 1),
            "n_wrong": sum(r["outcome"] == "wrong" for r in positives),
            "n_negative": len(negatives),
            "false_positive_rate": _share(negatives, lambda r: r["outcome"] == "false_positive"),
        })
    return summary


def answered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of queries that were matched (not ``failed``)."""
    return [row for row in rows if row["outcome"] != FAILED]


def _share(rows: Sequence[dict[str, Any]], hit: Callable[[dict[str, Any]], bool]) -> float | None:
    return sum(map(hit, rows)) / len(rows) if rows else None


def format_summary(summary: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The summary as a Markdown table (percentages with one decimal)."""
    columns = ["zone", *labels, *SUMMARY_COLUMNS[1:]]

    def cell(value: Any, column: str) -> str:
        if value is None:
            return "–"
        if column in ("top1_accuracy", "top1_no_rule", "false_positive_rate"):
            return f"{100 * value:.1f}%"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c], c) for c in columns) + " |" for row in summary]
    return "\n".join(lines)


def plot_accuracy_vs_length(rows: Sequence[dict[str, Any]], png_path: str | os.PathLike[str], *,
                            group_label: str | None) -> None:
    """Top-1 accuracy against excerpt length, one line per ``group_label`` value, one panel per zone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positives = [r for r in answered(rows) if r["true_track"]]
    zones = list(dict.fromkeys(r["zone"] for r in rows))
    fig, axes = plt.subplots(1, len(zones), figsize=(4 * len(zones), 3.6), sharey=True, squeeze=False)
    for ax, zone in zip(axes[0], zones):
        in_zone = [r for r in positives if r["zone"] == zone]
        for group in sorted({str(r[group_label]) if group_label else "all" for r in in_zone}):
            members = [r for r in in_zone if (str(r[group_label]) if group_label else "all") == group]
            lengths = sorted({r["measured_length_s"] for r in members})
            shares = [_share([r for r in members if r["measured_length_s"] == x], lambda r: r["outcome"] == "correct")
                      for x in lengths]
            accuracy = [100 * share if share is not None else float("nan") for share in shares]
            ax.plot(lengths, accuracy, marker="o", label=group)
        ax.set_title(zone)
        ax.set_xlabel("excerpt length (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    axes[0][0].set_ylim(0, 103)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def plot_score_distribution(rows: Sequence[dict[str, Any]], png_path: str | os.PathLike[str]) -> None:
    """Histograms of the best candidate's score: true excerpts (best track right), negatives, one panel per zone.

    The margin a user can see: where the negatives' scores end and the positives' begin, against
    the calibrated rule's ``-log10 alpha`` (a dashed line at 3, ``alpha = 1e-3``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zones = list(dict.fromkeys(r["zone"] for r in rows))
    fig, axes = plt.subplots(1, len(zones), figsize=(4 * len(zones), 3.6), sharey=True, squeeze=False)
    scores = [float(r["score"]) for r in answered(rows)]
    edges = np.linspace(0.0, max([*scores, 3.0]) + 1.0, 41)
    for ax, zone in zip(axes[0], zones):
        in_zone = [r for r in answered(rows) if r["zone"] == zone]
        positives = [float(r["score"]) for r in in_zone if r["true_track"] and r["best_is_true"]]
        negatives = [float(r["score"]) for r in in_zone if not r["true_track"]]
        ax.hist(positives, bins=edges, alpha=0.6, label=f"true excerpts ({len(positives)})")
        ax.hist(negatives, bins=edges, alpha=0.6, label=f"not stored ({len(negatives)})")
        ax.axvline(3.0, color="k", linestyle="--", linewidth=1)
        ax.set_title(zone)
        ax.set_xlabel("score of the best candidate (-log10 p)")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("queries")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` with ``columns`` first, then any other keys, in order."""
    extra = [k for k in (rows[0] if rows else {}) if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*columns, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def run_eval(
    store: Catalogue,
    queries_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    zones: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    rule: DecisionRule = DecisionRule(),  # noqa: B008 (frozen dataclass: an immutable default)
    on_start: Callable[[int], None] | None = None,
    on_query: Callable[[str], None] | None = None,
    evidence: Evidence = ROBUST,
) -> EvalOutcome:
    """Read the queries, evaluate them, write ``per_query.csv``, ``summary.csv`` and the two plots.

    The plots are ``accuracy_vs_length.png`` and ``score_distribution.png`` (the best score of true
    excerpts and of negatives).

    Parameters
    ----------
    store : Catalogue
    queries_csv : path-like
    out_dir : path-like
        Created if needed.
    zones, rule, on_query, evidence
        As in :func:`evaluate_queries`.
    labels : sequence of str or None
        As in :func:`read_queries`.
    on_start : callable(int) or None
        Called with the number of queries before the first one runs.

    Returns
    -------
    outcome : EvalOutcome
        ``failures`` holds the one-line reason of each query that could not be matched.
    """
    queries, chosen = read_queries(queries_csv, labels)
    if on_start is not None:
        on_start(len(queries))
    rows = evaluate_queries(store, queries, zones=zones, rule=rule, on_query=on_query, evidence=evidence)
    summary = summarise(rows, chosen)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = EvalOutcome(out / "per_query.csv", out / "summary.csv", out / "accuracy_vs_length.png",
                          out / "score_distribution.png", rows, summary, chosen,
                          list(dict.fromkeys(r["error"] for r in rows if r["outcome"] == FAILED)))
    write_csv(outcome.per_query_csv, rows, PER_QUERY_COLUMNS[:2] + tuple(chosen) + PER_QUERY_COLUMNS[2:])
    write_csv(outcome.summary_csv, summary, ("zone", *chosen, *SUMMARY_COLUMNS[1:]))
    group = "degradation" if "degradation" in chosen else next((c for c in chosen if c != "length_s"), None)
    plot_accuracy_vs_length(rows, outcome.plot_png, group_label=group)
    plot_score_distribution(rows, outcome.scores_png)
    return outcome
