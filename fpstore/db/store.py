"""The fpstore database: connections, schema state, the fingerprint profile, and the door to everything else.

A :class:`Store` wraps one SQLAlchemy engine (a pool of psycopg 3 connections). It answers the questions
every command asks first (is the schema current? which parameters was the database built with?) and
opens runs (:meth:`Store.run`). The rest of the SQL lives in one module per concern, reached through
the store's attributes:

- ``store.tracks`` (:mod:`fpstore.db.tracks`): the ordinary write path, deletion with postings, queries;
- ``store.bulk`` (:mod:`fpstore.db.bulk`): the bulk-partition write path;
- ``store.lookup`` (:mod:`fpstore.db.lookup`): the posting lookup and the SQL vote that matching uses;
- ``store.stats`` (:mod:`fpstore.db.stats`): the report's aggregates and consistent snapshots;
- ``store.duplicates`` (:mod:`fpstore.db.duplicates`): stored tracks that are copies of one recording;
- maintenance that acts on the whole database: :mod:`fpstore.db.compact`, :mod:`fpstore.db.maintenance`,
  :mod:`fpstore.db.access`.

Every statement takes its values as bound parameters. A failure of the server or of the connection to it
(a restart, a crash, a dropped network) surfaces as one :class:`~fpstore.errors.DatabaseError` line
saying that the unfinished transaction was rolled back and that running the command again finishes the
work; fpstore does not retry by itself, because the rerun is exact (committed tracks are skipped by
content) and a retry loop could hide a server in trouble.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext

from fpstore.db.bulk import BulkLoads
from fpstore.db.duplicates import Duplicates
from fpstore.db.lookup import Lookup
from fpstore.db.runs import Run, open_run
from fpstore.db.stats import Stats
from fpstore.db.tracks import Tracks
from fpstore.db.urls import display_url
from fpstore.errors import DatabaseError, NotFound, ParameterError, ProfileMismatch, SchemaNotAtHead, ServerFailed
from fpstore.signal.params import FingerprintParams, Zone

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest schema revision, as the migrations say (``head_revision()``; ``tests/test_layers.py`` checks that
#: they agree): a command that only reads compares the database's revision with it without loading Alembic.
SCHEMA_HEAD = "0010"

# Any constant will do: it serialises schema upgrades and profile creation between fpstore processes.
_ADVISORY_LOCK_KEY = 0x46505354


def migrations_config() -> Config:
    """Alembic configuration pointing at fpstore's migrations, wherever fpstore is installed."""
    # Alembic is imported where a schema is changed or compared in depth, not by every command at start-up.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("fpstore.db.migrations")))
    return config


def head_revision() -> str:
    """The newest schema revision this version of fpstore knows, as Alembic reads it from the migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrations_config()).get_current_head()
    assert head is not None
    return head


def _revision_on(conn: Connection) -> str | None:
    """The revision in Alembic's version table on ``conn`` (None: no table, or no row), read without Alembic."""
    if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
        return None
    revision: str | None = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return revision


def _never_prepare(dbapi_connection: Any, connection_record: object, connection_proxy: object) -> None:
    # psycopg prepares a statement at its fifth execution on a connection, and PostgreSQL may then plan
    # `hash = ANY($1)` generically, blind to the query's keys (issue 13: 2.2 s instead of 85 ms).
    dbapi_connection.prepare_threshold = None


@dataclasses.dataclass
class _HeldConnection:
    """The connection :meth:`Store.holding_connection` checked out for a thread, and whether a block uses it."""

    pooled: Any  # sqlalchemy's PoolProxiedConnection
    busy: bool = False


