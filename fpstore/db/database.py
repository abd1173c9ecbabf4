"""What the parts of a store need of the one database they work on: its connections, its schema, its zones.

:class:`~fpstore.db.store.Store` builds its parts (:class:`~fpstore.db.tracks.Tracks`,
:class:`~fpstore.db.lookup.Lookup`, ...) over itself; they name it by this protocol rather than by the
class that builds them, so that no import, type-only ones included, runs in a circle.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Connection, Engine

    from fpstore.signal.params import FingerprintParams


class Database(Protocol):
    """One fpstore database as its parts use it (:class:`~fpstore.db.store.Store` is one)."""

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the database."""

    @property
    def url(self) -> str:
        """The database URL, password masked."""

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        """A SQLAlchemy connection; commit explicitly."""

    def begin(self) -> contextlib.AbstractContextManager[Connection]:
        """A SQLAlchemy connection in one transaction, committed when the block ends without error."""

    def raw(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A psycopg connection in autocommit mode (COPY, identifiers, binary results)."""

    def holds_connection(self) -> bool:
        """True inside :meth:`~fpstore.db.store.Store.holding_connection` in this thread (one connection per thread)."""

    def check_schema(self, *, upgrade_empty: bool = False) -> None:
        """Raise unless the schema is this fpstore's (with ``upgrade_empty``, create it in an empty database)."""

    def one_database(self, what: str) -> None:
        """Raise, naming ``what``, where it needs one database and this is a cluster's router."""

    def ensure_profile(self, params: FingerprintParams) -> dict[str, int]:
        """Record ``params`` as the profile, or check they equal it; ``zones.id`` by zone name."""

    def zone_ids(self) -> dict[str, int]:
        """``zones.id`` by zone name."""
