"""``fpstore db``: the database itself (SQL access, migrations, indexes, compaction, readers), in one group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from fpstore.cli.options import cli_state, confirm_or_exit, with_store
from fpstore.db import admin
from fpstore.runtime.wording import counted

if TYPE_CHECKING:
    from fpstore.db.store import Store


@click.group("db")
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
        confirm_or_exit(question, "downgrade declined: nothing dropped")
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
    click.echo(f"{store.url}: revision {store.schema_revision() or 'none'} (this fpstore: {admin.head_revision()})")


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
    state = cli_state(ctx)
    url, embedded_down = admin.libpq_url_in_force(state.settings().database_url, config_path=state.config_path,
                                                  with_password=with_password)
    click.echo(url)
    if embedded_down:
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
    state = cli_state(ctx)
    ctx.exit(admin.run_psql(state.settings().database_url, psql_args, config_path=state.config_path))


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

    state = cli_state(ctx)
    admin.serve_embedded(state.settings().database_url, ready, config_path=state.config_path)
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
    grant = admin.grant_reader(store, role)
    relations = counted(len(grant.relations), "table and view", "tables and views")
    click.echo(f"{grant.role} may now read {grant.database}: {relations}, "
               f"{counted(len(grant.functions), 'function')} in schema {grant.schema} (read-only)")


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
    index_bytes = admin.set_lookup_index(store, variant)
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
    summary = admin.compact(store)
    left = f"; {summary.partitions_left} left to running bulk loads" if summary.partitions_left else ""
    click.echo(f"compacted {counted(summary.partitions_merged, 'partition')} into hashes_main: "
               f"{counted(summary.postings, 'posting')} "
               f"sorted by (zone, hash) in {summary.seconds:.1f} s{left}")