class Store:
    """An fpstore database.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        Connected to a PostgreSQL database through psycopg 3.

    Attributes
    ----------
    tracks : fpstore.db.tracks.Tracks
    bulk : fpstore.db.bulk.BulkLoads
    lookup : fpstore.db.lookup.Lookup
    stats : fpstore.db.stats.Stats
    duplicates : fpstore.db.duplicates.Duplicates
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: The connection :meth:`holding_connection` checked out, one per thread (``held``).
        self._holding = threading.local()
        if not event.contains(engine, "handle_error", _report_operational_error):
            event.listen(engine, "handle_error", _report_operational_error)
        if not event.contains(engine, "checkout", _never_prepare):
            event.listen(engine, "checkout", _never_prepare)
        self.tracks = Tracks(self)
        self.bulk = BulkLoads(self)
        self.lookup = Lookup(self)
        self.stats = Stats(self)
        self.duplicates = Duplicates(self)
        #: The zone ids once read (:meth:`zone_ids`).
        self._zone_ids: dict[str, int] | None = None

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return display_url(self.engine.url)

    @property
    def shards(self) -> list[Store]:
        """The databases written, by shard index: this one alone (a cluster's router lists its shards)."""
        return [self]

    @property
    def routed(self) -> bool:
        """False: this database holds the tracks itself (a cluster's router routes them to its shards)."""
        return False

    def url_with_password(self) -> str:
        """The URL with its password, for another process that opens this catalogue (never to be printed)."""
        return self.engine.url.render_as_string(hide_password=False)

    # -- connections ----------------------------------------------------------------------------
    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        """A SQLAlchemy connection (``with store.connect() as conn``); commit explicitly."""
        return self.engine.connect()

    def begin(self) -> contextlib.AbstractContextManager[Connection]:
        """A SQLAlchemy connection in one transaction, committed when the block ends without error."""
        return self.engine.begin()

    @contextlib.contextmanager
    def raw(self) -> Iterator[psycopg.Connection[Any]]:
        """A psycopg connection in autocommit mode (``conn.transaction()`` opens exactly one transaction).

        For what SQLAlchemy cannot express: COPY, ``psycopg.sql`` identifiers, binary results. A lost
        connection or a failing server becomes one :class:`~fpstore.errors.DatabaseError` line. Inside
        :meth:`holding_connection`, the held connection is handed out (in the thread holding it, when
        no other ``raw`` block of that thread is using it).
        """
        held: _HeldConnection | None = getattr(self._holding, "held", None)
        borrowed = held is not None and not held.busy
        if held is not None and borrowed:
            pooled = held.pooled
            held.busy = True
        else:
            try:
                pooled = self.engine.raw_connection()
            except psycopg.OperationalError as exc:
                # The checkout itself (pre-ping, then a reconnect) bypasses SQLAlchemy's error hook as well.
                raise ServerFailed(self.url, first_line(exc)) from exc
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            driver.autocommit = True
            yield driver
        except psycopg.OperationalError as exc:
            # psycopg used directly bypasses SQLAlchemy's error hook: report it here.
            pooled.invalidate()
            if borrowed:
                self._holding.held = None  # the next block checks out a connection that works
            raise ServerFailed(self.url, first_line(exc)) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseError(read_only_message(driver.info.user, exc)) from exc
        finally:
            if not driver.closed:
                driver.autocommit = False
            if held is not None and borrowed:
                held.busy = False
            else:
                pooled.close()

    def holds_connection(self) -> bool:
        """True inside :meth:`holding_connection` in this thread: the thread's statements go through one connection."""
        return getattr(self._holding, "held", None) is not None

    @contextlib.contextmanager
    def holding_connection(self) -> Iterator[None]:
        """Within the block, :meth:`raw` hands this thread one connection, checked out once.

        For a long run of small statements (a monitored stream makes a few a second, a query answered
        by ``fpstore serve`` three): each checkout from the pool pings the server first, a round trip as
        long as a small statement. Each thread holds its own; a ``raw`` block inside another checks out
        its own as before.
        """
        if getattr(self._holding, "held", None) is not None:
            yield  # already held by this thread: nothing more to hold
            return
        try:
            pooled = self.engine.raw_connection()
        except psycopg.OperationalError as exc:
            raise ServerFailed(self.url, first_line(exc)) from exc
        self._holding.held = _HeldConnection(pooled)
        try:
            yield
        finally:
            self._holding.held = None
            pooled.close()

    # -- schema ---------------------------------------------------------------------------------
    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at, or None for a database fpstore never touched.

        Read from Alembic's version table as Alembic reads it (one row; no table, or no row: None).
        """
        with self.engine.connect() as conn:
            return _revision_on(conn)

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (all of them by default)."""
        from alembic import command

        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Revert migrations down to ``revision`` (``"base"`` removes every fpstore table)."""
        from alembic import command

        self._zone_ids = None
        # The tracks may be dropped, their ids then starting again: what was read of them goes.
        self.tracks.forget_names()
        self.lookup.forget_frames()
        self._migrate(command.downgrade, revision)

    def downgrade_drops_data(self, revision: str) -> bool:
        """Whether going down to ``revision`` reverts the first migration, dropping every track and posting.

        Raises
        ------
        ParameterError
            If ``revision`` is not a revision below the database's (the message is Alembic's).
        """
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError
        from alembic.util.exc import CommandError

        script = ScriptDirectory.from_config(migrations_config())
        current = self.schema_revision()
        if current is None:
            return False
        try:
            undone = list(script.iterate_revisions(current, revision, inclusive=False))
        except (CommandError, RevisionError) as exc:
            raise ParameterError(f"revision {revision!r}: {exc} (the database is at {current})") from None
        return any(step.down_revision is None for step in undone)

    def _migrate(self, action: Any, revision: str) -> None:
        from alembic.util.exc import CommandError

        config = migrations_config()
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                config.attributes["connection"] = conn
                try:
                    action(config, revision)
                except CommandError as exc:
                    current = _revision_on(conn) or "base"
                    raise ParameterError(f"revision {revision!r}: {exc} (the database is at {current})") from None
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                conn.commit()

    def check_schema(self, *, upgrade_empty: bool = False) -> None:
        """Make sure the schema is the one this fpstore knows.

        Parameters
        ----------
        upgrade_empty : bool
            Create the schema if the database has never been migrated.

        Raises
        ------
        SchemaNotAtHead
            If the schema is older (run ``fpstore db upgrade``), newer than this fpstore, or absent
            and ``upgrade_empty`` is False (then the message says to ingest first, which creates it).
        """
        current = self.schema_revision()
        if current == SCHEMA_HEAD:
            return
        if current is None and upgrade_empty:
            self.upgrade()
            return
        from alembic.script import ScriptDirectory

        head = head_revision()
        script = ScriptDirectory.from_config(migrations_config())
        if current is None:
            raise SchemaNotAtHead(
                f"database {self.url} holds no fingerprints yet (no fpstore schema): ingest first, e.g. "
                "`fpstore ingest FOLDER`, which creates the schema (`fpstore db upgrade` creates it empty)"
            )
        try:
            script.get_revision(current)
        except Exception:
            raise SchemaNotAtHead(
                f"database {self.url} is at schema revision {current}, newer than this fpstore "
                f"(knows up to {head}): upgrade fpstore before writing to it"
            ) from None
        raise SchemaNotAtHead(
            f"database {self.url} is at schema revision {current}, older than {head}: run `fpstore db upgrade`"
        )

    def one_database(self, what: str) -> None:
        """Nothing: ``what`` works on this store (a cluster's router refuses what needs one database)."""

    # -- profile ----------------------------------------------------------------------------------
    def ensure_profile(self, params: FingerprintParams) -> dict[str, int]:
        """Record ``params`` as the database's profile if it has none; refuse a different one.

        Returns
        -------
        zone_ids : dict[str, int]
            ``zones.id`` by zone name.

        Raises
        ------
        ProfileMismatch
            If the database was built with other fingerprint parameters.
        """
        wanted = params.profile()
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            stored = conn.execute(text("SELECT params FROM profile")).scalar()
            if stored is None:
                conn.execute(text("INSERT INTO profile (params) VALUES (CAST(:p AS jsonb))"),
                             {"p": json.dumps(wanted)})
                conn.execute(
                    text("INSERT INTO zones (id, name, df_bins, dt_min_frames, dt_max_frames) "
                         "VALUES (:id, :name, :df_bins, :dt_min_frames, :dt_max_frames)"),
                    [dict(id=i, **dataclasses.asdict(zone)) for i, zone in enumerate(params.zones, start=1)],
                )
            elif stored != wanted:
                differences = [
                    f"{key}: database {stored.get(key)!r}, asked {wanted.get(key)!r}"
                    for key in sorted(set(stored) | set(wanted))
                    if stored.get(key) != wanted.get(key)
                ]
                raise ProfileMismatch(
                    "the database was built with other fingerprint parameters ("
                    + "; ".join(differences)
                    + "): use the database's parameters, or another database"
                )
        return self.zone_ids()

    def params(self, *, duration_s: float | None = 30.0) -> FingerprintParams:
        """The fingerprint parameters the database was built with.

        Raises
        ------
        NotFound
            If nothing has been ingested yet, so the database has no profile.
        """
        with self.engine.connect() as conn:
            stored = conn.execute(text("SELECT params FROM profile")).scalar()
        if stored is None:
            raise NotFound(f"database {self.url} holds no fingerprints yet (no profile): ingest first, e.g. "
                           "`fpstore ingest FOLDER`")
        values = dict(stored)
        values["zones"] = tuple(Zone(**zone) for zone in values["zones"])
        return FingerprintParams(duration_s=duration_s, **values)

    def zone_ids(self) -> dict[str, int]:
        """``zones.id`` by zone name (empty before the first ingest).

        Read once, then remembered: the zones are written with the profile and never change after
        (only a downgrade to base removes them), and every look of a query asks for them.
        """
        if self._zone_ids is None:
            with self.engine.connect() as conn:
                found = {str(name): int(zone_id) for name, zone_id in conn.execute(text("SELECT name, id FROM zones"))}
            if not found:
                return found
            self._zone_ids = found
        return dict(self._zone_ids)

    # -- runs -----------------------------------------------------------------------------------
    def run(self, command_name: str, source: str, params: FingerprintParams) -> contextlib.AbstractContextManager[Run]:
        """Open a run that writes tracks with ``params`` (see :func:`fpstore.db.runs.open_run`)."""
        return open_run(self, command_name, source, params)


def new_engine(url: URL, **options: Any) -> Engine:
    """A SQLAlchemy engine on ``url`` (``options`` as :func:`sqlalchemy.create_engine` takes them).

    A database whose encoding is ``SQL_ASCII`` (what ``initdb`` makes under the C locale) is refused at
    the first connection with one line: PostgreSQL then neither checks nor converts text, the driver
    hands back bytes, and a name stored by one client reads differently in another.
    """
    engine = create_engine(url, **options)
    shown = display_url(url)

    def refuse_sql_ascii(dbapi_connection: Any, connection_record: object) -> None:
        if dbapi_connection.info.parameter_status("server_encoding") == "SQL_ASCII":
            dbapi_connection.close()
            raise DatabaseError(
                f"database {shown} has encoding SQL_ASCII: fpstore needs a UTF8 database (create one with "
                "`createdb -E UTF8 -T template0 NAME` or `CREATE DATABASE name ENCODING 'UTF8' TEMPLATE template0`)")

    # First in line: SQLAlchemy's own first-connect hook already reads text, which SQL_ASCII returns as bytes.
    event.listen(engine, "connect", refuse_sql_ascii, insert=True)
    return engine


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says (its type's name if it says nothing)."""
    said = str(exc).strip()
    return said.splitlines()[0] if said else type(exc).__name__


def read_only_message(role: str, exc: BaseException) -> str:
    """One line for a statement the role may not run: a reader (``fpstore db grant-reader``) writing."""
    said = str(exc).strip()
    reason = said.splitlines()[0] if said else type(exc).__name__
    return (f"the role {role} may not write to this database ({reason}); `fpstore db grant-reader` gave it "
            "read access only: write as the tables' owner")


def _report_operational_error(context: ExceptionContext) -> None:
    """SQLAlchemy ``handle_error`` hook: a lost connection, a server failure or a refused privilege becomes a DatabaseError.

    Pre-ping probes are left alone: their failure is how the pool notices a dead connection and reconnects.
    """
    if context.is_pre_ping:
        return
    if isinstance(context.original_exception, psycopg.errors.InsufficientPrivilege):
        driver = getattr(context.connection.connection, "driver_connection", None) if context.connection else None
        role = driver.info.user if isinstance(driver, psycopg.Connection) else None
        if role is None and context.engine is not None:
            role = context.engine.url.username
        raise DatabaseError(read_only_message(role or "(unknown)", context.original_exception))
    if not isinstance(context.original_exception, psycopg.OperationalError):
        return
    url = display_url(context.engine.url) if context.engine is not None else "(unknown)"
    raise ServerFailed(url, first_line(context.original_exception))
