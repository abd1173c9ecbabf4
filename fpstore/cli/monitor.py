"""``fpstore monitor``: what plays when in a long recording or a live stream, segment by segment."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from fpstore.cli.options import (
    EXIT_SOME_FILES_FAILED,
    cli_state,
    evidence_from_options,
    evidence_options,
    match_options,
    with_store,
)
from fpstore.monitor import (
    DEFAULT_HOP_S,
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_WINDOWS,
    DEFAULT_TOLERANCE_FRAMES,
    DEFAULT_WINDOW_S,
)
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.contract import Catalogue
    from fpstore.matching.evidence import Null
    from fpstore.monitor import MonitorSummary, Segment, WindowAnswer


#: Columns of ``monitor --csv``, one row a segment (the :class:`fpstore.monitor.Segment` fields).
MONITOR_CSV_COLUMNS = ("start_s", "end_s", "track_id", "file_name", "track_start_s", "track_end_s", "votes", "windows",
                       "speed", "chance_p", "cut_short")


class MonitorStopped(KeyboardInterrupt):
    """SIGTERM reached ``monitor``: it stops as on Ctrl-C, telling the open segment first."""


@click.command("monitor")
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True,
                type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--window", "window_s", type=click.FloatRange(0, min_open=True), default=DEFAULT_WINDOW_S,
              show_default=True, help="Seconds of audio matched at a time.")
@click.option("--hop", "hop_s", type=click.FloatRange(0, min_open=True), default=DEFAULT_HOP_S, show_default=True,
              help="Seconds between window starts, at most --window (shorter: more lookups).")
@match_options
@evidence_options
@click.option("--tolerance", "tolerance_frames", type=click.IntRange(0), default=DEFAULT_TOLERANCE_FRAMES,
              show_default=True,
              help="Frames a segment's alignment may move from one window to the next.")
@click.option("--max-gap", type=click.IntRange(0), default=DEFAULT_MAX_GAP, show_default=True,
              help="Windows in a row a segment may span that neither continue it nor name anything.")
@click.option("--min-windows", type=click.IntRange(1), default=DEFAULT_MIN_WINDOWS, show_default=True,
              help="Fewest windows a segment needs to be printed (a lone window is mostly a chance match).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per segment (the summary on stderr).")
@click.option("--csv", "as_csv", is_flag=True, help="Print a CSV log: a header, then one row per segment.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Streams monitored at once, each in a process of its own (with several SOURCEs).")
@click.pass_context
@with_store
def monitor_command(ctx: click.Context, store: Catalogue, sources: tuple[str, ...], window_s: float, hop_s: float, zone: str,
                    min_votes: int | None, min_ratio: float, alpha: float | None, null: Null, plain: bool,
                    count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                    pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None,
                    whitened_look: bool | None, dereverberated_look: bool | None,
                    tolerance_frames: int, max_gap: int, min_windows: int, as_json: bool, as_csv: bool,
                    jobs: int) -> None:
    """Follow a long recording or a live stream (SOURCE, or - for standard input) and tell what plays when.

    The audio is decoded as files are (mono, the database's sample rate) and cut into windows. A window
    no segment explains is matched as `fpstore match` matches a query (the same evidence options and
    rule: shifts, speed factors, --alpha); a named track opens a segment at its alignment and speed, and
    each next window is first tested against that track and speed alone, so a steady segment costs one
    cheap test a window and a section the track repeats does not split it. A segment starts and ends
    where its track's aligned hashes begin and end in the stream, and is printed (one line, a JSON
    object with --json, a CSV row with --csv) as soon as it has ended: stream time range -> track, the
    part of the track played, its speed, the best window's aligned hashes and chance probability, the
    windows. On Ctrl-C, SIGTERM or at the end of the stream the open segment is printed too (marked cut
    short if the track was still playing), then a summary line (on stderr with --json or --csv). -v
    prints every window's answer on stderr. Standard input is read as it arrives (WAV, also of unknown
    length, or anything libsndfile reads from a pipe).

    Several SOURCEs (files) are monitored --jobs at a time, each in a process of its own: every line
    starts with its stream's name (a "stream" field with --json, a first "stream" column with --csv),
    and each stream ends with its own summary line.

    \b
    Example:
      fpstore monitor radio_recording.mp3 --csv > log.csv
      ffmpeg -loglevel error -i https://radio.example/stream -f wav - | fpstore monitor - --json
      fpstore monitor station1.mp3 station2.mp3 station3.mp3 --jobs 2 --json
    """
    from fpstore.matching.evidence import DecisionRule
    from fpstore.monitor import WINDOW_EVIDENCE, StreamMonitor

    if hop_s > window_s:
        raise click.BadParameter(f"{hop_s:g} s is longer than --window ({window_s:g} s)", param_hint="--hop")
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    options: dict[str, Any] = {
        "window_s": window_s, "hop_s": hop_s, "zone": zone, "rule": DecisionRule(min_votes, min_ratio, alpha, null),
        "evidence": evidence_from_options(plain, count, shifts, speeds, tolerance, WINDOW_EVIDENCE,
                                          pool_speeds=pool_speeds, merge_first=merge_first, whitened=whitened,
                                          whitened_look=whitened_look, dereverberated_look=dereverberated_look),
        "tolerance_frames": tolerance_frames, "max_gap": max_gap, "min_windows": min_windows}
    if len(sources) > 1:
        if "-" in sources:
            raise click.BadParameter("standard input (-) is monitored alone", param_hint="SOURCE")
        StreamMonitor(store, **options)  # a bad option or an empty database: one error, before any process starts
        _monitor_several(ctx, store, sources, jobs, options, as_json, as_csv)
        return
    _monitor_one(ctx, store, sources[0], options, as_json, as_csv)


def _monitor_one(ctx: click.Context, store: Catalogue, source: str, options: dict[str, Any], as_json: bool,
                 as_csv: bool) -> None:
    """One stream, here: its segments as they end, its summary line last."""
    import signal

    from fpstore.monitor import StreamMonitor, audio_blocks

    session = StreamMonitor(store, **options, on_window=echo_window if cli_state(ctx).verbose else None,
                            read_ahead=os.path.isfile(source))  # not a live stream: nothing waits for the next window
    blocks = audio_blocks(source, store.params(duration_s=None).sample_rate, stdin=sys.stdin.buffer)
    writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
    if writer is not None:
        writer.writerow(MONITOR_CSV_COLUMNS)

    def tell(segments: Iterable[Segment]) -> None:
        for segment in segments:
            if writer is not None:
                writer.writerow([getattr(segment, column) for column in MONITOR_CSV_COLUMNS])
                sys.stdout.flush()
            else:
                click.echo(json.dumps(segment_json(segment)) if as_json else segment_line(segment))

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise MonitorStopped

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    status = 0
    try:
        try:
            tell(session.run(blocks))
        except KeyboardInterrupt as stop:
            status = 128 + (signal.SIGTERM if isinstance(stop, MonitorStopped) else signal.SIGINT)
            tell(session.stop())
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(summary_line(session.summary()), err=as_json or as_csv)
    if status:
        ctx.exit(status)


def _monitor_several(ctx: click.Context, store: Catalogue, sources: tuple[str, ...], jobs: int, options: dict[str, Any],
                     as_json: bool, as_csv: bool) -> None:
    """Several streams, ``jobs`` at a time (:func:`fpstore.monitor.monitor_streams`): each line names its stream."""
    import signal

    from fpstore.monitor import monitor_streams

    writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
    if writer is not None:
        writer.writerow(("stream", *MONITOR_CSV_COLUMNS))

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise MonitorStopped

    verbose = cli_state(ctx).verbose
    failed, status = 0, 0
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        events = monitor_streams(store.url_with_password(), sources, jobs=jobs,
                                 windows=bool(verbose), **options)
        try:
            for event in events:
                if event.segment is not None and writer is not None:
                    writer.writerow([event.source, *(getattr(event.segment, c) for c in MONITOR_CSV_COLUMNS)])
                    sys.stdout.flush()
                elif event.segment is not None:
                    click.echo(json.dumps({"stream": event.source, **segment_json(event.segment)}) if as_json
                               else f"{event.source}: {segment_line(event.segment)}")
                elif event.window is not None:
                    echo_window(event.window, f"{event.source}: ")
                elif event.summary is not None:
                    click.echo(f"{event.source}: {summary_line(event.summary)}", err=as_json or as_csv)
                else:
                    failed += 1
                    click.echo(f"failed: {event.error}", err=True)
        except KeyboardInterrupt as stop:
            status = 128 + (signal.SIGTERM if isinstance(stop, MonitorStopped) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status or failed:
        ctx.exit(status or EXIT_SOME_FILES_FAILED)


def _clock(seconds: float) -> str:
    """``h:mm:ss.s``, for stream and track times (a window may begin before its track: ``-0:00:03.2``)."""
    tenths = round(abs(seconds) * 10)
    return f"{'-' if seconds < 0 and tenths else ''}{tenths // 36000}:{tenths // 600 % 60:02d}:{tenths % 600 / 10:04.1f}"


def segment_line(segment: Segment) -> str:
    """One segment as a line: stream times -> track, the part of it played, speed, votes, chance, windows."""
    speed = "" if segment.speed == 1.0 else f", speed {segment.speed:g}"
    return (f"{_clock(segment.start_s)}-{_clock(segment.end_s)} -> {segment.file_name} (id {segment.track_id}) "
            f"{_clock(segment.track_start_s)}-{_clock(segment.track_end_s)}{speed}, votes {segment.votes}, "
            f"p {segment.chance_p:.1g}, {segment.windows} window{'' if segment.windows == 1 else 's'}"
            f"{', cut short' if segment.cut_short else ''}")


def segment_json(segment: Segment) -> dict[str, object]:
    """One segment as JSON values (``--json``): floats rounded to 2 decimals, the chance to 2 digits."""
    return {key: float(f"{value:.2g}") if key == "chance_p" else round(value, 2) if isinstance(value, float) else value
            for key, value in dataclasses.asdict(segment).items()}


def summary_line(summary: MonitorSummary) -> str:
    """The last line: stream length, segments, time named and unknown."""
    share = 100 * summary.named_s / summary.stream_s if summary.stream_s else 0.0
    return (f"monitored {_clock(summary.stream_s)}: {counted(summary.segments, 'segment')}, "
            f"{_clock(summary.named_s)} named ({share:.1f} %), {_clock(summary.unknown_s)} unknown")


def echo_window(answer: WindowAnswer, prefix: str = "") -> None:
    """One window's answer on stderr (``-v``), after ``prefix``."""
    span = f"{prefix}window {_clock(answer.start_s)}-{_clock(answer.end_s)}"
    if answer.track_id is None:
        click.echo(f"{span}: unknown (best {answer.votes} votes)", err=True)
    else:
        how = "continues" if answer.continued else "names"
        speed = "" if answer.speed == 1.0 else f" at speed {answer.speed:g}"
        click.echo(f"{span}: {how} {answer.file_name} (id {answer.track_id}) from {_clock(answer.offset_s)}{speed}, "
                   f"{answer.votes} votes", err=True)
