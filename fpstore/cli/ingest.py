"""``fpstore ingest`` and ``fpstore example-audio``: audio files into the catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from fpstore.cli.options import (
    EXIT_SOME_FILES_FAILED,
    duplicate_options,
    fingerprint_options,
    fingerprint_settings,
    progress,
    with_store,
)
from fpstore.db.compact import DEFAULT_MAX_PARTITIONS
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.duplicates import OnDuplicate, OnExcerpt
    from fpstore.ingest import IngestSummary


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@fingerprint_options
@click.option("--force", is_flag=True, help="Re-ingest files whose content is already stored.")
@click.option("-j", "--jobs", type=click.IntRange(1), help="Worker processes [all cores].")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some files could not be read.")
@click.option("--batch-postings", type=click.IntRange(1), default=2_000_000, show_default=True,
              help="Commit a batch of tracks once it holds this many postings (bounds memory).")
@click.option("--scheduler", metavar="ADDRESS",
              help="A dask.distributed scheduler (tcp://host:8786): its workers fingerprint and write the files "
                   "(they must see them under the same paths).")
@click.option("--max-partitions", type=click.IntRange(0), default=DEFAULT_MAX_PARTITIONS, show_default=True,
              help="At the end, merge partitions of the postings (each bulk ingest adds one) while there are more "
                   "than this, into sorted ones (size-tiered); 0: never (`fpstore db compact` merges all by hand).")
@duplicate_options
@click.pass_context
@with_store
def ingest_command(ctx: click.Context, /, store: Catalogue, paths: tuple[str, ...], zones: tuple[str, ...], force: bool,
                   jobs: int | None, allow_failures: bool, batch_postings: int, scheduler: str | None,
                   max_partitions: int, on_duplicate: OnDuplicate, duplicate_min_ratio: float,
                   on_excerpt: OnExcerpt, **options: Any) -> None:
    """Fingerprint the audio files under PATHS (folders and files) and store the new ones.

    Audio files (.mp3 .wav .flac .ogg .opus .m4a .aac .aiff and every other extension the decoders read,
    any case) are found recursively and taken in sorted order; the other files are counted in one line.
    Whole files are stored; --duration 30 stores the first 30 s of each, as the notebook did. PATHS
    holding no audio file are an error (exit 1) and no run is recorded.
    A file whose content is already stored is skipped unless --force (which replaces it, e.g. with
    another --duration).
    A file whose fingerprint duplicates a stored track (the same recording re-encoded, resampled, or
    imported from a pickle: hashes aligned over most of both) is reported and skipped, kept or made to
    replace it (--on-duplicate); one that is an excerpt of a stored track, or holds one (a clip and its
    whole track), is stored with a line naming the other track and where (--on-excerpt skip skips it).
    It is compared with the tracks written before it, not with copies in its own batch (`fpstore tracks
    duplicates` finds those).
    At the end, once its tracks are stored, a catalogue whose postings have more than --max-partitions
    partitions has some merged into sorted ones (matching goes on meanwhile; other ingests wait), and a
    line says so.

    \b
    Example:
      fpstore ingest ~/music --jobs 2
      fpstore ingest one.wav two.flac clips/ --duration 30   # the notebook's 30 s cut
      fpstore ingest ~/music/flac --on-duplicate replace
      fpstore --db postgresql://fp@router/fp ingest /shared/music --scheduler tcp://dask-head:8786
    """
    from fpstore.ingest import ingest

    settings = fingerprint_settings(ctx, zones, options)
    with progress(ctx) as (on_start, on_file):
        summary = ingest(store, paths, settings.params, force=force, jobs=jobs, batch_postings=batch_postings,
                         on_duplicate=on_duplicate, duplicate_min_ratio=duplicate_min_ratio, on_excerpt=on_excerpt,
                         on_file=on_file, on_start=on_start, scheduler=scheduler, on_progress=lambda: on_file(None),
                         max_partitions=max_partitions)
    click.echo(format_ingest_summary(summary))
    if summary.tracks_failed and not allow_failures:
        ctx.exit(EXIT_SOME_FILES_FAILED)


def format_ingest_summary(summary: IngestSummary) -> str:
    """What ``fpstore ingest`` prints at the end: files, tracks, failures, postings per zone."""
    runs = f"run {summary.run_id}"
    if summary.shard_run_ids:
        runs = "runs " + ", ".join("-" if i is None else str(i) for i in summary.shard_run_ids) + " (one per shard)"
    lines = [
        f"{runs}: {counted(summary.files_seen, 'file')}: {summary.tracks_added} added, "
        f"{summary.tracks_skipped} skipped, {summary.tracks_failed} failed in {summary.elapsed_s:.1f} s",
    ]
    if summary.other_extensions:
        extensions = ", ".join(ext or "no extension" for ext in summary.other_extensions)
        lines.append(f"skipped {counted(sum(summary.other_extensions.values()), 'file')} with other extensions "
                     f"({extensions})")
    if summary.duration_s is not None:
        lines.append(f"stored the first {summary.duration_s:g} s of each file (--duration {summary.duration_s:g}): "
                     f"{summary.tracks_cut} of {counted(summary.tracks_added, 'track')} added were cut there; "
                     "--duration full stores whole files")
    lines.append("postings added per zone:")
    lines += [f"  {zone:<16} {count:>12,}" for zone, count in summary.postings_by_zone.items()]
    lines.append(f"  {'total':<16} {summary.postings:>12,}")
    lines += [f"merged {merged.partitions_merged} partitions of the postings into {merged.partitions_made} sorted "
              f"({counted(merged.postings, 'posting')}) in {merged.seconds:.1f} s: {merged.partitions_now} now"
              for merged in summary.merges]
    lines += [f"partitions not merged (left as they were): {failure}" for failure in summary.merge_failures]
    return "\n".join(lines)


@click.command("example-audio")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--tracks", "n_tracks", type=click.IntRange(1, 99), default=5, show_default=True,
              help="How many tunes to write.")
@click.option("--seconds", "duration_s", type=click.FloatRange(0.1, 600), default=30.0, show_default=True,
              help="Length of each tune.")
@click.option("--clip", "clip_path", type=click.Path(dir_okay=False),
              help="Also write a query to match: 8 s of the third tune (the last if fewer) from 0:12, with noise "
                   "at 10 dB SNR. Put it outside FOLDER, so that ingest does not store it.")
def example_audio_command(folder: str, n_tracks: int, duration_s: float, clip_path: str | None) -> None:
    """Write synthetic example tunes (WAV) into FOLDER, to try fpstore without music at hand.

    \b
    Example:
      fpstore example-audio examples --tracks 5
      fpstore example-audio examples --clip clip.wav && fpstore ingest examples && fpstore match clip.wav
    """
    from fpstore.signal.synth import write_example_audio, write_example_clip

    paths = write_example_audio(folder, n_tracks=n_tracks, duration_s=duration_s)
    click.echo(f"wrote {counted(len(paths), 'file')} to {folder}")
    if clip_path is not None:
        track = min(3, n_tracks)
        write_example_clip(clip_path, track=track, tune_duration_s=duration_s)
        click.echo(f"wrote {clip_path}: an excerpt of example_{track:02d}.wav with noise, to match")
