"""Opening a catalogue: one fpstore database, a cluster's router, or fpstore's own embedded server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import OperationalError

from fpstore.db.cluster import cluster_of, is_router
from fpstore.db.locate import database_url_in_force
from fpstore.db.store import Store, new_engine
from fpstore.db.urls import display_url, normalize_url
from fpstore.errors import DatabaseError


@contextlib.contextmanager
def open_store(url: str | None = None, *, config_path: str | None = None) -> Iterator[Store]:
    """Open the fpstore database at ``url``, else the one in force, as ``fpstore db url`` names it.

    Parameters
    ----------
    url : str or None
        A PostgreSQL URL (see :func:`fpstore.db.urls.normalize_url`) of an fpstore database, or of a
        cluster's router: the store is then a :class:`~fpstore.db.cluster.ClusterStore` over its
        shards. None means the database in force, found as every fpstore command finds it
        (:func:`fpstore.db.locate.database_url_in_force`): $FPSTORE_DATABASE_URL, else the config
        file's ``[database] url``, else the embedded server in
        :func:`fpstore.db.embedded.default_data_dir`, which is started if needed and stopped when the
        last fpstore process using it ends.
    config_path : str or None
        The config file consulted when ``url`` is None (``--config``); None: $FPSTORE_CONFIG.

    Yields
    ------
    store : Store

    Raises
    ------
    DatabaseError
        If the database cannot be reached.
    """
    chosen, _ = database_url_in_force(url, config_path=config_path)
    resolved = normalize_url(chosen) if chosen else None
    with contextlib.ExitStack() as stack:
        if resolved is None:
            from fpstore.db.embedded import EmbeddedServer  # starting a server is for this case only

            server = stack.enter_context(EmbeddedServer())
            resolved = normalize_url(server.url)
        engine = new_engine(resolved, pool_pre_ping=True)
        stack.callback(engine.dispose)
        try:
            router = is_router(engine)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseError(f"cannot connect to {display_url(resolved)}: {reason}") from None
        if not router:
            yield Store(engine)
            return
        cluster = cluster_of(engine)
        stack.callback(cluster.close)
        yield cluster
