"""``fpstore import-pickle`` and ``fpstore export-pickle``: the notebook's hash_db.pkl in and out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from fpstore.cli.options import cli_state, duplicate_options, with_store
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.duplicates import OnDuplicate, OnExcerpt
    from fpstore.pickle_io import PickleSummary


def format_pickle_summary(summary: PickleSummary, verbose: int) -> str:
    """Unique hashes and postings per zone (and, with ``verbose``, the seconds of each step)."""
    lines = [f"  {'zone':<16} {'unique hashes':>14} {'postings':>12}"]
    lines += [f"  {zone:<16} {summary.unique_hashes_by_zone[zone]:>14,} {count:>12,}"
              for zone, count in summary.postings_by_zone.items()]
    if verbose:
        lines.append("  seconds: " + ", ".join(f"{step} {s:.3f}" for step, s in summary.seconds.items()))
    return "\n".join(lines)


@click.command("import-pickle")
@click.argument("pickle_path", type=click.Path(exists=True, dir_okay=False))
@duplicate_options
@click.pass_context
@with_store
def import_pickle_command(ctx: click.Context, store: Catalogue, pickle_path: str, on_duplicate: OnDuplicate,
                          duplicate_min_ratio: float, on_excerpt: OnExcerpt) -> None:
    """Load the notebook's hash_db.pkl (meta, tracks, index) into the database, as one run.

    The pickle's parameters become the profile of an empty database, or must equal the database's.
    The pickle holds no audio digest: each track gets SHA-256("fpstore-import:" + the pickle file's
    SHA-256 + its id + its name), so the tracks of a file imported before are skipped. A track that
    duplicates a stored one by content (an export of this database, the same audio ingested) is
    reported and skipped, kept or made to replace it (--on-duplicate). Only dicts, lists, numbers and
    strings are unpickled; anything else is refused.

    \b
    Example:
      fpstore import-pickle task1_hash_db/hash_db.pkl
    """
    from fpstore.pickle_io import import_seed_pickle

    summary = import_seed_pickle(store, pickle_path, on_duplicate=on_duplicate,
                                 duplicate_min_ratio=duplicate_min_ratio, on_excerpt=on_excerpt)
    for name, note in summary.duplicates:
        click.echo(f"{pickle_path}: {name}: {note}", err=True)
    click.echo(f"run {summary.run_id}: imported {counted(summary.n_tracks, 'track')} and "
               f"{counted(summary.postings, 'posting')} from {summary.path}"
               + (f", skipped {summary.n_skipped} already stored" if summary.n_skipped else ""))
    if not cli_state(ctx).quiet:
        click.echo(format_pickle_summary(summary, cli_state(ctx).verbose))


@click.command("export-pickle")
@click.argument("out_path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT_PATH if it exists.")
@click.pass_context
@with_store
def export_pickle_command(ctx: click.Context, store: Catalogue, out_path: str, force: bool) -> None:
    """Write the database as the notebook's hash_db.pkl, for its loading and statistics cells.

    Track ids become 0..n-1 in database id order. The notebook packs a posting into 16 bits of track
    id and 16 bits of anchor frame: a database with more than 65536 tracks, or an anchor at frame
    65536 or later (about 50 minutes at hop 1024, 22050 Hz), is refused rather than truncated.

    \b
    Example:
      fpstore export-pickle hash_db.pkl
    """
    from fpstore.pickle_io import export_seed_pickle

    summary = export_seed_pickle(store, out_path, overwrite=force)
    click.echo(f"wrote {counted(summary.n_tracks, 'track')} and {counted(summary.postings, 'posting')} "
               f"to {summary.path}")
    if not cli_state(ctx).quiet:
        click.echo(format_pickle_summary(summary, cli_state(ctx).verbose))
