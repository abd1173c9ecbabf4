"""The ``fpstore`` command: a thin click layer over the library, one module per command group.

Exit status: 0 success; 1 an error (``Error: ...`` on stderr); 2 a usage error; 3 ingest, match or
eval finished but some files failed (ingest: unless ``--allow-failures``), or ``cluster status`` found a
shard down.

A command's module is imported when the command runs or shows its help (:data:`COMMANDS`), so that
``fpstore --help`` and ``fpstore db url`` load neither numpy nor SQLAlchemy nor the audio stack.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click

import fpstore
from fpstore.cli.options import cli_state, config_option, hoist_global_options
from fpstore.errors import FpstoreError


class LazyCommand(NamedTuple):
    """Where a command of the group is defined, and the first paragraph of its help (for ``fpstore --help``)."""

    module: str
    attribute: str
    summary: str


#: Every command of ``fpstore``: name → where it is defined. ``tests/test_cli.py`` checks each summary
#: against the command's own help.
COMMANDS = {
    "cluster": LazyCommand("fpstore.cli.cluster", "cluster_group",
                           "A catalogue on several PostgreSQL servers: shards routed by PL/Proxy (docs/cluster.md)."),
    "config": LazyCommand("fpstore.cli.config", "config_group", "The configuration in force."),
    "db": LazyCommand("fpstore.cli.db", "db_group",
                      "The database itself: SQL access, schema migrations, indexes, compaction, access for readers."),
    "eval": LazyCommand("fpstore.cli.match", "eval_command", "Run every query of QUERIES_CSV and score the answers."),
    "example-audio": LazyCommand("fpstore.cli.ingest", "example_audio_command",
                                 "Write synthetic example tunes (WAV) into FOLDER, to try fpstore without music at hand."),
    "export-pickle": LazyCommand("fpstore.cli.pickles", "export_pickle_command",
                                 "Write the database as the notebook's hash_db.pkl, for its loading and statistics cells."),
    "import-pickle": LazyCommand("fpstore.cli.pickles", "import_pickle_command",
                                 "Load the notebook's hash_db.pkl (meta, tracks, index) into the database, as one run."),
    "ingest": LazyCommand("fpstore.cli.ingest", "ingest_command",
                          "Fingerprint the audio files under PATHS (folders and files) and store the new ones."),
    "match": LazyCommand("fpstore.cli.match", "match_command",
                         "Name the stored track each audio query is an excerpt of, and where it starts."),
    "monitor": LazyCommand("fpstore.cli.monitor", "monitor_command",
                           "Follow a long recording or a live stream (SOURCE, or - for standard input) and tell what "
                           "plays when."),
    "plot": LazyCommand("fpstore.cli.report", "plot_command",
                        "Draw AUDIO_FILE's spectrogram with its constellation peaks and a few anchor→target pairs."),
    "report": LazyCommand("fpstore.cli.report", "report_command",
                          "Per-zone hash counts and storage sizes, computed in the database."),
    "serve": LazyCommand("fpstore.cli.serve", "serve_command",
                         "Serve the catalogue over HTTP: the match API, the track listing and a web page at /."),
    "tracks": LazyCommand("fpstore.cli.tracks", "tracks_group",
                          "List, inspect and remove tracks, and find copies of one recording."),
}


class FpstoreGroup(click.Group):
    """Turns every FpstoreError, and a file's OSError, into ``Error: <message>`` and exit status 1, unless --traceback.

    Its commands (:data:`COMMANDS`) are imported on first use.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Accept the group's options after the subcommand too."""
        return super().parse_args(ctx, hoist_global_options(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, in order."""
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, its module imported on first use."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            where = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(where.module), where.attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands of ``fpstore --help``, from :data:`COMMANDS` (no command module imported)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        # A command's short help as click makes it from the first paragraph of its help.
        rows = [(name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
            from fpstore.signal.audio import display_path

            raise click.ClickException(f"{display_path(exc.filename)}: {exc.strerror or exc}") from None


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
    state = cli_state(ctx)
    state.db, state.verbose, state.quiet = db, verbose, quiet


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fpstore")
