"""Storage: the PostgreSQL database behind fpstore — schema state, runs, tracks and postings.

Every statement takes its values as bound parameters. Postings are written with binary COPY built from
numpy arrays (:mod:`fpstore.db.pgcopy`), sorted by (zone, hash) so index insertion walks the B-tree in order;
a batch of tracks and all their postings is one transaction, so a reader never sees part of a track.

Two write paths (README, "Speed"):

- ordinary (:meth:`Store.write_tracks`): COPY into ``hashes``; the rows land in the partition
  ``hashes_main`` (track ids below 1e9), whose (zone, hash) index is maintained row by row. For small
  additions.
- bulk (:meth:`Store.begin_bulk`, :meth:`Store.stage_tracks`, :meth:`Store.commit_bulk`): reserve a
  block of :data:`BULK_BLOCK_IDS` track ids from ``tracks_bulk_id_seq``, COPY into a fresh, unattached,
  unindexed table; then, in ONE transaction, insert the tracks, build the table's index and attach it
  as the partition of its id block. Readers see the tracks and their postings together, at that
  commit. Its cost depends only on the data it loads, not on the table's size.

A failure of the server or of the connection to it (a restart, a crash, a dropped network) surfaces as
one :class:`~fpstore.errors.DatabaseError` line saying that the unfinished transaction was rolled back
and that running the command again finishes the work; fpstore does not retry by itself, because the
rerun is exact (committed tracks are skipped by content) and a retry loop could hide a server in trouble.

Conventions
-----------
- ``sha256`` is the 32-byte digest of a file's content; it identifies a track.
- Counts of postings are rows of ``hashes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext
from sqlalchemy.exc import OperationalError

import fpstore
from fpstore.db.pgcopy import COPY_HEADER, COPY_TRAILER, POSTING_COLUMNS, decode_postings, encode_postings
from fpstore.db.urls import display_url, normalize_url
from fpstore.errors import DatabaseError, NotFound, ParameterError, ProfileMismatch, SchemaNotAtHead
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.hashing import hash_keys
from fpstore.signal.params import FingerprintParams, Zone

#: Environment variable naming the database; without it (and without ``--db``) fpstore runs its own.
DATABASE_URL_ENV = "FPSTORE_DATABASE_URL"

# Any constant will do: it serialises schema upgrades and profile creation between fpstore processes.
_ADVISORY_LOCK_KEY = 0x46505354


@dataclass(frozen=True)
class TrackRecord:
    """A fingerprinted file, ready to be written.

    Attributes
    ----------
    path : str
        Where the file was found (valid UTF-8; undecodable bytes are backslash-escaped).
    sha256 : bytes
        Digest of the file's content.
    fingerprint : Fingerprint
    """

    path: str
    sha256: bytes
    fingerprint: Fingerprint


@dataclass(frozen=True)
class StagedTrack:
    """A track whose postings sit in a bulk staging table, with everything its ``tracks`` row needs."""

    path: str
    sha256: bytes
    duration_s: float
    n_frames: int
    n_peaks: int
    n_postings: int
    track_id: int


#: Track ids reserved per bulk load (partition); ids are cheap (int4 above 1e9 leaves ~11,000 blocks).
BULK_BLOCK_IDS = 100_000

# Serialises reservations of id blocks, so each block is contiguous.
BULK_IDS_LOCK_KEY = 0x46505355


@dataclass
class BulkLoad:
    """An open bulk load: its staging table, id block and the tracks staged so far.

    The id block is ``[first_id, first_id + BULK_BLOCK_IDS)``.
    """

    run_id: int
    table: str
    first_id: int
    staged: list[StagedTrack] = dataclasses.field(default_factory=list)

    @property
    def free_ids(self) -> int:
        """Tracks that still fit in the id block."""
        return BULK_BLOCK_IDS - len(self.staged)

    @property
    def n_postings(self) -> int:
        """Postings staged so far."""
        return sum(track.n_postings for track in self.staged)


#: Prefix of bulk staging tables; the rest of the name is ``r<run id>_<n>``.
STAGING_PREFIX = "hashes_bulk_"


@dataclass(frozen=True)
class WrittenTrack:
    """Outcome of writing one :class:`TrackRecord`: its new id, or None if its content was already stored."""

    record: TrackRecord
    track_id: int | None


def migrations_config() -> Config:
    """Alembic configuration pointing at fpstore's migrations, wherever fpstore is installed."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("fpstore.db.migrations")))
    return config


