"""What the ``db`` and ``cluster`` commands do to a database: one function each, the command line's one door here.

Each function imports the module that does the work when it is called, so that importing this one costs
nothing: ``fpstore db url`` loads no migration machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fpstore.db.access import ReaderGrant
    from fpstore.db.cluster import ShardStatus
    from fpstore.db.compact import CompactSummary
    from fpstore.db.store import Store


def libpq_url_in_force(url: str | None, *, config_path: str | None = None,
                       with_password: bool = False) -> tuple[str, bool]:
    """The libpq URL of the database in force, and whether it is the embedded server, not running now.

    Parameters
    ----------
    url : str or None
        The database as the settings give it; None: found as :func:`fpstore.db.locate.database_url_in_force`
        finds it ($FPSTORE_DATABASE_URL, the config file, else the embedded server).
    config_path : str or None
        The config file (``--config``); None: $FPSTORE_CONFIG.
    with_password : bool
        Keep the password in the URL (left out by default).

    Returns
    -------
    libpq_url : str
        ``postgresql://...``; the embedded server's names its socket folder (``?host=...``).
    embedded_down : bool
        True if it is the embedded server and nothing answers on its socket now.
    """
    from fpstore.db.locate import database_url_in_force

    chosen, _ = database_url_in_force(url, config_path=config_path)
    if chosen is None:  # the embedded server: its URL and its state with the standard library, no driver to load
        from fpstore.db.embedded import EmbeddedServer, socket_accepts_connections, socket_libpq_url

        socket_dir = EmbeddedServer().socket_dir
        return socket_libpq_url(socket_dir), not socket_accepts_connections(socket_dir)
    from fpstore.db.urls import libpq_url, normalize_url

    return libpq_url(normalize_url(chosen), with_password=with_password), False


def run_psql(url: str | None, psql_args: Sequence[str], *, config_path: str | None = None) -> int:
    """Run psql on the database in force, the embedded server kept up meanwhile (:func:`~fpstore.db.clients.run_psql`)."""
    from fpstore.db.clients import run_psql as run

    return run(url, psql_args, config_path=config_path)


def serve_embedded(url: str | None, ready: Callable[[str], None], *, config_path: str | None = None) -> None:
    """Keep the embedded server up for other clients until a stop signal (:func:`fpstore.db.clients.serve`)."""
    from fpstore.db.clients import serve

    serve(url, ready, config_path=config_path)


def head_revision() -> str:
    """The newest schema revision this fpstore knows (:func:`fpstore.db.store.head_revision`)."""
    from fpstore.db.store import head_revision as head

    return head()


def grant_reader(store: Store, role: str) -> ReaderGrant:
    """Read-only access for ``role`` (:func:`fpstore.db.access.grant_reader`)."""
    from fpstore.db.access import grant_reader as grant

    return grant(store, role)


def set_lookup_index(store: Store, variant: str) -> int:
    """The plain or covering posting index, in bytes once built (:func:`fpstore.db.maintenance.set_lookup_index`)."""
    from fpstore.db.maintenance import set_lookup_index as build

    return build(store, variant)


def compact(store: Store) -> CompactSummary:
    """The partitions of hashes merged into one, sorted (:func:`fpstore.db.compact.compact`)."""
    from fpstore.db.compact import compact as merge

    return merge(store)


def init_cluster(router_url: str, shard_urls: Sequence[str]) -> list[ShardStatus]:
    """Shards migrated and described on the router (:func:`fpstore.db.cluster.init_cluster`)."""
    from fpstore.db.cluster import init_cluster as init

    return init(router_url, shard_urls)


def cluster_status(store: Store) -> list[ShardStatus]:
    """Each shard's state; :class:`~fpstore.errors.FpstoreError` if ``store`` is a single database, not a router."""
    from fpstore.db.cluster import ClusterStore
    from fpstore.errors import FpstoreError

    if not isinstance(store, ClusterStore):
        raise FpstoreError(f"{store.url} is a single fpstore database, not a cluster's router")
    return store.status()
