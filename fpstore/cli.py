"""The ``fpstore`` command: a thin click layer over the library.

Exit status: 0 success; 1 an error (``Error: ...`` on stderr); 2 a usage error; 3 ingest, match or
eval finished but some files failed (ingest: unless ``--allow-failures``), or ``cluster status`` found a
shard down.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import pathlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

import fpstore
from fpstore.db.access import grant_reader
from fpstore.db.catalogue import open_store
from fpstore.db.clients import accepts_connections, run_psql, serve, url_in_force
from fpstore.db.cluster import ClusterStore, ShardStatus, init_cluster
from fpstore.db.compact import compact
from fpstore.db.maintenance import set_lookup_index
from fpstore.db.store import Store, head_revision
from fpstore.db.urls import libpq_url
from fpstore.duplicates import DEFAULT_MIN_RATIO as DEFAULT_DUPLICATE_RATIO
from fpstore.duplicates import ON_DUPLICATE_CHOICES, ON_EXCERPT_CHOICES, DuplicateListing, find_duplicates, minutes
from fpstore.errors import FpstoreError
from fpstore.ingest import FileEvent, IngestSummary, ingest
from fpstore.monitor import (
    DEFAULT_HOP_S,
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_WINDOWS,
    DEFAULT_TOLERANCE_FRAMES,
    DEFAULT_WINDOW_S,
)
from fpstore.pickle_io import PickleSummary, export_seed_pickle, import_seed_pickle
from fpstore.plots import plot_fingerprint
from fpstore.report import ZONE_COLUMNS, Report, build_report
from fpstore.runtime.config import Settings, parse_zone, resolve_settings, settings_in_force
from fpstore.runtime.wording import counted
from fpstore.signal.audio import display_path
from fpstore.signal.synth import write_example_audio, write_example_clip

if TYPE_CHECKING:
    from fpstore.matching.evidence import Null

EXIT_SOME_FILES_FAILED = 3
#: ``cluster status``: it listed every shard, and some could not answer.
EXIT_SHARD_DOWN = 3
#: Tracks named in the prompt of ``tracks remove``; more are counted.
PROMPT_NAMES = 10

F = TypeVar("F", bound=Callable[..., Any])


class NumberOrWord(click.ParamType[Any]):
    """A number, or the one word that means "no limit" (``none`` or ``full``)."""

    name = "number"

    def __init__(self, cast: type, word: str) -> None:
        self.cast, self.word = cast, word

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Return the word itself, or the value cast to a number; fail with click's usage error otherwise."""
        if isinstance(value, str) and value.strip().lower() == self.word:
            return self.word
        try:
            return self.cast(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a number nor {self.word!r}", param, ctx)


#: The group's options, also taken after the subcommand (``fpstore ingest music -q``): flags, then those with a value.
GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose", "--traceback")
GLOBAL_VALUED = ("--db", "--config")


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the group's options that follow the subcommand moved before it (up to a ``--``).

    Examples
    --------
    >>> hoist_global_options(["ingest", "music", "-q", "--db", "postgresql://h/fp"])
    ['-q', '--db', 'postgresql://h/fp', 'ingest', 'music']
    """
    start = 0
    while start < len(args) and args[start].startswith("-"):  # the group's own options, before the subcommand
        start += 2 if args[start] in GLOBAL_VALUED else 1
    hoisted, rest = [], list(args[:start + 1])
    index = start + 1
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if arg in GLOBAL_FLAGS or (len(arg) > 2 and arg.strip("v") == "-"):  # -vv counts twice
            hoisted.append(arg)
        elif arg in GLOBAL_VALUED and index + 1 < len(args):
            hoisted += args[index:index + 2]
            index += 1
        elif arg.split("=", 1)[0] in GLOBAL_VALUED:
            hoisted.append(arg)
        else:
            rest.append(arg)
        index += 1
    return args[:start] + hoisted + rest[start:]


class FpstoreGroup(click.Group):
    """Turns every FpstoreError, and a file's OSError, into ``Error: <message>`` and exit status 1, unless --traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Accept the group's options after the subcommand too."""
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map FpstoreError and a file's OSError to ClickException (one line, exit 1)."""
        try:
            return super().invoke(ctx)
        except FpstoreError as exc:
            if ctx.params.get("traceback"):
                raise
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if ctx.params.get("traceback") or exc.filename is None:
                raise
            raise click.ClickException(f"{display_path(exc.filename)}: {exc.strerror or exc}") from None


@dataclass
class CliState:
    """What the group's options say, shared by every command (``ctx.obj``).

    Attributes
    ----------
    db : str or None
        ``--db``; None falls back to $FPSTORE_DATABASE_URL, the config file, then the embedded server.
    config_path : str or None
        ``--config`` (on the group or a command); None falls back to $FPSTORE_CONFIG.
    verbose : int
    quiet : bool
    """

    db: str | None = None
    config_path: str | None = None
    verbose: int = 0
    quiet: bool = False

    def settings(self, options: dict[str, Any] | None = None) -> Settings:
        """Parameters and database in force: options, then the config file, then the defaults."""
        return resolve_settings(self.config_path, options=options, database_url=self.db)


def _remember_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).config_path = value


def config_option(command: F) -> F:
    """``--config FILE``: the group's, also accepted after the commands that take fingerprint options."""
    return click.option("--config", type=click.Path(dir_okay=False), expose_value=False, callback=_remember_config,
                        help="TOML file with [database] and [fingerprint] (default: $FPSTORE_CONFIG).")(command)