def head_revision() -> str:
    """The newest schema revision this version of fpstore knows."""
    head = ScriptDirectory.from_config(migrations_config()).get_current_head()
    assert head is not None
    return head


class Store:
    """An fpstore database.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        Connected to a PostgreSQL database through psycopg 3.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._run_leases: dict[int, Connection] = {}
        if not event.contains(engine, "handle_error", _report_operational_error):
            event.listen(engine, "handle_error", _report_operational_error)

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        return display_url(self.engine.url)

    # -- schema ---------------------------------------------------------------------------------
    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at, or None for a database fpstore never touched."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (all of them by default)."""
        self._migrate(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Revert migrations down to ``revision`` (``"base"`` removes every fpstore table)."""
        self._migrate(command.downgrade, revision)

    def _migrate(self, action: Any, revision: str) -> None:
        config = migrations_config()
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                config.attributes["connection"] = conn
                action(config, revision)
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
            and ``upgrade_empty`` is False.
        """
        head = head_revision()
        current = self.schema_revision()
        if current == head:
            return
        if current is None and upgrade_empty:
            self.upgrade()
            return
        script = ScriptDirectory.from_config(migrations_config())
        if current is None:
            raise SchemaNotAtHead(f"database {self.url} has no fpstore schema: run `fpstore db upgrade`")
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
                             {"p": _json(wanted)})
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
            return {name: zone_id for name, zone_id in conn.execute(text("SELECT name, id FROM zones"))}

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
            raise NotFound(f"database {self.url} holds no fingerprints yet (no profile): ingest first")
        values = dict(stored)
        values["zones"] = tuple(Zone(**zone) for zone in values["zones"])
        return FingerprintParams(duration_s=duration_s, **values)

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, command_name: str, source: str, params: FingerprintParams,
                  zone_ids: dict[str, int]) -> int:
        """Insert a ``running`` run with every parameter; return its id.

        The run keeps one database session open until :meth:`finish_run` (its *lease*): the session's
        backend pid is stored in ``runs.backend_pid``, so that if the process dies, the session ends
        with it and :meth:`mark_interrupted_runs` can tell.
        """
        lease = self.engine.connect()
        try:
            run_id = int(lease.execute(
                text(
                    "INSERT INTO runs (command, source, fpstore_version, host, pid, backend_pid, sample_rate,"
                    " n_fft, hop_length, bin_max, peak_dist_freq, peak_dist_time, peak_thresh, top_k_targets,"
                    " duration_s, zone_ids) VALUES (:command, :source, :version, :host, :pid,"
                    " pg_backend_pid(), :sample_rate, :n_fft, :hop_length, :bin_max, :peak_dist_freq,"
                    " :peak_dist_time, :peak_thresh, :top_k_targets, :duration_s, CAST(:zone_ids AS jsonb))"
                    " RETURNING id"
                ),
                dict(
                    command=command_name, source=source, version=fpstore.__version__,
                    host=socket.gethostname(), pid=os.getpid(),
                    sample_rate=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
                    bin_max=params.bin_max, peak_dist_freq=params.peak_dist_freq,
                    peak_dist_time=params.peak_dist_time, peak_thresh=params.peak_thresh,
                    top_k_targets=params.top_k_targets, duration_s=params.duration_s,
                    zone_ids=_json([zone_ids[zone.name] for zone in params.zones]),
                ),
            ).scalar_one())
            lease.commit()
        except BaseException:
            lease.close()
            raise
        self._run_leases[run_id] = lease
        return run_id

    def record_failure(self, run_id: int, path: str, reason: str) -> None:
        """Record that ``path`` could not be ingested, and why."""
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO failures (run_id, path, reason) VALUES (:r, :p, :why)"),
                         {"r": run_id, "p": path, "why": reason})
            conn.execute(text("UPDATE runs SET tracks_failed = tracks_failed + 1 WHERE id = :id"), {"id": run_id})

    def finish_run(self, run_id: int, status: str) -> None:
        """Set a run's final status and finish time, and end its lease."""
        lease = self._run_leases.pop(run_id, None)
        try:
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE runs SET status = :s, finished_at = now() WHERE id = :id"),
                             {"s": status, "id": run_id})
        finally:
            if lease is not None:
                lease.close()

    def mark_interrupted_runs(self) -> int:
        """Mark as ``interrupted`` every ``running`` run whose database session has ended.

        A run's session ends without finishing the run only if its process or the server died; the
        transaction it had open was rolled back, so no partial track remains.

        Returns
        -------
        n_marked : int
        """
        with self.engine.begin() as conn:
            return conn.execute(text(
                "UPDATE runs SET status = 'interrupted', finished_at = now() WHERE status = 'running'"
                " AND backend_pid NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
            )).rowcount

    # -- tracks ---------------------------------------------------------------------------------
    def track_id_by_sha256(self, sha256: bytes) -> int | None:
        """The id of the track with this content digest, or None."""
        with self.engine.connect() as conn:
            found = conn.execute(text("SELECT id FROM tracks WHERE sha256 = :d"), {"d": sha256}).scalar()
        return None if found is None else int(found)

    def write_tracks(self, run_id: int, records: Sequence[TrackRecord], zone_ids: dict[str, int], *,
                     replace: bool = False) -> list[WrittenTrack]:
        """Insert tracks and COPY all their postings in one transaction.

        A track whose content is already stored (by another run, or a concurrent process) is left
        as it is and reported with ``track_id=None``, unless ``replace`` is set: then the old track
        and its postings are deleted first, in the same transaction.

        Parameters
        ----------
        run_id : int
        records : sequence of TrackRecord
        zone_ids : dict[str, int]
            From :meth:`ensure_profile`.
        replace : bool

        Returns
        -------
        written : list of WrittenTrack, in the order of ``records``
        """
        if not records:
            return []
        # Concurrent writers insert overlapping tracks: each waits on the other's uncommitted sha256
        # index entries, so all must take them in one order (sorted by digest), or two can deadlock.
        ordered = sorted(records, key=lambda record: record.sha256)
        with self._raw_connection() as conn, conn.transaction(), conn.cursor() as cur:
            digests = [record.sha256 for record in ordered]
            if replace:
                cur.execute("DELETE FROM hashes WHERE track_id IN (SELECT id FROM tracks WHERE sha256 = ANY(%s))",
                            (digests,))
                cur.execute("DELETE FROM tracks WHERE sha256 = ANY(%s)", (digests,))
            fps = [record.fingerprint for record in ordered]
            # Ids follow the order of ``records`` (the files' sorted order), whatever the insert order.
            cur.execute("SELECT nextval(pg_get_serial_sequence('tracks', 'id')) FROM generate_series(1, %s)",
                        (len(records),))
            id_by_digest = dict(zip((r.sha256 for r in records), sorted(int(row[0]) for row in cur.fetchall())))
            cur.execute(
                "INSERT INTO tracks (id, path, file_name, sha256, duration_s, n_frames, n_peaks, n_postings, run_id)"
                " SELECT id, p, f, d, s, nf, np, npost, %s FROM unnest(%s::int[], %s::text[], %s::text[], %s::bytea[],"
                " %s::float8[], %s::int[], %s::int[], %s::int[]) WITH ORDINALITY AS u(id, p, f, d, s, nf, np, npost, i)"
                " ORDER BY i ON CONFLICT (sha256) DO NOTHING RETURNING id, sha256",
                (
                    run_id,
                    [id_by_digest[digest] for digest in digests],
                    [record.path for record in ordered],
                    [os.path.basename(record.path) for record in ordered],
                    digests,
                    [fp.duration_s for fp in fps],
                    [fp.n_frames for fp in fps],
                    [fp.n_peaks for fp in fps],
                    [fp.n_postings for fp in fps],
                ),
            )
            new_ids = {bytes(digest): int(track_id) for track_id, digest in cur.fetchall()}
            written = [WrittenTrack(record, new_ids.get(record.sha256)) for record in records]
            _copy_postings(cur, "hashes", _postings_payload(written, zone_ids))
            added = [w for w in written if w.track_id is not None]
            cur.execute(
                "UPDATE runs SET tracks_added = tracks_added + %s, tracks_skipped = tracks_skipped + %s,"
                " postings_added = postings_added + %s WHERE id = %s",
                (len(added), len(written) - len(added), sum(w.record.fingerprint.n_postings for w in added), run_id),
            )
        return written

    def raw_connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A psycopg connection in autocommit mode (``conn.transaction()`` opens one transaction).

        For statements SQLAlchemy cannot express, such as COPY or ``psycopg.sql`` identifiers.
        """
        return self._raw_connection()

    # -- bulk path ----------------------------------------------------------------------------------
    def begin_bulk(self, run_id: int) -> BulkLoad:
        """Create an empty, unindexed staging table for a bulk load of run ``run_id``.

        The table is not part of ``hashes`` until :meth:`commit_bulk`; no reader sees its rows before.
        """
        with self._raw_connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (BULK_IDS_LOCK_KEY,))
            cur.execute("SELECT nextval('tracks_bulk_id_seq')")
            row = cur.fetchone()
            assert row is not None
            first_id = int(row[0])
            cur.execute("SELECT setval('tracks_bulk_id_seq', %s)", (first_id + BULK_BLOCK_IDS - 1,))
            table = f"{STAGING_PREFIX}r{int(run_id)}_{first_id}"
            # A CHECK equal to the id block, checked row by row during COPY, lets ATTACH skip its scan.
            cur.execute(sql.SQL("CREATE TABLE {} (LIKE hashes, CONSTRAINT {} CHECK (track_id >= {} AND track_id < {}))")
                        .format(sql.Identifier(table), sql.Identifier(f"{table}_range"), sql.Literal(first_id),
                                sql.Literal(first_id + BULK_BLOCK_IDS)))
        return BulkLoad(run_id, table, first_id)

    def stage_tracks(self, bulk: BulkLoad, records: Sequence[TrackRecord], zone_ids: dict[str, int]) -> None:
        """Reserve track ids for ``records`` and COPY their postings into the staging table.

        Only the tracks' metadata stays in ``bulk``; the fingerprints can be dropped afterwards.

        Raises
        ------
        ParameterError
            If more records are given than ``bulk.free_ids``.
        """
        if not records:
            return
        if len(records) > bulk.free_ids:
            raise ParameterError(f"{len(records)} tracks do not fit in the bulk load's {bulk.free_ids} free ids")
        first = bulk.first_id + len(bulk.staged)
        ids = list(range(first, first + len(records)))
        with self._raw_connection() as conn, conn.cursor() as cur:
            written = [WrittenTrack(record, track_id) for record, track_id in zip(records, ids)]
            _copy_postings(cur, bulk.table, _postings_payload(written, zone_ids))
        bulk.staged.extend(
            StagedTrack(r.path, r.sha256, r.fingerprint.duration_s, r.fingerprint.n_frames, r.fingerprint.n_peaks,
                        r.fingerprint.n_postings, track_id)
            for r, track_id in zip(records, ids)
        )

    def commit_bulk(self, bulk: BulkLoad, *, replace: bool = False) -> list[tuple[StagedTrack, bool]]:
        """Publish a bulk load: tracks, index and partition in one transaction.

        A track whose content is already stored is dropped from the load (its staged postings are
        deleted) unless ``replace`` is set, which deletes the old track and its postings first.

        Returns
        -------
        outcome : list of (StagedTrack, added)
            ``added`` is False for a track skipped because its content was stored meanwhile.
        """
        staged = bulk.staged
        table = sql.Identifier(bulk.table)
        with self._raw_connection() as conn, conn.transaction(), conn.cursor() as cur:
            digests = [t.sha256 for t in staged]
            if replace and staged:
                cur.execute("DELETE FROM hashes WHERE track_id IN (SELECT id FROM tracks WHERE sha256 = ANY(%s))",
                            (digests,))
                cur.execute("DELETE FROM tracks WHERE sha256 = ANY(%s)", (digests,))
            # Inserted in digest order, like write_tracks, so concurrent writers cannot deadlock.
            by_digest = sorted(staged, key=lambda t: t.sha256)
            cur.execute(
                "INSERT INTO tracks (id, path, file_name, sha256, duration_s, n_frames, n_peaks, n_postings, run_id)"
                " SELECT i, p, f, d, s, nf, np, npost, %s FROM unnest(%s::int[], %s::text[], %s::text[],"
                " %s::bytea[], %s::float8[], %s::int[], %s::int[], %s::int[]) WITH ORDINALITY"
                " AS u(i, p, f, d, s, nf, np, npost, o) ORDER BY o ON CONFLICT (sha256) DO NOTHING RETURNING id",
                (bulk.run_id, [t.track_id for t in by_digest], [t.path for t in by_digest],
                 [os.path.basename(t.path) for t in by_digest], [t.sha256 for t in by_digest],
                 [t.duration_s for t in by_digest], [t.n_frames for t in by_digest], [t.n_peaks for t in by_digest],
                 [t.n_postings for t in by_digest]),
            )
            added_ids = {int(row[0]) for row in cur.fetchall()}
            lost = [t.track_id for t in staged if t.track_id not in added_ids]
            if lost:
                cur.execute(sql.SQL("DELETE FROM {} WHERE track_id = ANY(%s)").format(table), (lost,))
            if added_ids:
                self._attach_staging(cur, bulk.table, bulk.first_id, bulk.first_id + BULK_BLOCK_IDS)
            else:
                cur.execute(sql.SQL("DROP TABLE {}").format(table))
            added = [t for t in staged if t.track_id in added_ids]
            cur.execute(
                "UPDATE runs SET tracks_added = tracks_added + %s, tracks_skipped = tracks_skipped + %s,"
                " postings_added = postings_added + %s WHERE id = %s",
                (len(added), len(staged) - len(added), sum(t.n_postings for t in added), bulk.run_id),
            )
        bulk.staged = []
        return [(t, t.track_id in added_ids) for t in staged]

    @staticmethod
    def _attach_staging(cur: psycopg.Cursor[Any], table_name: str, low_id: int, high_id: int) -> None:
        """Index the staging table and attach it as the partition ``[low_id, high_id)`` of ``hashes``."""
        table = sql.Identifier(table_name)
        # Built once over sorted input: compact (full leaves), and the partition is never updated.
        cur.execute(sql.SQL("CREATE INDEX {} ON {} (zone, hash) WITH (fillfactor = 100)").format(
            sql.Identifier("hashes_zone_hash_" + table_name.removeprefix("hashes_")), table))
        # Takes SHARE UPDATE EXCLUSIVE on hashes: readers go on; no other partition is scanned, nor this one
        # (its CHECK, made with the table, proves the range).
        cur.execute(sql.SQL("ALTER TABLE hashes ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            table, sql.Literal(low_id), sql.Literal(high_id)))

    def drop_bulk(self, bulk: BulkLoad) -> None:
        """Discard an unfinished bulk load (its staging table and staged postings)."""
        with self._raw_connection() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(bulk.table)))
        bulk.staged = []

    def drop_stale_staging(self) -> int:
        """Drop staging tables left by bulk loads whose run is no longer running (crash, kill).

        Returns
        -------
        n_dropped : int
        """
        with self._raw_connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE %s"
                " AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
                " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status = 'running'"
                "                 AND c.relname LIKE %s || 'r' || r.id || '\\_%%')",
                (STAGING_PREFIX.replace("_", "\\_") + "%", STAGING_PREFIX),
            )
            stale = [row[0] for row in cur.fetchall()]
            for name in stale:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        return len(stale)

    @contextlib.contextmanager
    def _raw_connection(self) -> Iterator[psycopg.Connection[Any]]:
        raw = self.engine.raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        try:
            driver.autocommit = True  # conn.transaction() then opens exactly one transaction
            yield driver
        except psycopg.OperationalError as exc:
            # psycopg used directly (COPY, bulk loads) bypasses SQLAlchemy's error hook: report it here.
            raw.invalidate()
            raise DatabaseError(_operational_error_message(self.url, exc)) from exc
        finally:
            if not driver.closed:
                driver.autocommit = False
            raw.close()

    def count_tracks(self) -> int:
        """Number of tracks stored."""
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM tracks")).scalar_one())

    def track_postings(self, track_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """All postings of one track, per zone name, as ``(hashes uint32, t_anchor_frames int32)``.

        Raises
        ------
        NotFound
            If there is no track ``track_id``.
        """
        with self.engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM tracks WHERE id = :id"), {"id": track_id}).first() is None:
                raise NotFound(f"track id={track_id} is not in the database")
            zone_names = {zone_id: name for zone_id, name in conn.execute(text("SELECT id, name FROM zones"))}
        with self._raw_connection() as raw, raw.cursor() as cur:
            rows = decode_postings(_copy_out(cur, "WHERE track_id = %s", (track_id,)))
        zone_col = rows["zone"].astype(np.int16)
        hash_col = rows["hash"].astype(np.int32).view(np.uint32)
        t_col = rows["t_anchor"].astype(np.int32)
        return {
            name: (hash_col[zone_col == zone_id], t_col[zone_col == zone_id]) for zone_id, name in zone_names.items()
        }

    def postings_snapshot(self) -> tuple[list[tuple[int, str]], dict[int, str], float | None, bytes]:
        """Tracks, zones and every posting, read in one consistent snapshot (for exports).

        Returns
        -------
        tracks : list of (id, file_name), by id
        zone_names : dict[int, str]
            Zone name by ``zones.id``.
        duration_s : float or None
            Seconds loaded per file by the newest run that added tracks (None: full tracks; 30.0 if
            no run added any).
        copy_stream : bytes
            ``hashes (zone, hash, track_id, t_anchor)`` as a binary COPY stream
            (:func:`fpstore.db.pgcopy.decode_postings` reads it).
        """
        with self._raw_connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT id, file_name FROM tracks ORDER BY id")
            tracks = [(int(track_id), str(name)) for track_id, name in cur.fetchall()]
            cur.execute("SELECT id, name FROM zones")
            zone_names = {int(zone_id): str(name) for zone_id, name in cur.fetchall()}
            cur.execute("SELECT duration_s, true FROM runs WHERE tracks_added > 0 ORDER BY id DESC LIMIT 1")
            newest = cur.fetchone()
            duration_s = 30.0 if newest is None else newest[0]
            stream = _copy_out(cur)
        return tracks, zone_names, duration_s, stream


def _copy_out(cur: psycopg.Cursor[Any], where: str = "", params: tuple[Any, ...] = ()) -> bytes:
    """Postings (``hashes`` rows, optionally filtered by ``where``) as one binary COPY stream."""
    statement = f"COPY (SELECT {', '.join(POSTING_COLUMNS)} FROM hashes {where}) TO STDOUT (FORMAT BINARY)"
    stream = bytearray()
    with cur.copy(statement, params or None) as copy:
        for block in copy:
            stream += block
    return bytes(stream)


def _copy_postings(cur: psycopg.Cursor[Any], table_name: str, payload: bytes) -> None:
    """COPY binary posting rows (without header and trailer) into ``table_name``."""
    if not payload:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table_name), sql.SQL(", ").join(map(sql.Identifier, POSTING_COLUMNS)))
    with cur.copy(statement) as copy:
        copy.write(COPY_HEADER)
        copy.write(payload)
        copy.write(COPY_TRAILER)


def _postings_payload(written: Sequence[WrittenTrack], zone_ids: dict[str, int]) -> bytes:
    """Binary COPY rows of every posting of the tracks that got an id, sorted by (zone, hash).

    Sorted rows make B-tree insertion (ordinary path) visit leaf pages in order, and leave a bulk
    partition's heap clustered by (zone, hash), so one lookup reads few heap pages.
    """
    zone_parts, hash_parts, track_parts, t_parts = [], [], [], []
    for item in written:
        if item.track_id is None:
            continue
        for zone_name, postings in item.record.fingerprint.zones.items():
            n = len(postings.hashes)
            zone_parts.append(np.full(n, zone_ids[zone_name], dtype=np.int16))
            hash_parts.append(hash_keys(postings.hashes))
            track_parts.append(np.full(n, item.track_id, dtype=np.int32))
            t_parts.append(postings.t_anchor_frames)
    if not hash_parts:
        return b""
    zones, keys = np.concatenate(zone_parts), np.concatenate(hash_parts)
    # (zone, signed hash) as one int64 sorts like the index; one argsort is faster than lexsort's two keys.
    order = np.argsort((zones.astype(np.int64) << 32) + keys, kind="stable")
    return encode_postings(zones[order], keys[order], np.concatenate(track_parts)[order],
                           np.concatenate(t_parts)[order])


def _operational_error_message(url: str, exc: BaseException) -> str:
    """One line for a failure of the server or of the connection to it (restart, crash, network)."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return (f"database {url} failed: {reason}; the unfinished transaction was rolled back (no partial "
            "track is stored): run the command again once the server is back to finish the work")


