"""``fpstore match`` (name the track of each query) and ``fpstore eval`` (score the answers to a table of queries)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from fpstore.cli.options import (
    EXIT_SOME_FILES_FAILED,
    evidence_from_options,
    evidence_options,
    match_options,
    progress,
    with_store,
)
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.matching.evidence import Null
    from fpstore.matching.results import Candidate, MatchResult


@click.command("match")
@click.argument("queries", nargs=-1, required=True, type=click.Path(allow_dash=True))
@match_options
@click.option("--top", "top_k", type=click.IntRange(1), default=2, show_default=True,
              help="Tracks listed per query (the runner-up still weighs in the confidence when not listed).")
@click.option("--sql", "use_sql", is_flag=True,
              help="Vote with the SQL functions: fpstore_match_tracks (with --null poisson fpstore_match_anchors, "
                   "or fpstore_match_zones for pairs).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per query (with \"error\" for a failed one).")
@evidence_options
@click.pass_context
@with_store
def match_command(ctx: click.Context, store: Catalogue, queries: tuple[str, ...], zone: str, min_votes: int | None,
                  min_ratio: float, alpha: float | None, null: Null, top_k: int, use_sql: bool, as_json: bool, plain: bool,
                  count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                  pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None,
                  whitened_look: bool | None, dereverberated_look: bool | None) -> None:
    """Name the stored track each audio query is an excerpt of, and where it starts.

    QUERIES are audio files, folders (walked as ingest walks them) and '-' (audio of any format on
    standard input). Each file is decoded whole and fingerprinted with the database's parameters; the
    distinct stored anchors of its hashes vote for (track, offset) bins. When the query as it is names
    nothing, it is tried again at four sub-hop shifts, then at speeds of +-1, 2, 3 % (each a test), then
    with its peaks picked on a whitened spectrogram.
    Each answer carries its score, -log10 of the chance that unrelated audio gives the track that much
    evidence (3 = one in a thousand); a best track whose chance is not below --alpha (or, with
    --min-votes, with fewer votes), or not --min-ratio times the runner-up, is reported as "no match".
    A query that cannot be read gets `failed: <reason>` on stderr and the rest go on; the exit status
    is then 3.

    \b
    Example:
      fpstore match query.wav
      fpstore match --zone Flarge_Tlong --top 5 --json q1.wav q2.mp3 queries/
      fpstore match --plain --min-votes 15 query.wav   # the notebook's vote
      ffmpeg -i clip.m4a -f wav - | fpstore match -
    """
    from fpstore.matching.evidence import DecisionRule
    from fpstore.matching.matcher import match_queries

    some_failed = False
    evidence = evidence_from_options(plain, count, shifts, speeds, tolerance, pool_speeds=pool_speeds,
                                     merge_first=merge_first, whitened=whitened, whitened_look=whitened_look,
                                     dereverberated_look=dereverberated_look)
    for result in match_queries(store, queries, zone=zone, top_k=top_k, rule=DecisionRule(min_votes, min_ratio, alpha, null),
                                method="sql" if use_sql else "python", stdin=getattr(sys.stdin, "buffer", None),
                                evidence=evidence):
        some_failed = some_failed or result.error is not None
        if as_json:
            click.echo(json.dumps(result.as_json()))
        elif result.error is not None:
            click.echo(f"failed: {result.error}", err=True)
        else:
            click.echo(match_line(result, top_k))
    if some_failed:
        ctx.exit(EXIT_SOME_FILES_FAILED)


def match_line(result: MatchResult, top_k: int) -> str:
    """What ``fpstore match`` prints for an answered query: the track named (or "no match"), the runner-up."""

    def name(c: Candidate) -> str:
        return f"{c.file_name} (id {c.track_id})"

    best, runner = result.best, result.runner_up
    # With --top 1 the runner-up is not listed (it still weighs in the confidence).
    runner_text = ("" if top_k == 1
                   else f"runner-up {name(runner)} {counted(runner.votes, 'vote')} score {runner.score:.1f}" if runner
                   else "no runner-up")
    if result.match is None:
        head = f"{result.query}: no match"
        if best is not None:
            head += f" (best {name(best)} {counted(best.votes, 'vote')} score {best.score:.1f}" + (
                f", {runner_text})" if runner_text else ")")
    else:
        named = result.match  # the best candidate, accepted
        head = (f"{result.query}: {name(named)} votes {named.votes} score {named.score:.1f} "
                f"confidence {result.confidence:.2f} offset {named.offset_s:.2f} s"
                + (f" speed {result.speed:g}" if result.speed != 1.0 else "")
                + (f"; {runner_text}" if runner_text else ""))
    more = [f"  {rank}. {name(c)} votes {c.votes} score {c.score:.1f} offset {c.offset_s:.2f} s"
            for rank, c in enumerate(result.candidates, start=1)] if top_k > 2 else []
    return "\n".join([head, *more])


@click.command("eval")
@click.argument("queries_csv", type=click.Path(exists=True, dir_okay=False))
@match_options
@click.option("--all-zones", is_flag=True, help="Evaluate every zone and 'all' (not only --zone).")
@click.option("--label", "labels", multiple=True, metavar="COLUMN",
              help="Group the summary by this column (repeat). Default: every column but file/true_track with few values.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="eval_out", show_default=True,
              help="Folder for per_query.csv, summary.csv, accuracy_vs_length.png and score_distribution.png.")
@evidence_options
@click.pass_context
@with_store
def eval_command(ctx: click.Context, store: Catalogue, queries_csv: str, zone: str, min_votes: int | None, min_ratio: float,
                 alpha: float | None, null: Null, all_zones: bool, labels: tuple[str, ...], out_dir: str, plain: bool,
                 count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                 pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None,
                 whitened_look: bool | None, dereverberated_look: bool | None) -> None:
    """Run every query of QUERIES_CSV and score the answers.

    QUERIES_CSV has columns file (relative to the CSV's folder), true_track (a stored track's file
    name or its stem; empty for a query not in the database) and label columns. Writes a per-query
    CSV, a summary CSV (top-1 accuracy and false-positive rate per zone and label group) and a PNG
    of accuracy against excerpt length per degradation; prints the summary. A query file that cannot
    be matched gets `failed: <reason>` on stderr, a `failed` row in the per-query CSV and no place in
    the rates; the others go on, and the exit status is then 3.

    \b
    Example:
      fpstore eval queries/queries.csv --label degradation --label length_s --out eval_out
      fpstore eval queries/queries.csv --plain --min-votes 15 --out eval_plain
    """
    from fpstore.evaluate import format_summary, run_eval
    from fpstore.matching.evidence import DecisionRule

    evidence = evidence_from_options(plain, count, shifts, speeds, tolerance, pool_speeds=pool_speeds,
                                     merge_first=merge_first, whitened=whitened, whitened_look=whitened_look,
                                     dereverberated_look=dereverberated_look)
    with progress(ctx) as (on_start, on_file):
        outcome = run_eval(store, queries_csv, out_dir, zones=None if all_zones else [zone],
                           labels=list(labels) or None, rule=DecisionRule(min_votes, min_ratio, alpha, null),
                           on_start=on_start, on_query=lambda path: on_file(None), evidence=evidence)
    for reason in outcome.failures:
        click.echo(f"failed: {reason}", err=True)
    click.echo(format_summary(outcome.summary, outcome.labels))
    click.echo(f"wrote {outcome.per_query_csv}, {outcome.summary_csv}, {outcome.plot_png}, {outcome.scores_png}")
    if outcome.failures:
        ctx.exit(EXIT_SOME_FILES_FAILED)
