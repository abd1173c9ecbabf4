"""``fpstore cluster``: a catalogue on several PostgreSQL servers (init, status)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from fpstore.cli.options import EXIT_SHARD_DOWN, with_store
from fpstore.db import admin

if TYPE_CHECKING:
    from fpstore.db.cluster import ShardStatus
    from fpstore.db.store import Store


@click.group("cluster")
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
    echo_cluster_status(admin.init_cluster(router_url, shard_urls))


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
    shards = admin.cluster_status(store)
    echo_cluster_status(shards)
    down = [shard for shard in shards if shard.down]
    if down:
        click.echo(f"down: shard {', '.join(str(s.index) for s in down)} ({len(down)} of {len(shards)}): reads fail "
                   "and ingest stores nothing new until every shard is back", err=True)
        ctx.exit(EXIT_SHARD_DOWN)


def echo_cluster_status(shards: list[ShardStatus]) -> None:
    """A table of the shards (state, revision, tracks, postings, bytes, URL), then their totals."""
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