def _report_operational_error(context: ExceptionContext) -> None:
    """SQLAlchemy ``handle_error`` hook: a lost connection or server failure becomes a DatabaseError.

    Pre-ping probes are left alone: their failure is how the pool notices a dead connection and reconnects.
    """
    if context.is_pre_ping or not isinstance(context.original_exception, psycopg.OperationalError):
        return
    url = display_url(context.engine.url) if context.engine is not None else "(unknown)"
    raise DatabaseError(_operational_error_message(url, context.original_exception))


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def resolve_url(url: str | None) -> URL | None:
    """The database URL to use: ``url``, else $FPSTORE_DATABASE_URL, else None (the embedded server)."""
    chosen = url or os.environ.get(DATABASE_URL_ENV)
    return normalize_url(chosen) if chosen else None


@contextlib.contextmanager
def open_store(url: str | None = None) -> Iterator[Store]:
    """Open the fpstore database at ``url``, or fpstore's own embedded server when there is none.

    Parameters
    ----------
    url : str or None
        A PostgreSQL URL (see :func:`fpstore.db.urls.normalize_url`); None means $FPSTORE_DATABASE_URL,
        and if that is unset too, the embedded server in :func:`fpstore.db.embedded.default_data_dir`,
        which is started if needed and stopped when the last fpstore process using it ends.

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
            from fpstore.db.embedded import EmbeddedServer

            server = stack.enter_context(EmbeddedServer())
            resolved = normalize_url(server.url)
        engine = create_engine(resolved, pool_pre_ping=True)
        stack.callback(engine.dispose)
        try:
            with engine.connect():
                pass
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseError(f"cannot connect to {display_url(resolved)}: {reason}") from None
        yield Store(engine)