def with_store(command: F) -> F:
    """Pass the database in force as ``store``: resolved once for every command, the same way.

    ``--db``, then $FPSTORE_DATABASE_URL, then the config file's ``[database] url``, then the embedded
    server; the store is closed when the command's context closes.
    """

    @functools.wraps(command)
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:  # under @click.pass_context
        url = _state(ctx).settings().database_url
        return command(ctx, *args, store=ctx.with_resource(open_store(url)), **kwargs)

    return wrapper  # type: ignore[return-value]


def fingerprint_options(command: F) -> F:
    """Options for every fingerprint parameter; unset ones fall back to the config file, then the seed."""
    options = [
        config_option,
        click.option("--sample-rate", type=int, help="Resample to this rate, Hz [22050]."),
        click.option("--n-fft", type=int, help="STFT window and FFT size, samples [2048]."),
        click.option("--hop-length", type=int, help="STFT hop, samples [1024]."),
        click.option("--bin-max", type=NumberOrWord(int, "none"), help="Keep bins below this, or 'none' [1024]."),
        click.option("--peak-dist-freq", type=int, help="Max-filter half-height, bins [12]."),
        click.option("--peak-dist-time", type=int, help="Max-filter half-width, frames [6]."),
        click.option("--peak-thresh", type=float, help="Minimum peak magnitude [0.01]."),
        click.option("--top-k", "top_k_targets", type=NumberOrWord(int, "none"),
                     help="Strongest targets kept per anchor, or 'none' [5]."),
        click.option("--duration", "duration_s", type=NumberOrWord(float, "full"),
                     help="Seconds loaded from the start of each file, or 'full' [full; the notebook's: 30]."),
        click.option("--zone", "zones", multiple=True, metavar="NAME:DF:DTMIN:DTMAX",
                     help="A target zone (repeat; replaces the four seed zones)."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def duplicate_options(command: F) -> F:
    """``--on-duplicate`` and ``--duplicate-ratio``: what ingest and import-pickle do with a copy of a stored track."""
    options = [
        click.option("--on-duplicate", type=click.Choice(ON_DUPLICATE_CHOICES), default="skip", show_default=True,
                     help="A new track that duplicates a stored one (the same recording: hashes aligned over most "
                          "of both): skip it, keep both, or replace the stored one."),
        click.option("--on-excerpt", type=click.Choice(ON_EXCERPT_CHOICES), default="keep", show_default=True,
                     help="A new track that is an excerpt of a stored one, or holds one as an excerpt (a clip and "
                          "its whole track): store it, saying so, or skip it."),
        click.option("--duplicate-ratio", "duplicate_min_ratio", type=click.FloatRange(0, 1, min_open=True),
                     default=DEFAULT_DUPLICATE_RATIO, show_default=True,
                     help="Share of hashes that must align at one offset for a duplicate."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _fingerprint_settings(ctx: click.Context, zones: tuple[str, ...], options: dict[str, Any]) -> Settings:
    """The settings in force with the command's fingerprint options applied."""
    if zones:
        options["zones"] = tuple(parse_zone(spec) for spec in zones)
    return _state(ctx).settings(options)


def _state(ctx: click.Context) -> CliState:
    return ctx.ensure_object(CliState)


@click.group(cls=FpstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fpstore.__version__, prog_name="fpstore")
@click.option("--db", metavar="URL",
              help="PostgreSQL URL (postgresql://user@host:port/db) [$FPSTORE_DATABASE_URL, the config file's "
                   "[database] url, else fpstore's embedded server].")
@config_option
@click.option("-v", "--verbose", count=True, help="Say more (per-file lines).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the final summary.")
@click.option("--traceback", is_flag=True, help="Show the Python traceback of errors.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, verbose: int, quiet: bool, traceback: bool) -> None:
    """fpstore: Shazam-style audio fingerprints in PostgreSQL.

    \b
    Example:
      fpstore example-audio examples && fpstore ingest examples && fpstore report
    """
    state = _state(ctx)
    state.db, state.verbose, state.quiet = db, verbose, quiet


@cli.command("ingest")
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
@duplicate_options
@click.pass_context
@with_store
def ingest_command(ctx: click.Context, /, store: Store, paths: tuple[str, ...], zones: tuple[str, ...], force: bool,
                   jobs: int | None, allow_failures: bool, batch_postings: int, scheduler: str | None,
                   on_duplicate: Any, duplicate_min_ratio: float, on_excerpt: Any, **options: Any) -> None:
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

    \b
    Example:
      fpstore ingest ~/music --jobs 2
      fpstore ingest one.wav two.flac clips/ --duration 30   # the notebook's 30 s cut
      fpstore ingest ~/music/flac --on-duplicate replace
      fpstore --db postgresql://fp@router/fp ingest /shared/music --scheduler tcp://dask-head:8786
    """
    settings = _fingerprint_settings(ctx, zones, options)
    with _progress(ctx) as (on_start, on_file):
        summary = ingest(store, paths, settings.params, force=force, jobs=jobs, batch_postings=batch_postings,
                         on_duplicate=on_duplicate, duplicate_min_ratio=duplicate_min_ratio, on_excerpt=on_excerpt,
                         on_file=on_file, on_start=on_start, scheduler=scheduler, on_progress=lambda: on_file(None))
    click.echo(_format_summary(summary))
    if summary.tracks_failed and not allow_failures:
        ctx.exit(EXIT_SOME_FILES_FAILED)


@contextlib.contextmanager
def _progress(ctx: click.Context) -> Iterator[tuple[Callable[[int], None], Callable[[FileEvent | None], None]]]:
    """A progress bar on a terminal, and one line per skipped, failed or kept duplicate file (every file with -v).

    ``on_file(None)`` advances the bar (once per file fingerprinted, or per eval query); ``on_file(event)``
    only reports.
    """
    from tqdm import tqdm

    state = _state(ctx)
    bar = tqdm(total=0, unit="file", disable=state.quiet or not sys.stderr.isatty(), file=sys.stderr)

    def on_start(n_files: int) -> None:
        bar.total = n_files
        bar.refresh()

    def on_file(event: FileEvent | None) -> None:
        if event is None:
            bar.update(1)
            return
        if event.status == "failed" or (not state.quiet and (event.status == "skipped" or event.notable or state.verbose)):
            line = f"{event.status}: {event.path}" + (f" ({event.detail})" if event.status != "failed" else "")
            if event.status == "failed":
                line = f"failed: {event.detail}"
            bar.write(line, file=sys.stderr)

    try:
        yield on_start, on_file
    finally:
        bar.close()


def _format_summary(summary: IngestSummary) -> str:
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
    return "\n".join(lines)


@cli.command("report")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the per-zone table to this CSV file (the seed's hash_db_report.csv).")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="How to print the report.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
              help="Also write histograms (hashes per track, posting-list lengths per zone) as PNGs here.")
@click.pass_context
@with_store
def report_command(ctx: click.Context, store: Store, csv_path: str | None, output_format: str,
                   plots_dir: str | None) -> None:
    """Per-zone hash counts and storage sizes, computed in the database.

    \b
    Example:
      fpstore report --csv hash_db_report.csv
      fpstore report --plots report_plots
    """
    report = build_report(store)
    if plots_dir:
        from fpstore.plots import plot_report

        for path in plot_report(store, plots_dir):
            click.echo(f"wrote {path}", err=True)
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            handle.write(_zones_csv(report))
    if output_format == "json":
        click.echo(json.dumps({"zones": report.zones, "relations": report.relations,
                               "bytes_per_posting": report.bytes_per_posting}, indent=2))
    elif output_format == "csv":
        click.echo(_zones_csv(report), nl=False)
    else:
        click.echo(_report_table(report))


def _zones_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ZONE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.zones)
    return buffer.getvalue()


def _report_table(report: Report) -> str:
    def cell(value: Any) -> str:
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


@cli.group("db")
def db_group() -> None:
    """The database itself: SQL access, schema migrations, indexes, compaction, access for readers.

    \b
    Example:
      fpstore db upgrade
      fpstore db shell -- -c 'SELECT count(*) FROM tracks'
    """


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
@with_store
def db_upgrade(ctx: click.Context, store: Store, revision: str) -> None:
    """Migrate the schema up to REVISION (default: the newest).

    \b
    Example:
      fpstore --db postgresql://team@dbhost/fp db upgrade
    """
    store.upgrade(revision)
    click.echo(f"{store.url}: schema at revision {store.schema_revision()}")


@db_group.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask before dropping every track and posting (for scripts).")
@click.pass_context
@with_store
def db_downgrade(ctx: click.Context, store: Store, revision: str, yes: bool) -> None:
    """Migrate the schema down to REVISION ('base' drops every fpstore table).

    Going below the first revision (to 'base') drops every track and posting: the command asks first,
    and without a terminal it refuses (exit 2) unless --yes.

    \b
    Example:
      fpstore db downgrade 0009
      fpstore db downgrade base --yes
    """
    if store.downgrade_drops_data(revision) and not yes:
        n_tracks = store.tracks.count()
        question = (f"Downgrading {store.url} to {revision} drops every fpstore table, with its "
                    f"{counted(n_tracks, 'track')} and all their postings. Go on?")
        _confirm_or_exit(question, "downgrade declined: nothing dropped")
    store.downgrade(revision)
    click.echo(f"{store.url}: schema at revision {store.schema_revision() or 'base'}")


@db_group.command("current")
@click.pass_context
@with_store
def db_current(ctx: click.Context, store: Store) -> None:
    """Print the database's schema revision and the newest one this fpstore knows.

    \b
    Example:
      fpstore db current
    """
    click.echo(f"{store.url}: revision {store.schema_revision() or 'none'} (this fpstore: {head_revision()})")


@db_group.command("url")
@click.option("--with-password", is_flag=True,
              help="Include the password (left out by default: libpq reads $PGPASSWORD or ~/.pgpass, or psql asks).")
@click.pass_context
def db_url(ctx: click.Context, with_password: bool) -> None:
    """Print the database's libpq URL (postgresql://...), for psql, psycopg and other clients.

    For the embedded server the URL names its unix socket folder (?host=...); the server runs only
    while an fpstore command uses it, so keep it up with `fpstore db serve` meanwhile.

    \b
    Example:
      psql "$(fpstore db url)" -c 'SELECT count(*) FROM tracks'
    """
    url, embedded = url_in_force(_state(ctx).settings().database_url)
    click.echo(libpq_url(url, with_password=with_password))
    if embedded and not accepts_connections(url):
        click.echo("note: the embedded server is not running; keep it up with `fpstore db serve` "
                   "in another terminal, or use `fpstore db shell`", err=True)


@db_group.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def db_shell(ctx: click.Context, psql_args: tuple[str, ...]) -> None:
    """Run psql on the database (the embedded server is kept up while psql runs).

    PSQL_ARGS, after --, go to psql as they are; psql's exit status is fpstore's.

    \b
    Example:
      fpstore db shell
      fpstore db shell -- -c 'SELECT count(*) FROM tracks'
      fpstore db shell -- -v ON_ERROR_STOP=1 -f queries.sql
    """
    ctx.exit(run_psql(_state(ctx).settings().database_url, psql_args))


@db_group.command("serve")
@click.pass_context
def db_serve(ctx: click.Context) -> None:
    """Keep the embedded server up for other clients, printing its URL, until Ctrl-C.

    Access stays unix-socket only, for the server's owner only. Stops the server cleanly on Ctrl-C,
    SIGTERM or SIGHUP (unless other fpstore commands still use it). A database named by --db,
    $FPSTORE_DATABASE_URL or the config file runs by itself: there is nothing to serve, and the
    command fails (exit status 1).

    \b
    Example:
      fpstore db serve &
      psql "$(fpstore db url)"
    """

    def ready(url: str) -> None:
        click.echo(url)
        click.echo("serving fpstore's embedded database until Ctrl-C", err=True)

    serve(_state(ctx).settings().database_url, ready)
    click.echo("stopped", err=True)


@db_group.command("grant-reader")
@click.argument("role")
@click.pass_context
@with_store
def db_grant_reader(ctx: click.Context, store: Store, role: str) -> None:
    """Give the existing database role ROLE read-only access to the fpstore tables and functions.

    ROLE may then SELECT from every table and view and call every fpstore SQL function, but not
    insert, update, delete, truncate or drop. Running it again is harmless.

    \b
    Example:
      psql -c "CREATE ROLE matching LOGIN PASSWORD 'secret'"
      fpstore --db postgresql://admin@dbhost/fp db grant-reader matching
    """
    grant = grant_reader(store, role)
    relations = counted(len(grant.relations), "table and view", "tables and views")
    click.echo(f"{grant.role} may now read {grant.database}: {relations}, "
               f"{counted(len(grant.functions), 'function')} in schema {grant.schema} (read-only)")


@cli.command("example-audio")
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
    paths = write_example_audio(folder, n_tracks=n_tracks, duration_s=duration_s)
    click.echo(f"wrote {counted(len(paths), 'file')} to {folder}")
    if clip_path is not None:
        track = min(3, n_tracks)
        write_example_clip(clip_path, track=track, tune_duration_s=duration_s)
        click.echo(f"wrote {clip_path}: an excerpt of example_{track:02d}.wav with noise, to match")

# -- matching (issue 4) ---------------------------------------------------------------------------------
def match_options(command: F) -> F:
    """Options shared by ``match`` and ``eval``: the zone and the "no match" rule."""
    from fpstore.matching.evidence import (
        DEFAULT_ALPHA,
        DEFAULT_MIN_RATIO,
        DEFAULT_ZONE,
        PLAIN_MIN_VOTES_ALL_ZONES,
        PLAIN_MIN_VOTES_ONE_ZONE,
    )

    options = [
        click.option("--zone", default=DEFAULT_ZONE, show_default=True,
                     help="Zone whose hashes vote, or 'all' to pool every zone."),
        click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
                     help="False-alarm rate: name the best track when chance gives it that much evidence with "
                          f"probability below ALPHA, corrected for every test made [{DEFAULT_ALPHA:g}]."),
        click.option("--min-votes", type=click.IntRange(1),
                     help="A vote count instead of --alpha: fewest aligned hashes for a match (for the notebook's "
                          f"vote, {PLAIN_MIN_VOTES_ONE_ZONE} for one zone and {PLAIN_MIN_VOTES_ALL_ZONES} for --zone "
                          "all were measured)."),
        click.option("--min-ratio", type=click.FloatRange(1.0), default=DEFAULT_MIN_RATIO, show_default=True,
                     help="Best track's votes must be this many times the runner-up's."),
        click.option("--null", type=click.Choice(["tracks", "poisson"]), default="tracks", show_default=True,
                     help="Chance model behind the score: each track's Poisson evidence on a scale measured on the "
                          "query's other tracks, or the Poisson bound."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def evidence_options(command: F) -> F:
    """Options of ``match`` and ``eval`` that say how much evidence each query gives (docs/matching.md)."""
    options = [
        click.option("--plain", is_flag=True,
                     help="The notebook's vote: every hash pair of the query as it is, nothing more (one lookup "
                          "per query; the options below change one part of it)."),
        click.option("--count", type=click.Choice(["pairs", "anchors"]), default=None,
                     help="What a (track, offset) bin counts: every hash pair, or distinct stored anchors "
                          "[anchors; pairs with --plain]."),
        click.option("--shifts", type=click.IntRange(1, 16), default=None,
                     help="When the query as it is names nothing, fingerprint it at this many sub-hop shifts and "
                          "pool their votes [4; 1 with --plain]."),
        click.option("--speeds", default=None, metavar="F,F,...",
                     help="Speed factors to try when that names nothing (1.02: played 2 % faster; 1: none); the "
                          "best score wins, each factor counted as a test [0.97,0.98,0.99,1.01,1.02,1.03; none "
                          "with --plain]."),
        click.option("--offset-tolerance", "tolerance", type=click.IntRange(0, 3), default=None, metavar="FRAMES",
                     help="After the first look, a vote also counts in the bins this many frames either side "
                          "(reverberant queries) [1; 0 with --plain]."),
        click.option("--pool-speeds/--speeds-apart", "pool_speeds", default=None,
                     help="The speed factors pooled into one look and one test, or a look and a test each "
                          "[apart]."),
        click.option("--merge-first/--first-apart", "merge_first", default=None,
                     help="The query as it is and its pooled look at speed 1.0 count as one test, or as two "
                          "[apart]."),
        click.option("--whitened-peaks/--stored-peaks", "whitened", default=None,
                     help="The pooled look at speed 1.0 also picks the query's peaks on a whitened spectrogram "
                          "(each bin over its median), or only as the stored side does [stored]."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _evidence(plain: bool, count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
              robust: Any = None, *, pool_speeds: bool | None = None, merge_first: bool | None = None,
              whitened: bool | None = None) -> Any:
    """The :class:`~fpstore.matching.evidence.Evidence` the options ask for: ROBUST or PLAIN, the parts given changed."""
    from fpstore.matching.evidence import PLAIN, ROBUST, evidence_with
    from fpstore.signal.query_peaks import WHITENED

    try:
        return evidence_with(PLAIN if plain else robust or ROBUST, speeds=speeds, count=count, shifts=shifts,
                             tolerance=tolerance, pool_speeds=pool_speeds, merge_first=merge_first,
                             picks=None if whitened is None else (WHITENED,) if whitened else ())
    except ValueError as exc:
        raise click.BadParameter(f"{speeds!r} is not a comma-separated list of numbers", param_hint="--speeds") from exc


@cli.command("match")
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
def match_command(ctx: click.Context, store: Store, queries: tuple[str, ...], zone: str, min_votes: int | None,
                  min_ratio: float, alpha: float | None, null: Null, top_k: int, use_sql: bool, as_json: bool, plain: bool,
                  count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                  pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None) -> None:
    """Name the stored track each audio query is an excerpt of, and where it starts.

    QUERIES are audio files, folders (walked as ingest walks them) and '-' (audio of any format on
    standard input). Each file is decoded whole and fingerprinted with the database's parameters; the
    distinct stored anchors of its hashes vote for (track, offset) bins. When the query as it is names
    nothing, it is tried again at four sub-hop shifts, then at speeds of +-1, 2, 3 % (each a test).
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
    evidence = _evidence(plain, count, shifts, speeds, tolerance, pool_speeds=pool_speeds, merge_first=merge_first,
                         whitened=whitened)
    for result in match_queries(store, queries, zone=zone, top_k=top_k, rule=DecisionRule(min_votes, min_ratio, alpha, null),
                                method="sql" if use_sql else "python", stdin=getattr(sys.stdin, "buffer", None),
                                evidence=evidence):
        some_failed = some_failed or result.error is not None
        if as_json:
            click.echo(json.dumps(result.as_json()))
        elif result.error is not None:
            click.echo(f"failed: {result.error}", err=True)
        else:
            click.echo(_match_line(result, top_k))
    if some_failed:
        ctx.exit(EXIT_SOME_FILES_FAILED)


def _match_line(result: Any, top_k: int) -> str:
    def name(c: Any) -> str:
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
        head = (f"{result.query}: {name(best)} votes {best.votes} score {best.score:.1f} "
                f"confidence {result.confidence:.2f} offset {best.offset_s:.2f} s"
                + (f" speed {result.speed:g}" if result.speed != 1.0 else "")
                + (f"; {runner_text}" if runner_text else ""))
    more = [f"  {rank}. {name(c)} votes {c.votes} score {c.score:.1f} offset {c.offset_s:.2f} s"
            for rank, c in enumerate(result.candidates, start=1)] if top_k > 2 else []
    return "\n".join([head, *more])


@cli.command("eval")
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
def eval_command(ctx: click.Context, store: Store, queries_csv: str, zone: str, min_votes: int | None, min_ratio: float,
                 alpha: float | None, null: Null, all_zones: bool, labels: tuple[str, ...], out_dir: str, plain: bool,
                 count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                 pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None) -> None:
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

    evidence = _evidence(plain, count, shifts, speeds, tolerance, pool_speeds=pool_speeds, merge_first=merge_first,
                         whitened=whitened)
    with _progress(ctx) as (on_start, on_file):
        outcome = run_eval(store, queries_csv, out_dir, zones=None if all_zones else [zone],
                           labels=list(labels) or None, rule=DecisionRule(min_votes, min_ratio, alpha, null),
                           on_start=on_start, on_query=lambda path: on_file(None), evidence=evidence)
    for reason in outcome.failures:
        click.echo(f"failed: {reason}", err=True)
    click.echo(format_summary(outcome.summary, outcome.labels))
    click.echo(f"wrote {outcome.per_query_csv}, {outcome.summary_csv}, {outcome.plot_png}, {outcome.scores_png}")
    if outcome.failures:
        ctx.exit(EXIT_SOME_FILES_FAILED)


# -- monitoring (issues 12, 26) ----------------------------------------------------------------------------
#: Columns of ``monitor --csv``, one row a segment (the :class:`fpstore.monitor.Segment` fields).
MONITOR_CSV_COLUMNS = ("start_s", "end_s", "track_id", "file_name", "track_start_s", "track_end_s", "votes", "windows",
                       "speed", "chance_p", "cut_short")


class MonitorStopped(KeyboardInterrupt):
    """SIGTERM reached ``monitor``: it stops as on Ctrl-C, telling the open segment first."""


@cli.command("monitor")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
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
@click.pass_context
@with_store
def monitor_command(ctx: click.Context, store: Store, source: str, window_s: float, hop_s: float, zone: str,
                    min_votes: int | None, min_ratio: float, alpha: float | None, null: Null, plain: bool,
                    count: str | None, shifts: int | None, speeds: str | None, tolerance: int | None,
                    pool_speeds: bool | None, merge_first: bool | None, whitened: bool | None,
                    tolerance_frames: int, max_gap: int, min_windows: int, as_json: bool, as_csv: bool) -> None:
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

    \b
    Example:
      fpstore monitor radio_recording.mp3 --csv > log.csv
      ffmpeg -loglevel error -i https://radio.example/stream -f wav - | fpstore monitor - --json
    """
    import signal

    from fpstore.matching.evidence import DecisionRule
    from fpstore.monitor import WINDOW_EVIDENCE, StreamMonitor, audio_blocks

    if hop_s > window_s:
        raise click.BadParameter(f"{hop_s:g} s is longer than --window ({window_s:g} s)", param_hint="--hop")
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    session = StreamMonitor(store, window_s=window_s, hop_s=hop_s, zone=zone,
                            rule=DecisionRule(min_votes, min_ratio, alpha, null),
                            evidence=_evidence(plain, count, shifts, speeds, tolerance, WINDOW_EVIDENCE,
                                               pool_speeds=pool_speeds, merge_first=merge_first, whitened=whitened),
                            tolerance_frames=tolerance_frames, max_gap=max_gap, min_windows=min_windows,
                            on_window=_echo_window if _state(ctx).verbose else None)
    blocks = audio_blocks(source, store.params(duration_s=None).sample_rate, stdin=sys.stdin.buffer)
    writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
    if writer is not None:
        writer.writerow(MONITOR_CSV_COLUMNS)

    def tell(segments: Any) -> None:
        for segment in segments:
            if writer is not None:
                writer.writerow([getattr(segment, column) for column in MONITOR_CSV_COLUMNS])
                sys.stdout.flush()
            else:
                click.echo(json.dumps(_segment_json(segment)) if as_json else _segment_line(segment))

    def on_sigterm(signum: int, frame: Any) -> None:
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
    click.echo(_summary_line(session.summary()), err=as_json or as_csv)
    if status:
        ctx.exit(status)


def _clock(seconds: float) -> str:
    """``h:mm:ss.s``, for stream and track times (a window may begin before its track: ``-0:00:03.2``)."""
    tenths = round(abs(seconds) * 10)
    return f"{'-' if seconds < 0 and tenths else ''}{tenths // 36000}:{tenths // 600 % 60:02d}:{tenths % 600 / 10:04.1f}"


def _segment_line(segment: Any) -> str:
    speed = "" if segment.speed == 1.0 else f", speed {segment.speed:g}"
    return (f"{_clock(segment.start_s)}-{_clock(segment.end_s)} -> {segment.file_name} (id {segment.track_id}) "
            f"{_clock(segment.track_start_s)}-{_clock(segment.track_end_s)}{speed}, votes {segment.votes}, "
            f"p {segment.chance_p:.1g}, {segment.windows} window{'' if segment.windows == 1 else 's'}"
            f"{', cut short' if segment.cut_short else ''}")


def _segment_json(segment: Any) -> dict[str, Any]:
    return {key: float(f"{value:.2g}") if key == "chance_p" else round(value, 2) if isinstance(value, float) else value
            for key, value in dataclasses.asdict(segment).items()}


def _summary_line(summary: Any) -> str:
    share = 100 * summary.named_s / summary.stream_s if summary.stream_s else 0.0
    return (f"monitored {_clock(summary.stream_s)}: {counted(summary.segments, 'segment')}, "
            f"{_clock(summary.named_s)} named ({share:.1f} %), {_clock(summary.unknown_s)} unknown")


def _echo_window(answer: Any) -> None:
    span = f"window {_clock(answer.start_s)}-{_clock(answer.end_s)}"
    if answer.track_id is None:
        click.echo(f"{span}: unknown (best {answer.votes} votes)", err=True)
    else:
        how = "continues" if answer.continued else "names"
        speed = "" if answer.speed == 1.0 else f" at speed {answer.speed:g}"
        click.echo(f"{span}: {how} {answer.file_name} (id {answer.track_id}) from {_clock(answer.offset_s)}{speed}, "
                   f"{answer.votes} votes", err=True)


@db_group.command("lookup-index")
@click.argument("variant", type=click.Choice(["plain", "covering"]))
@click.pass_context
@with_store
def db_lookup_index(ctx: click.Context, store: Store, variant: str) -> None:
    """Index postings with the plain (zone, hash) B-tree, or a covering one for index-only lookups.

    The covering index makes matching faster and costs about 11 bytes more per posting (see docs/matching.md);
    switching builds the new index, then drops the old one.

    \b
    Example:
      fpstore db lookup-index covering
    """
    index_bytes = set_lookup_index(store, variant)
    click.echo(f"postings indexed by the {variant} index ({index_bytes:,} bytes)")


@db_group.command("compact")
@click.pass_context
@with_store
def db_compact(ctx: click.Context, store: Store) -> None:
    """Merge the partitions of hashes into one, its rows sorted by (zone, hash), for faster matching.

    Every bulk ingest adds a partition; compacting leaves one index to probe per lookup and puts the
    postings of a hash on the same heap pages. Matching goes on meanwhile; ingests wait. Needs free disk
    for a second copy of the postings while it runs (see docs/matching.md).

    \b
    Example:
      fpstore db compact
    """
    summary = compact(store)
    left = f"; {summary.partitions_left} left to running bulk loads" if summary.partitions_left else ""
    click.echo(f"compacted {counted(summary.partitions_merged, 'partition')} into hashes_main: "
               f"{counted(summary.postings, 'posting')} "
               f"sorted by (zone, hash) in {summary.seconds:.1f} s{left}")




# -- everyday use: the notebook's pickle, tracks, pictures, configuration ---------------------------


def json_option(command: F) -> F:
    """The --json flag of commands whose output programs read."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(command)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _format_pickle_summary(summary: PickleSummary, verbose: int) -> str:
    lines = [f"  {'zone':<16} {'unique hashes':>14} {'postings':>12}"]
    lines += [f"  {zone:<16} {summary.unique_hashes_by_zone[zone]:>14,} {count:>12,}"
              for zone, count in summary.postings_by_zone.items()]
    if verbose:
        lines.append("  seconds: " + ", ".join(f"{step} {s:.3f}" for step, s in summary.seconds.items()))
    return "\n".join(lines)


@cli.command("import-pickle")
@click.argument("pickle_path", type=click.Path(exists=True, dir_okay=False))
@duplicate_options
@click.pass_context
@with_store
def import_pickle_command(ctx: click.Context, store: Store, pickle_path: str, on_duplicate: Any,
                          duplicate_min_ratio: float, on_excerpt: Any) -> None:
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
    summary = import_seed_pickle(store, pickle_path, on_duplicate=on_duplicate,
                                 duplicate_min_ratio=duplicate_min_ratio, on_excerpt=on_excerpt)
    for name, note in summary.duplicates:
        click.echo(f"{pickle_path}: {name}: {note}", err=True)
    click.echo(f"run {summary.run_id}: imported {counted(summary.n_tracks, 'track')} and "
               f"{counted(summary.postings, 'posting')} from {summary.path}"
               + (f", skipped {summary.n_skipped} already stored" if summary.n_skipped else ""))
    if not _state(ctx).quiet:
        click.echo(_format_pickle_summary(summary, _state(ctx).verbose))


@cli.command("export-pickle")
@click.argument("out_path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT_PATH if it exists.")
@click.pass_context
@with_store
def export_pickle_command(ctx: click.Context, store: Store, out_path: str, force: bool) -> None:
    """Write the database as the notebook's hash_db.pkl, for its loading and statistics cells.

    Track ids become 0..n-1 in database id order. The notebook packs a posting into 16 bits of track
    id and 16 bits of anchor frame: a database with more than 65536 tracks, or an anchor at frame
    65536 or later (about 50 minutes at hop 1024, 22050 Hz), is refused rather than truncated.

    \b
    Example:
      fpstore export-pickle hash_db.pkl
    """
    summary = export_seed_pickle(store, out_path, overwrite=force)
    click.echo(f"wrote {counted(summary.n_tracks, 'track')} and {counted(summary.postings, 'posting')} "
               f"to {summary.path}")
    if not _state(ctx).quiet:
        click.echo(_format_pickle_summary(summary, _state(ctx).verbose))


@cli.group("cluster")
def cluster_group() -> None:
    """A catalogue on several PostgreSQL servers: shards routed by PL/Proxy (docs/cluster.md).

    \b
    Example:
      fpstore cluster init --router postgresql://fp@router/fp --shard postgresql://fp@s0/fp --shard postgresql://fp@s1/fp
      fpstore --db postgresql://fp@router/fp ingest music/
      fpstore --db postgresql://fp@router/fp cluster status
    """


@cluster_group.command("init")
@click.option("--router", "router_url", required=True, metavar="URL",
              help="A database on a server with PL/Proxy (Debian: postgresql-15-plproxy).")
@click.option("--shard", "shard_urls", required=True, multiple=True, metavar="URL",
              help="A shard database, empty of tracks; give it 1, 2, 4, 8, ... times, always in the same order.")
def cluster_init(router_url: str, shard_urls: tuple[str, ...]) -> None:
    """Set up a cluster: migrate the shards, number their track ids, describe them on the router.

    Running it again with the same shards only upgrades them. Afterwards give the router's URL to any
    command (--db, $FPSTORE_DATABASE_URL or the config file) to work on the whole catalogue.

    \b
    Example:
      fpstore cluster init --router postgresql://fp@router/fp --shard postgresql://fp@s0/fp --shard postgresql://fp@s1/fp
    """
    _echo_cluster_status(init_cluster(router_url, shard_urls))


@cluster_group.command("status")
@click.pass_context
@with_store
def cluster_status(ctx: click.Context, store: Store) -> None:
    """Each shard's state, schema revision, tracks, postings and size (the database in force must be a router).

    A shard that cannot answer is listed as down with its error, and the exit status is then 3.

    \b
    Example:
      fpstore --db postgresql://fp@router/fp cluster status
    """
    if not isinstance(store, ClusterStore):
        raise FpstoreError(f"{store.url} is a single fpstore database, not a cluster's router")
    shards = store.status()
    _echo_cluster_status(shards)
    down = [shard for shard in shards if shard.down]
    if down:
        click.echo(f"down: shard {', '.join(str(s.index) for s in down)} ({len(down)} of {len(shards)}): reads fail "
                   "and ingest stores nothing new until every shard is back", err=True)
        ctx.exit(EXIT_SHARD_DOWN)


def _echo_cluster_status(shards: list[ShardStatus]) -> None:
    click.echo(f"{'shard':>5}  {'state':<5}  {'revision':<8}  {'tracks':>9}  {'postings':>14}  {'bytes':>16}  url")
    for shard in shards:
        if shard.down:
            click.echo(f"{shard.index:>5}  {'down':<5}  {'?':<8}  {'?':>9}  {'?':>14}  {'?':>16}  {shard.url}")
            click.echo(f"{'':>5}  error: {shard.down}")
            continue
        click.echo(f"{shard.index:>5}  {'up':<5}  {shard.revision or 'none':<8}  {shard.tracks:>9,}  "
                   f"{shard.postings:>14,}  {shard.bytes:>16,}  {shard.url}")
    up = [shard for shard in shards if not shard.down]
    click.echo(f"{'all':>5}  {'':<5}  {'':<8}  {sum(s.tracks for s in up):>9,}  {sum(s.postings for s in up):>14,}  "
               f"{sum(s.bytes for s in up):>16,}" + ("  (shards up only)" if len(up) < len(shards) else ""))


@cli.group("tracks")
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
def tracks_list(ctx: click.Context, store: Store, name: str | None, run_id: int | None, min_postings: int | None,
                max_postings: int | None, limit: int | None, as_json: bool) -> None:
    """List tracks in id order, with their postings, and count the matches.

    \b
    Example:
      fpstore tracks list --name 'track00*' --min-postings 1000 --limit 20
    """
    listing = store.tracks.search(name=name, run_id=run_id, min_postings=min_postings,
                          max_postings=max_postings, limit=limit)
    if as_json:
        _echo_json(dataclasses.asdict(listing))
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
def tracks_show(ctx: click.Context, store: Store, track: str, as_json: bool) -> None:
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
        _echo_json(info)
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
def tracks_duplicates(ctx: click.Context, store: Store, zone: str, min_ratio: float, as_json: bool) -> None:
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
    listing = find_duplicates(store, zone=zone, min_ratio=min_ratio)
    if as_json:
        _echo_json(dataclasses.asdict(listing))
        return
    click.echo(_format_duplicates(listing))


def _format_duplicates(listing: DuplicateListing) -> str:
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
def tracks_remove(ctx: click.Context, store: Store, track_ids: tuple[int, ...], yes: bool, vacuum: bool) -> None:
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
        _confirm_removal(store, sorted(set(track_ids)))
    removal = store.tracks.remove(track_ids, vacuum_after=vacuum)
    click.echo(f"removed {counted(len(removal.track_ids), 'track')} and {counted(removal.postings_removed, 'posting')} "
               f"({100 * removal.share_removed:.1f}% of all postings)" + (", then vacuumed" if removal.vacuumed else ""))
    if removal.vacuum_advised:
        click.echo("advice: that is more than 10% of the hashes table; run "
                   "`fpstore db shell -- -c 'VACUUM (ANALYZE) hashes'` "
                   "(or use --vacuum next time) so PostgreSQL reuses the space and plans with fresh statistics",
                   err=True)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm_or_exit(question: str, declined: str) -> None:
    """Ask ``question`` on a terminal (a "no" is an error, exit 1); without one, refuse with exit 2 (--yes goes on)."""
    if not _stdin_is_terminal():
        click.echo(f"Error: {question.rsplit('. ', 1)[0]}: refused without a terminal to ask on; "
                   "pass --yes to go on", err=True)
        click.get_current_context().exit(2)
    if not click.confirm(question):
        raise click.ClickException(declined)


def _confirm_removal(store: Store, track_ids: list[int]) -> None:
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


@cli.command("plot")
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
    settings = _fingerprint_settings(ctx, zones, options)
    out_png = out_png or pathlib.Path(audio_file).with_suffix(".png").name
    counts = plot_fingerprint(audio_file, out_png, settings.params, zone=plot_zone, n_anchors=n_anchors,
                              width_px=width_px, height_px=height_px)
    click.echo(f"wrote {out_png} ({width_px}x{height_px}): {counted(counts['n_frames'], 'frame')}, "
               f"{counted(counts['n_peaks'], 'peak')}, {counts['n_pairs_drawn']} of "
               f"{counted(counts['n_zone_hashes'], 'pair')} drawn")


@cli.group("config")
def config_group() -> None:
    """The configuration in force.

    \b
    Example:
      fpstore config show
    """


@config_group.command("show")
@fingerprint_options
@json_option
@click.pass_context
def config_show(ctx: click.Context, /, zones: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Print every setting in force and where it came from (option, environment, file or default).

    Takes the same options as ingest, to show what they would change.

    \b
    Example:
      fpstore --config fpstore.toml config show --top-k none
      FPSTORE_CONFIG=fpstore.toml fpstore config show --json
    """
    if zones:
        options["zones"] = tuple(parse_zone(spec) for spec in zones)
    state = _state(ctx)
    rows = settings_in_force(state.config_path, options=options, database_url=state.db)
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        value = row["value"]
        if row["key"] == "zones":
            value = ", ".join(f"{z['name']}:{z['df_bins']}:{z['dt_min_frames']}:{z['dt_max_frames']}" for z in value)
        elif value is None:
            value = {"database_url": "(embedded server)", "config_file": "(none)"}.get(row["key"], "none")
        click.echo(f"{row['key']:<16} {value!s:<48} {row['source']}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 exposes the service beyond this machine: set a token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Server processes (each decodes queries on its own core).")
@click.option("--token", envvar="FPSTORE_SERVE_TOKEN", show_envvar=True,
              help="Bearer token every route but /v1/health asks for.")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=50, show_default=True,
              help="Largest request body; a larger one gets 413.")
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, workers: int, token: str | None,
                  max_upload_mb: float) -> None:
    """Serve the catalogue over HTTP: the match API, the track listing and a web page at /.

    POST /v1/match takes an audio file and answers what `fpstore match --json` prints; the OpenAPI
    description is at /openapi.json (browsable at /docs). Runs until Ctrl-C.

    \b
    Example:
      fpstore serve --port 8080 &
      curl --data-binary @query.wav http://127.0.0.1:8080/v1/match
    """
    from fpstore.serve import ServeConfig, run_server

    config = ServeConfig(_state(ctx).settings().database_url, token or None, int(max_upload_mb * 1024 * 1024))
    run_server(config, host=host, port=port, workers=workers, announce=lambda line: click.echo(line, err=True))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fpstore")
