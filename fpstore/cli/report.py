"""``fpstore report`` (the catalogue's per-zone statistics) and ``fpstore plot`` (one file's fingerprint drawn)."""

from __future__ import annotations

import csv
import io
import json
import pathlib
from typing import TYPE_CHECKING, Any

import click

from fpstore.cli.options import fingerprint_options, fingerprint_settings, with_store
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.report import Report


@click.command("report")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the per-zone table to this CSV file (the seed's hash_db_report.csv).")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="How to print the report.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
              help="Also write histograms (hashes per track, posting-list lengths per zone) as PNGs here.")
@click.pass_context
@with_store
def report_command(ctx: click.Context, store: Catalogue, csv_path: str | None, output_format: str,
                   plots_dir: str | None) -> None:
    """Per-zone hash counts and storage sizes, computed in the database.

    \b
    Example:
      fpstore report --csv hash_db_report.csv
      fpstore report --plots report_plots
    """
    from fpstore.report import build_report

    report = build_report(store)
    if plots_dir:
        from fpstore.plots import plot_report

        for path in plot_report(store, plots_dir):
            click.echo(f"wrote {path}", err=True)
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            handle.write(zones_csv(report))
    if output_format == "json":
        click.echo(json.dumps({"zones": report.zones, "relations": report.relations,
                               "bytes_per_posting": report.bytes_per_posting}, indent=2))
    elif output_format == "csv":
        click.echo(zones_csv(report), nl=False)
    else:
        click.echo(report_table(report))


def zones_csv(report: Report) -> str:
    """The per-zone table as CSV (the seed's hash_db_report.csv), a header line first."""
    from fpstore.report import ZONE_COLUMNS

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ZONE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.zones)
    return buffer.getvalue()


def report_table(report: Report) -> str:
    """The report as aligned text: the per-zone table, then each relation's size."""
    from fpstore.report import ZONE_COLUMNS

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.2f}"
        return "" if value is None else str(value)

    rows = [list(ZONE_COLUMNS)] + [[cell(row[c]) for c in ZONE_COLUMNS] for row in report.zones]
    widths = [max(len(r[i]) for r in rows) for i in range(len(ZONE_COLUMNS))]
    lines = ["  ".join(value.rjust(w) for value, w in zip(r, widths)) for r in rows]
    lines.append("")
    lines.append(f"{'relation':<28} {'kind':<6} {'bytes':>14}")
    lines += [f"{r['name']:<28} {r['kind']:<6} {r['bytes']:>14,}" for r in report.relations]
    if report.bytes_per_posting is not None:
        lines.append(f"hashes heap + indexes: {report.bytes_per_posting:.1f} bytes per posting")
    return "\n".join(lines)


@click.command("plot")
@click.argument("audio_file", type=click.Path(exists=True, dir_okay=False))
@fingerprint_options
@click.option("-o", "--out", "out_png", type=click.Path(dir_okay=False),
              help="PNG to write [AUDIO_FILE's name with .png, in the current folder].")
@click.option("--pairs-zone", "plot_zone", metavar="NAME", help="Zone whose anchor→target pairs are drawn [the first zone].")
@click.option("--anchors", "n_anchors", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Anchors whose pairs are drawn, spread over the file.")
@click.option("--width", "width_px", type=click.IntRange(100, 10_000), default=1400, show_default=True,
              help="Image width, pixels.")
@click.option("--height", "height_px", type=click.IntRange(100, 10_000), default=700, show_default=True,
              help="Image height, pixels.")
@click.pass_context
def plot_command(ctx: click.Context, /, audio_file: str, zones: tuple[str, ...],
                 out_png: str | None, plot_zone: str | None, n_anchors: int, width_px: int, height_px: int,
                 **options: Any) -> None:
    """Draw AUDIO_FILE's spectrogram with its constellation peaks and a few anchor→target pairs.

    Uses the parameters in force (options, config file, defaults: see `fpstore config show`); no
    database is needed.

    \b
    Example:
      fpstore plot track001.mp3 --pairs-zone Flarge_Tlong --anchors 8 -o track001.png
    """
    from fpstore.plots import plot_fingerprint

    settings = fingerprint_settings(ctx, zones, options)
    out_png = out_png or pathlib.Path(audio_file).with_suffix(".png").name
    counts = plot_fingerprint(audio_file, out_png, settings.params, zone=plot_zone, n_anchors=n_anchors,
                              width_px=width_px, height_px=height_px)
    click.echo(f"wrote {out_png} ({width_px}x{height_px}): {counted(counts['n_frames'], 'frame')}, "
               f"{counted(counts['n_peaks'], 'peak')}, {counts['n_pairs_drawn']} of "
               f"{counted(counts['n_zone_hashes'], 'pair')} drawn")
