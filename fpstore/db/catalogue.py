"""Opening a catalogue: one fpstore database, a cluster's router, or fpstore's own embedded server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import OperationalError

from fpstore.db.cluster import cluster_of, is_router
from fpstore.db.store import Store, new_engine, resolve_url
from fpstore.db.urls import display_url, normalize_url
from fpstore.errors import DatabaseError


@contextlib.contextmanager
def open_store(url: str | None = None) -> Iterator[Store]:
    """Open the fpstore database at ``url``, or fpstore's own embedded server when there is none.

    Parameters
    ----------
    url : str or None
        A PostgreSQL URL (see :func:`fpstore.db.urls.normalize_url`) of an fpstore database, or of a
        cluster's router: the store is then a :class:`~fpstore.db.cluster.ClusterStore` over its
        shards. None means $FPSTORE_DATABASE_URL, and if that is unset too, the embedded server in
        :func:`fpstore.db.embedded.default_data_dir`, which is started if needed and stopped when the
        last fpstore process using it ends.

    Yields
    ------
    store : Store

    Raises
    ------
    DatabaseError
        If the database cannot be reached.
    """
    resolved = resolve_url(url)
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
