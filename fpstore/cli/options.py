"""What the commands share: the group's state, the options defined once, progress, prompts and JSON output.

Imports here stay light (click and the standard library): the library modules a command needs are
imported when it runs, so that ``fpstore --help`` or ``fpstore db url`` do not load numpy, SQLAlchemy or
the audio stack.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from fpstore.ingest import FileEvent
    from fpstore.matching.evidence import Evidence
    from fpstore.runtime.config import Settings

#: Exit status of ``ingest``, ``match``, ``eval``: they finished, and some files failed.
EXIT_SOME_FILES_FAILED = 3
#: ``cluster status``: it listed every shard, and some could not answer.
EXIT_SHARD_DOWN = 3
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
        from fpstore.runtime.config import resolve_settings

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
        from fpstore.db.catalogue import open_store

        state = cli_state(ctx)
        store = ctx.with_resource(open_store(state.settings().database_url, config_path=state.config_path))
        return command(ctx, *args, store=store, **kwargs)

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
    from fpstore.duplicates import DEFAULT_MIN_RATIO, ON_DUPLICATE_CHOICES, ON_EXCERPT_CHOICES

    options = [
        click.option("--on-duplicate", type=click.Choice(ON_DUPLICATE_CHOICES), default="skip", show_default=True,
                     help="A new track that duplicates a stored one (the same recording: hashes aligned over most "
                          "of both): skip it, keep both, or replace the stored one."),
        click.option("--on-excerpt", type=click.Choice(ON_EXCERPT_CHOICES), default="keep", show_default=True,
                     help="A new track that is an excerpt of a stored one, or holds one as an excerpt (a clip and "
                          "its whole track): store it, saying so, or skip it."),
        click.option("--duplicate-ratio", "duplicate_min_ratio", type=click.FloatRange(0, 1, min_open=True),
                     default=DEFAULT_MIN_RATIO, show_default=True,
                     help="Share of hashes that must align at one offset for a duplicate."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def fingerprint_settings(ctx: click.Context, zones: tuple[str, ...], options: dict[str, Any]) -> Settings:
    """The settings in force with the command's fingerprint options applied."""
    from fpstore.runtime.config import parse_zone

    if zones:
        options["zones"] = tuple(parse_zone(spec) for spec in zones)
    return cli_state(ctx).settings(options)


def cli_state(ctx: click.Context) -> CliState:
    """The group's state of this invocation (``ctx.obj``)."""
    return ctx.ensure_object(CliState)


@contextlib.contextmanager
def progress(ctx: click.Context) -> Iterator[tuple[Callable[[int], None], Callable[[FileEvent | None], None]]]:
    """A progress bar on a terminal, and one line per skipped, failed or kept duplicate file (every file with -v).

    ``on_file(None)`` advances the bar (once per file fingerprinted, or per eval query); ``on_file(event)``
    only reports.
    """
    from tqdm import tqdm

    state = cli_state(ctx)
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


def match_options(command: F) -> F:
    """Options shared by ``match`` and ``eval``: the zone and the "no match" rule."""
    from fpstore.matching.defaults import (
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
        click.option("--whitened-look/--no-whitened-look", "whitened_look", default=None,
                     help="When every other look names nothing, one more look (a test) at the query's peaks "
                          "picked on a whitened spectrogram at every shift, or none [a look; none with --plain]."),
        click.option("--dereverberated-look/--no-dereverberated-look", "dereverberated_look", default=None,
                     help="After the whitened look, one more look (a test) at the query's peaks picked on a "
                          "dereverberated spectrogram (each bin less its earlier magnitudes' decaying tail) at two "
                          "shifts, or none [none]."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def evidence_from_options(plain: bool, count: str | None, shifts: int | None, speeds: str | None,
                          tolerance: int | None, robust: Evidence | None = None, *, pool_speeds: bool | None = None,
                          merge_first: bool | None = None, whitened: bool | None = None,
                          whitened_look: bool | None = None, dereverberated_look: bool | None = None) -> Evidence:
    """The :class:`~fpstore.matching.evidence.Evidence` the options ask for: ROBUST or PLAIN, the parts given changed."""
    from fpstore.matching.evidence import PLAIN, ROBUST, evidence_with
    from fpstore.signal.query_peaks import DEREVERBERATED_LOOK, WHITENED, WHITENED_LOOK

    base = PLAIN if plain else robust or ROBUST
    # Each own look taken or left out as asked, the base's others kept; the whitened look first.
    wanted = {look: (look in base.own_picks) if asked is None else asked
              for look, asked in ((WHITENED_LOOK, whitened_look), (DEREVERBERATED_LOOK, dereverberated_look))}
    others = tuple(picking for picking in base.own_picks if picking not in wanted)
    own_picks = (*(look for look, taken in wanted.items() if taken), *others)
    try:
        return evidence_with(base, speeds=speeds, count=count, shifts=shifts,
                             tolerance=tolerance, pool_speeds=pool_speeds, merge_first=merge_first,
                             picks=None if whitened is None else (WHITENED,) if whitened else (),
                             own_picks=own_picks)
    except ValueError as exc:
        raise click.BadParameter(f"{speeds!r} is not a comma-separated list of numbers", param_hint="--speeds") from exc


def json_option(command: F) -> F:
    """The --json flag of commands whose output programs read."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(command)


def echo_json(value: object) -> None:
    """Print ``value`` as indented JSON (dates and paths as strings)."""
    click.echo(json.dumps(value, indent=2, default=str))


def stdin_is_terminal() -> bool:
    """True if standard input is a terminal a prompt can be answered on."""
    return sys.stdin.isatty()


def confirm_or_exit(question: str, declined: str) -> None:
    """Ask ``question`` on a terminal (a "no" is an error, exit 1); without one, refuse with exit 2 (--yes goes on)."""
    if not stdin_is_terminal():
        click.echo(f"Error: {question.rsplit('. ', 1)[0]}: refused without a terminal to ask on; "
                   "pass --yes to go on", err=True)
        click.get_current_context().exit(2)
    if not click.confirm(question):
        raise click.ClickException(declined)
