"""``fpstore tracks``: list, show and remove tracks, and find copies of one recording."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from fpstore.cli.options import echo_json, json_option, with_store
from fpstore.duplicates import DEFAULT_MIN_RATIO as DEFAULT_DUPLICATE_RATIO
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.duplicates import DuplicateListing

#: Tracks named in the prompt of ``tracks remove``; more are counted.
PROMPT_NAMES = 10


@click.group("tracks")
def tracks_group() -> None:
    """List, inspect and remove tracks, and find copies of one recording.

    \b
    Example:
      fpstore tracks list --name '*intro*'
      fpstore tracks show example_02.wav
      fpstore tracks duplicates
    """


@tracks_group.command("list")
@click.option("--name", metavar="PATTERN", help="File names matching PATTERN (* and ?, any letter case).")
@click.option("--run", "run_id", type=int, help="Tracks added by this run.")
@click.option("--min-postings", type=click.IntRange(0), help="At least this many postings.")
@click.option("--max-postings", type=click.IntRange(0), help="At most this many postings.")
@click.option("--limit", type=click.IntRange(1), help="Show at most this many (counts cover all matches).")
@json_option
@click.pass_context
@with_store
def tracks_list(ctx: click.Context, store: Catalogue, name: str | None, run_id: int | None, min_postings: int | None,
                max_postings: int | None, limit: int | None, as_json: bool) -> None:
    """List tracks in id order, with their postings, and count the matches.

    \b
    Example:
      fpstore tracks list --name 'track00*' --min-postings 1000 --limit 20
    """
    listing = store.tracks.search(name=name, run_id=run_id, min_postings=min_postings,
                          max_postings=max_postings, limit=limit)
    if as_json:
        echo_json(dataclasses.asdict(listing))
        return
    if listing.tracks:
        width = max(len(t["file_name"]) for t in listing.tracks)
        click.echo(f"{'id':>6}  {'file_name':<{width}}  {'duration_s':>10}  {'postings':>9}  {'run':>4}")
        for t in listing.tracks:
            click.echo(f"{t['id']:>6}  {t['file_name']:<{width}}  {t['duration_s']:>10.1f}  "
                       f"{t['n_postings']:>9,}  {t['run_id']:>4}")
    click.echo(f"{listing.n_matching} of {counted(listing.n_total, 'track')} match, "
               f"{counted(listing.postings_matching, 'posting')}")


@tracks_group.command("show")
@click.argument("track")
@json_option
@click.pass_context
@with_store
def tracks_show(ctx: click.Context, store: Catalogue, track: str, as_json: bool) -> None:
    """Statistics of one track (by id, or by a file name only one track has).

    Reads the track's postings with one scan of the hashes table (it has no index on track_id).
    shared_hashes counts the track's distinct hashes that some other track has in the same zone.

    \b
    Example:
      fpstore tracks show 3
      fpstore tracks show track003.mp3 --json
    """
    info = store.tracks.show(track)
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        if key != "zones":
            click.echo(f"{key + ':':<14} {value}")
    click.echo(f"{'zone':<16} {'postings':>9} {'unique':>8} {'shared':>8} {'anchors (frames)':>17} {'per s':>7}")
    for z in info["zones"]:
        span = f"{z['first_anchor']}..{z['last_anchor']}" if z["postings"] else "-"
        rate = f"{z['postings_per_s']:.1f}" if z["postings_per_s"] is not None else "-"
        click.echo(f"{z['zone']:<16} {z['postings']:>9,} {z['unique_hashes']:>8,} {z['shared_hashes']:>8,} "
                   f"{span:>17} {rate:>7}")


@tracks_group.command("duplicates")
@click.option("--zone", default="all", show_default=True,
              help="Compare in this zone only (faster on a big database), or 'all' zones.")
@click.option("--min-ratio", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_DUPLICATE_RATIO,
              show_default=True, help="Share of the larger track's hashes aligned at one offset for a duplicate "
                                      "(an excerpt needs 2 % of the shorter one's).")
@json_option
@click.pass_context
@with_store
def tracks_duplicates(ctx: click.Context, store: Catalogue, zone: str, min_ratio: float, as_json: bool) -> None:
    """List stored tracks that are copies of one recording, the groups they form, and excerpts.

    Two tracks are duplicates when their hashes align at one offset over most of both (80 % of each
    one's duration) and ratio = aligned hashes / hashes of the larger track reaches --min-ratio. A
    track that lies inside a longer one (a clip and its whole track) is listed as an excerpt of it, at
    the time it starts there, when aligned hashes / hashes of the shorter track reach 2 %.
    Computed in the database by one statement (a self-join of hashes on zone and hash) over a fixed
    eighth of the hash values; a hash with more than 32 postings is left out. offset: where the first
    track starts in the second, in seconds. Scans the whole hashes table: minutes on a big catalogue.

    \b
    Example:
      fpstore tracks duplicates
      fpstore tracks duplicates --zone Fsmall_Tlong --min-ratio 0.5 --json
    """
    from fpstore.duplicates import find_duplicates

    listing = find_duplicates(store, zone=zone, min_ratio=min_ratio)
    if as_json:
        echo_json(dataclasses.asdict(listing))
        return
    click.echo(format_duplicates(listing))


def format_duplicates(listing: DuplicateListing) -> str:
    """The pairs of copies, their groups and the excerpts, one line each, then a count."""
    from fpstore.duplicates import minutes

    lines = [f"{p.ratio:>6.0%}  track {p.track_a} ({p.file_a}) = track {p.track_b} ({p.file_b}), "
             f"{p.n_aligned:,} hashes aligned, offset {p.offset_frames * listing.seconds_per_frame:+.2f} s"
             for p in listing.pairs]
    lines += [f"group: tracks {', '.join(map(str, group))}" for group in listing.groups if len(group) > 2]
    for p in listing.excerpts:
        offset_s = p.offset_frames * listing.seconds_per_frame
        short, long = ((p.track_a, p.file_a), (p.track_b, p.file_b))
        if p.duration_a_s > p.duration_b_s:
            short, long, offset_s = long, short, -offset_s
        lines.append(f"{p.containment:>6.0%}  track {short[0]} ({short[1]}) is an excerpt of track {long[0]} ({long[1]}) "
                     f"at {minutes(offset_s)}, {p.n_aligned:,} hashes aligned")
    lines.append(f"{len(listing.pairs)} pairs in {len(listing.groups)} groups with at least {listing.min_ratio:.0%} "
                 f"of hashes aligned (zone {listing.zone})"
                 + (f"; {counted(len(listing.excerpts), 'excerpt')}" if listing.excerpts else ""))
    return "\n".join(lines)


@tracks_group.command("remove")
@click.argument("track_ids", nargs=-1, required=True, type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--vacuum", is_flag=True, help="Run VACUUM (ANALYZE) on hashes and tracks afterwards.")
@click.pass_context
@with_store
def tracks_remove(ctx: click.Context, store: Catalogue, track_ids: tuple[int, ...], yes: bool, vacuum: bool) -> None:
    """Remove tracks and all their postings, in one transaction.

    hashes has no index on track_id (to save its bytes), so each call scans hashes once: give many
    ids in one call rather than one call per id. After removing more than 10% of all postings, run
    VACUUM (ANALYZE) hashes (or pass --vacuum) so the space is reused and the planner's statistics
    are fresh. Unknown ids remove nothing.

    \b
    Example:
      fpstore tracks remove 12 13 14 --yes
    """
    if not yes:
        confirm_removal(store, sorted(set(track_ids)))
    removal = store.tracks.remove(track_ids, vacuum_after=vacuum)
    click.echo(f"removed {counted(len(removal.track_ids), 'track')} and {counted(removal.postings_removed, 'posting')} "
               f"({100 * removal.share_removed:.1f}% of all postings)" + (", then vacuumed" if removal.vacuumed else ""))
    if removal.vacuum_advised:
        click.echo("advice: that is more than 10% of the hashes table; run "
                   "`fpstore db shell -- -c 'VACUUM (ANALYZE) hashes'` "
                   "(or use --vacuum next time) so PostgreSQL reuses the space and plans with fresh statistics",
                   err=True)


def confirm_removal(store: Catalogue, track_ids: list[int]) -> None:
    """Ask before removing, naming the tracks; a "no" is an error (exit 1) that removed nothing.

    With an unknown id there is nothing to ask: the removal itself refuses it, naming the id.
    """
    names = store.tracks.names(track_ids)
    if len(names) < len(track_ids):
        return
    shown = [f"{track_id} {names[track_id]}" for track_id in track_ids[:PROMPT_NAMES]]
    if len(track_ids) > PROMPT_NAMES:
        shown.append(f"and {len(track_ids) - PROMPT_NAMES} more")
    if not click.confirm(f"Remove {counted(len(track_ids), 'track')} ({', '.join(shown)}) and all their postings?"):
        raise click.ClickException("removal declined: nothing removed")
