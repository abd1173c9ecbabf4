"""A catalogue on several PostgreSQL servers: S shard databases and one router, routed by PL/Proxy.

Each shard is a complete fpstore database (the same Alembic revisions); the router holds the list of
shards (``cluster_shards``), PL/Proxy's cluster ``fpstore`` and the matching team's SQL functions
(``migrations/router``). A track lives, with all its postings, on the shard its content digest picks
(:func:`shard_of_digest`), so it is written by one local transaction on that shard with the ordinary or
the bulk path unchanged; its id says where it lives (``track_id % n_shards``, :func:`shard_of_track`),
because ``cluster init`` gives every shard's id sequences the step ``n_shards`` and the start of its index.

:class:`ClusterStore` is a :class:`~fpstore.db.store.Store` on the router whose reads reach the shards:
the ones a track names go to its shard, the others to every shard at once (one thread per shard), and
their answers are combined (postings concatenated, counts summed, distinct hashes united). A shard that
cannot answer fails the whole call with one line naming it: never a silently partial answer. Writes go
to one shard's own store (:meth:`ClusterStore.shard_for_digest`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine

from fpstore.db.duplicates import DuplicatePair, Duplicates
from fpstore.db.lookup import Lookup, LookupStatement
from fpstore.db.stats import Snapshot, Stats
from fpstore.db.store import Store, new_engine
from fpstore.db.tracks import Removal, TrackListing, TrackRecord, Tracks, WrittenTrack
from fpstore.db.urls import normalize_url
from fpstore.errors import (
    DatabaseError,
    FpstoreError,
    NotFound,
    ParameterError,
    SchemaNotAtHead,
    ServerFailed,
    ShardDown,
)
from fpstore.signal.params import FingerprintParams

if TYPE_CHECKING:
    from alembic.config import Config

#: Bulk track ids start here on every database (migration 0003); 1e9 is a multiple of every S <= 512.
_BULK_FIRST_ID = 1_000_000_000
_MAX_SHARDS = 512

T = TypeVar("T")


def shard_of_digest(sha256: bytes, n_shards: int) -> int:
    """The shard that holds the track of this content digest: its first 8 bytes, modulo ``n_shards``."""
    return int.from_bytes(sha256[:8], "big") % n_shards


def shard_of_track(track_id: int, n_shards: int) -> int:
    """The shard that holds track ``track_id``."""
    return int(track_id) % n_shards


def conninfo(url: URL) -> str:
    """The libpq conninfo (``key=value`` pairs, which PL/Proxy needs) of a SQLAlchemy URL."""
    parts: dict[str, Any] = {"host": url.host, "port": url.port, "dbname": url.database,
                             "user": url.username, "password": url.password}
    parts.update({key: value for key, value in url.query.items() if isinstance(value, str)})
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def router_migrations_config() -> Config:
    """Alembic configuration of the router's own revisions."""
    from alembic.config import Config  # loaded by the commands that migrate or check a cluster only

    config = Config()
    config.set_main_option("script_location", str(resources.files("fpstore.db.migrations") / "router"))
    return config


def is_router(engine: Engine) -> bool:
    """Whether the database behind ``engine`` is a cluster's router (it lists shards)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT to_regclass('cluster_shards') IS NOT NULL")).scalar() is True


@dataclass(frozen=True)
class ShardStatus:
    """One shard as ``fpstore cluster status`` shows it; ``down`` is why it could not answer ("" when it is up)."""

    index: int
    url: str
    revision: str | None
    tracks: int
    postings: int
    bytes: int
    down: str = ""


class ClusterStore(Store):
    """The catalogue of a cluster, opened through its router (see the module docstring).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        Connected to the router.
    shards : list of Store
        The shards, by index.
    """

    def __init__(self, engine: Engine, shards: list[Store]) -> None:
        super().__init__(engine)
        self._shards = shards
        self.tracks = ClusterTracks(self)
        self.lookup = ClusterLookup(self)
        self.stats = ClusterStats(self)
        self.duplicates = ClusterDuplicates(self)
        self._pool = concurrent.futures.ThreadPoolExecutor(len(shards), thread_name_prefix="fpstore-shard")

    @property
    def shards(self) -> list[Store]:
        """The shards, by index: each a whole fpstore database holding its share of the tracks."""
        return self._shards

    @property
    def routed(self) -> bool:
        """True: the router holds no track; each lives on ``shards[shard_of_digest(sha256, n_shards)]``."""
        return True

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.shards)

    def shard_for_digest(self, sha256: bytes) -> Store:
        """The shard that holds (or will hold) the track with this content digest."""
        return self.shards[shard_of_digest(sha256, self.n_shards)]

    def by_shard(self, track_ids: Sequence[int]) -> dict[int, list[int]]:
        """The given track ids grouped by the index of the shard that holds them."""
        grouped: dict[int, list[int]] = {}
        for track_id in track_ids:
            grouped.setdefault(shard_of_track(track_id, self.n_shards), []).append(int(track_id))
        return grouped

    def on_every_shard(self, call: Callable[[Store], T]) -> list[T]:
        """``call(shard)`` on every shard at once, answers by shard index (see :meth:`on_shards`)."""
        answers = self.on_shards({index: call for index in range(self.n_shards)})
        return [answers[index] for index in range(self.n_shards)]

    def on_shards(self, calls: dict[int, Callable[[Store], T]]) -> dict[int, T]:
        """``calls[k](shard k)`` for each given shard index, all at once; answers by shard index.

        Raises
        ------
        DatabaseError
            If a shard cannot answer, naming it (the first such shard).
        """
        futures = {index: self._pool.submit(call, self.shards[index]) for index, call in calls.items()}
        answers = {}
        for index, future in futures.items():
            try:
                answers[index] = future.result()
            except DatabaseError as exc:
                for later in futures.values():
                    later.cancel()
                raise self.shard_error(index, exc) from exc
        return answers

    def on_shard(self, index: int, call: Callable[[Store], T]) -> T:
        """``call(shard index)``; a failure names the shard (see :meth:`on_shards`)."""
        try:
            return call(self.shards[index])
        except DatabaseError as exc:
            raise self.shard_error(index, exc) from exc

    def shard_error(self, index: int, exc: DatabaseError) -> DatabaseError:
        """What a read that failed on shard ``index`` raises: :class:`ShardDown` when the shard failed or is unreachable."""
        if isinstance(exc, ShardDown):
            return exc
        if isinstance(exc, ServerFailed):
            return ShardDown(index, self.shards[index].url, exc.reason)
        return DatabaseError(f"shard {index} of the cluster: {exc}")

    def close(self) -> None:
        """Release the shards' connections and the threads."""
        self._pool.shutdown(wait=True)
        for shard in self.shards:
            shard.engine.dispose()

    # -- schema: every shard, then the router ---------------------------------------------------------
    def schema_revision(self) -> str | None:
        """The shards' common revision; one differing from the others is named in a SchemaNotAtHead."""
        revisions = self.on_every_shard(lambda shard: shard.schema_revision())
        if len(set(revisions)) > 1:
            listed = ", ".join(f"shard {i}: {revision}" for i, revision in enumerate(revisions))
            raise SchemaNotAtHead(f"the shards are at different schema revisions ({listed}): run `fpstore db upgrade`")
        return revisions[0]

    def router_revision(self) -> str | None:
        """The router's own revision (``migrations/router``)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": "fpstore_router_version"}
                                              ).get_current_revision()

    def check_schema(self, *, upgrade_empty: bool = False) -> None:
        """Check every shard (see :meth:`Store.check_schema`) and the router.

        One shard after the other: Alembic's commands are not thread-safe (an empty shard is migrated).
        """
        from alembic.script import ScriptDirectory

        for index in range(self.n_shards):
            self.on_shard(index, lambda shard: shard.check_schema(upgrade_empty=upgrade_empty))
        head = ScriptDirectory.from_config(router_migrations_config()).get_current_head()
        if self.router_revision() != head:
            raise SchemaNotAtHead(f"the cluster's router {self.url} is not at revision {head}: run `fpstore db upgrade`")

    def upgrade(self, revision: str = "head") -> None:
        """Upgrade every shard to ``revision`` (one after the other, as Alembic needs), then the router to its head."""
        for shard in self.shards:
            shard.upgrade(revision)
        upgrade_router(self)

    def downgrade(self, revision: str) -> None:
        """Refused: the router's functions call the shards' current ones (downgrade a shard through its own URL)."""
        self.one_database("downgrading (`fpstore db downgrade`)")

    def downgrade_drops_data(self, revision: str) -> bool:
        """Refused, as :meth:`downgrade` is."""
        self.one_database("downgrading (`fpstore db downgrade`)")
        return False

    def one_database(self, what: str) -> None:
        """Refuse ``what``, which works on one database."""
        raise ParameterError(f"{what} works on one database, not through a cluster's router: run it with each "
                             "shard's URL (`fpstore cluster status` lists them)")

    # -- profile ----------------------------------------------------------------------------------------
    def ensure_profile(self, params: FingerprintParams) -> dict[str, int]:
        """Record ``params`` on every shard (see :meth:`Store.ensure_profile`); the zone ids agree by construction."""
        return self.on_every_shard(lambda shard: shard.ensure_profile(params))[0]

    def params(self, *, duration_s: float | None = 30.0) -> FingerprintParams:
        """The parameters of the catalogue (every shard holds the same profile)."""
        return self.on_shard(0, lambda shard: shard.params(duration_s=duration_s))

    def zone_ids(self) -> dict[str, int]:
        """``zones.id`` by zone name (the same on every shard)."""
        return self.on_shard(0, lambda shard: shard.zone_ids())

    def run(self, command_name: str, source: str, params: FingerprintParams) -> Any:
        """Refused: a run is opened on each shard that is written (``cluster.shards[k].run``)."""
        raise ParameterError("a run belongs to one shard: open it on cluster.shards[k]")

    def status(self) -> list[ShardStatus]:
        """Each shard's revision, tracks, postings and size on disk, asked of all at once.

        A shard that cannot answer (down, unreachable, or failing) is listed with ``down`` set to its
        error instead of failing the call.
        """
        def one(index: int) -> ShardStatus:
            shard = self.shards[index]
            try:
                with shard.connect() as conn:
                    has_tracks = conn.execute(text("SELECT to_regclass('tracks') IS NOT NULL")).scalar()
                    tracks, postings = conn.execute(text(
                        "SELECT count(*), coalesce(sum(n_postings), 0) FROM tracks" if has_tracks else "SELECT 0, 0"
                    )).one()
                    size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
                return ShardStatus(index, shard.url, shard.schema_revision(), int(tracks), int(postings), int(size))
            except DatabaseError as exc:
                said = exc.reason if isinstance(exc, ServerFailed) else str(exc)
                return ShardStatus(index, shard.url, None, 0, 0, 0, down=said.splitlines()[0] or type(exc).__name__)

        return list(self._pool.map(one, range(self.n_shards)))


class ClusterTracks(Tracks):
    """The tracks of every shard (``cluster.tracks``): a track's own questions go to its shard."""

    _store: ClusterStore

    def _on_owner(self, track_id: int, call: Callable[[Store], T]) -> T:
        """``call(the shard that holds track_id)``, a failure naming the shard."""
        return self._store.on_shard(shard_of_track(track_id, self._store.n_shards), call)

    def write(self, run_id: int, records: Sequence[TrackRecord], zone_ids: dict[str, int], *,
              replace: bool = False) -> list[WrittenTrack]:
        """Refused: a track is written on its shard (``cluster.shard_for_digest(sha256).tracks.write``)."""
        raise ParameterError("tracks are written on their shard: cluster.shard_for_digest(sha256).tracks.write")

    def remove(self, track_ids: Sequence[int], *, vacuum_after: bool = False) -> Removal:
        """Delete tracks on their shards, each shard in one transaction (see :meth:`Tracks.remove`).

        Every id is checked on its shard before anything is removed; a removal that fails on one shard
        after another committed leaves whole tracks only (run it again for the rest).
        """
        grouped = self._store.by_shard(sorted({int(t) for t in track_ids}))
        if not grouped:
            raise ParameterError("give at least one track id to remove")
        # Asked of the shards now (Tracks.names keeps the names of tracks removed since it read them).
        found = {t for stored in self._store.on_shards({k: _stored_of(ids) for k, ids in grouped.items()}).values()
                 for t in stored}
        missing = [t for ids in grouped.values() for t in ids if t not in found]
        if missing:
            raise NotFound(f"no track with id {', '.join(map(str, sorted(missing)))}: nothing removed")
        postings_before = sum(self._store.on_every_shard(_postings_held))
        removals = [self._store.shards[k].tracks.remove(ids, vacuum_after=vacuum_after) for k, ids in grouped.items()]
        return Removal(sorted(t for r in removals for t in r.track_ids), sum(r.postings_removed for r in removals),
                       postings_before, vacuum_after)

    def id_by_sha256(self, sha256: bytes) -> int | None:
        """The id of the track with this content digest, asked of the shard the digest picks."""
        return self._store.on_shard(shard_of_digest(sha256, self._store.n_shards),
                                    lambda shard: shard.tracks.id_by_sha256(sha256))

    def ids_by_sha256(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        """Track id by content digest, each asked of its shard."""
        found: dict[bytes, int] = {}
        for digest in digests:
            if (track_id := self.id_by_sha256(digest)) is not None:
                found[digest] = track_id
        return found

    def count(self) -> int:
        """Tracks on every shard."""
        return sum(self._store.on_every_shard(lambda shard: shard.tracks.count()))

    def names(self, track_ids: Sequence[int]) -> dict[int, str]:
        """File names of the given tracks, from their shards."""
        names: dict[int, str] = {}
        for found in self._store.on_shards({k: _names_of(ids) for k, ids in self._store.by_shard(track_ids).items()}
                                           ).values():
            names.update(found)
        return names

    def ids_by_file_name(self) -> dict[str, int]:
        """Track id by file name and stem over every shard, the lowest id winning as on one database."""
        found: dict[str, int] = {}
        for shard_names in self._store.on_every_shard(lambda shard: shard.tracks.ids_by_file_name()):
            for name, track_id in shard_names.items():
                found[name] = min(track_id, found.get(name, track_id))
        return found

    def postings(self, track_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """All postings of one track, from its shard."""
        return self._on_owner(track_id, lambda shard: shard.tracks.postings(track_id))

    def search(self, *, name: str | None = None, run_id: int | None = None, min_postings: int | None = None,
               max_postings: int | None = None, limit: int | None = None) -> TrackListing:
        """Tracks of every shard in id order, filtered (``run_id`` is a run of some shard)."""
        listings = self._store.on_every_shard(lambda shard: shard.tracks.search(
            name=name, run_id=run_id, min_postings=min_postings, max_postings=max_postings, limit=limit))
        tracks = sorted((t for listing in listings for t in listing.tracks), key=lambda t: int(t["id"]))
        return TrackListing(tracks[:limit] if limit is not None else tracks, sum(x.n_matching for x in listings),
                            sum(x.postings_matching for x in listings), sum(x.n_total for x in listings))

    def find(self, ref: str) -> int:
        """The id of the track named by ``ref`` (an id, or a file name held by one track of the catalogue)."""
        if ref.isdigit():
            return self._on_owner(int(ref), lambda shard: shard.tracks.find(ref))
        found = [t for listing in self._store.on_every_shard(lambda shard: _ids_named(shard, ref)) for t in listing]
        if len(found) != 1:
            what = "no track" if not found else f"{len(found)} tracks ({', '.join(map(str, sorted(found)))})"
            raise NotFound(f"{what} answer(s) to {ref!r}: give a track id (see `fpstore tracks list`)")
        return found[0]

    def show(self, ref: str) -> dict[str, Any]:
        """One track's row and statistics, from its shard (``shared_hashes`` counts that shard's other tracks)."""
        track_id = self.find(ref)
        return self._on_owner(track_id, lambda shard: shard.tracks.show(str(track_id)))


def _names_of(track_ids: list[int]) -> Callable[[Store], dict[int, str]]:
    return lambda shard: shard.tracks.names(track_ids)


def _stored_of(track_ids: list[int]) -> Callable[[Store], list[int]]:
    def stored(shard: Store) -> list[int]:
        with shard.connect() as conn:
            return [int(t) for t in conn.execute(text("SELECT id FROM tracks WHERE id = ANY(:ids)"),
                                                 {"ids": track_ids}).scalars()]
    return stored


def _postings_held(shard: Store) -> int:
    with shard.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(n_postings), 0) FROM tracks")).scalar_one())


def _ids_named(shard: Store, file_name: str) -> list[int]:
    with shard.connect() as conn:
        return [int(t) for t in conn.execute(text("SELECT id FROM tracks WHERE file_name = :n"), {"n": file_name})
                .scalars()]


class ClusterLookup(Lookup):
    """Reads for matching over every shard (``cluster.lookup``); the SQL vote runs on the router."""

    _store: ClusterStore

    def postings(self, key_zones: np.ndarray, key_hashes: np.ndarray,
                 caps: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Every shard's postings of the keys, concatenated (see :meth:`Lookup.postings`; ``caps`` per shard)."""
        return self.run_everywhere(LookupStatement.of(key_zones, key_hashes, caps))

    def prefetch(self, keys_of: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Nothing: :meth:`postings` asks every shard each time, and a look fetched ahead would never be taken."""

    def run_everywhere(self, lookup: LookupStatement) -> tuple[np.ndarray, ...]:
        """The statement run on every shard, their postings concatenated."""
        found = self._store.on_every_shard(lambda shard: shard.lookup.run(lookup))
        return tuple(np.concatenate(column) for column in zip(*found))

    def sql_vote(self, zone_names: list[str], hashes: np.ndarray, t_query_frames: np.ndarray, *,
                 top_k: int, count: str = "pairs", null: str = "poisson") -> list[tuple[int, int, int, float]]:
        """The router's SQL vote (see :meth:`Lookup.sql_vote`); a shard that fails it is named.

        PL/Proxy's error names the shard's conninfo only: every shard is then asked for its revision,
        and the first that cannot answer is the one reported.
        """
        try:
            return super().sql_vote(zone_names, hashes, t_query_frames, top_k=top_k, count=count, null=null)
        except psycopg.Error as exc:
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._store.on_every_shard(lambda shard: shard.schema_revision())
            raise DatabaseError(f"the cluster's router {self._store.url} failed to vote: {said}") from exc

    def _read_frames(self, track_ids: np.ndarray) -> np.ndarray:
        """``tracks.n_frames`` of each track, from its shard (0 for an id not stored)."""
        frames = np.zeros(track_ids.size, np.int64)
        owners = track_ids % self._store.n_shards
        mine = {k: owners == k for k in np.unique(owners).tolist()}
        found = self._store.on_shards({k: _frames_of(track_ids[where]) for k, where in mine.items()})
        for k, where in mine.items():
            frames[where] = found[k]
        return frames


def _frames_of(track_ids: np.ndarray) -> Callable[[Store], np.ndarray]:
    return lambda shard: shard.lookup.track_frames(track_ids)


class ClusterDuplicates(Duplicates):
    """Stored copies of one recording across the shards (``cluster.duplicates``)."""

    _store: ClusterStore

    def pairs(self, *, zone_id: int | None, min_ratio: float, max_postings_per_hash: int) -> list[DuplicatePair]:
        """Refused: the listing is one self-join of ``hashes``, which a cluster does not have in one place.

        A new track is still checked against every shard when it is ingested.
        """
        self._store.one_database("listing stored duplicates (`fpstore tracks duplicates`)")
        return []

    def n_postings(self, track_ids: Sequence[int], *, except_sha256: bytes = b"") -> dict[int, tuple[int, float]]:
        """Postings and duration of each given track, from its shard (see :meth:`Duplicates.n_postings`)."""
        found: dict[int, tuple[int, float]] = {}
        for per_shard in self._store.on_shards({k: _n_postings_of(ids, except_sha256)
                                                for k, ids in self._store.by_shard(track_ids).items()}).values():
            found.update(per_shard)
        return found


def _n_postings_of(track_ids: list[int], except_sha256: bytes) -> Callable[[Store], dict[int, tuple[int, float]]]:
    return lambda shard: shard.duplicates.n_postings(track_ids, except_sha256=except_sha256)


class ClusterStats(Stats):
    """The report's aggregates computed on the shards and combined (``cluster.stats``)."""

    _store: ClusterStore

    def zone_rows(self) -> list[dict[str, Any]]:
        """The notebook's report over the catalogue: counts summed, distinct hashes united across shards."""
        per_shard = self._store.on_every_shard(lambda shard: shard.stats.zone_rows())
        distinct = self._store.on_every_shard(_distinct_hashes)
        n_tracks = sum(int(rows[0]["num_tracks"]) for rows in per_shard if rows)
        size = sum(int(rows[0]["db_size_bytes"]) for rows in per_shard if rows)
        combined = []
        for i, row in enumerate(per_shard[0]):
            total = sum(int(rows[i]["total_hashes"]) for rows in per_shard)
            unique = np.unique(np.concatenate([shard_hashes.get(row["zone"], np.zeros(0, np.int32))
                                               for shard_hashes in distinct])).size
            combined.append({**row, "total_hashes": total, "num_tracks": n_tracks, "db_size_bytes": size,
                             "avg_hashes_per_track": total / n_tracks if n_tracks else None,
                             "unique_hashes": unique, "postings_per_hash": total / unique if unique else None})
        return combined

    def relation_sizes(self) -> list[dict[str, Any]]:
        """Every fpstore table and index of every shard, bytes summed by name."""
        summed: dict[tuple[str, str, str], int] = {}
        for rows in self._store.on_every_shard(lambda shard: shard.stats.relation_sizes()):
            for row in rows:
                key = (row["name"], row["kind"], row["table_name"])
                summed[key] = summed.get(key, 0) + int(row["bytes"])
        return [{"name": n, "kind": k, "table_name": t, "bytes": b} for (n, k, t), b in sorted(summed.items(),
                key=lambda item: (item[0][2], item[0][1] != "table", item[0][0]))]

    def postings_per_track(self) -> list[tuple[str, int, int]]:
        """``(zone name, track id, postings)`` of every shard (a track's postings are all on its shard)."""
        return [row for rows in self._store.on_every_shard(lambda shard: shard.stats.postings_per_track())
                for row in rows]

    def posting_list_lengths(self) -> list[tuple[str, int, int]]:
        """The histogram of posting-list lengths over the catalogue: each hash's lists summed across shards."""
        histogram: dict[tuple[str, int], int] = {}
        for zone_name, lengths in _summed_list_lengths(self._store.on_every_shard(_list_lengths)).items():
            values, counts = np.unique(lengths, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                histogram[(zone_name, value)] = count
        return [(zone_name, n, count) for (zone_name, n), count in sorted(histogram.items())]

    def snapshot(self) -> Snapshot:
        """Every shard's snapshot (each consistent, each holding whole tracks), tracks merged by id."""
        shots = self._store.on_every_shard(lambda shard: shard.stats.snapshot())
        durations = {shot.duration_s for shot in shots if shot.tracks}
        return Snapshot(sorted(t for shot in shots for t in shot.tracks), shots[0].zone_names,
                        durations.pop() if len(durations) == 1 else shots[0].duration_s,
                        tuple(stream for shot in shots for stream in shot.copy_streams))


def _distinct_hashes(shard: Store) -> dict[str, np.ndarray]:
    """Each zone's distinct stored hashes on one shard, as int32 arrays (one bytea per zone)."""
    with shard.raw() as conn, conn.cursor(binary=True) as cur:
        cur.execute("SELECT z.name, (SELECT string_agg(int4send(d.hash), ''::bytea) FROM"
                    " (SELECT DISTINCT hash FROM hashes WHERE zone = z.id) d) FROM zones z")
        return {str(name): np.frombuffer(blob or b"", ">i4").astype(np.int32) for name, blob in cur.fetchall()}


def _list_lengths(shard: Store) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each zone's ``(hashes, postings per hash)`` on one shard."""
    with shard.raw() as conn, conn.cursor(binary=True) as cur:
        cur.execute("SELECT z.name, (SELECT string_agg(int4send(l.hash) || int4send(l.n::int), ''::bytea) FROM"
                    " (SELECT hash, count(*) AS n FROM hashes WHERE zone = z.id GROUP BY hash) l) FROM zones z")
        pairs = {str(name): np.frombuffer(blob or b"", ">i4").reshape(-1, 2) for name, blob in cur.fetchall()}
    return {name: (found[:, 0].astype(np.int64), found[:, 1].astype(np.int64)) for name, found in pairs.items()}


def _summed_list_lengths(per_shard: list[dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Per zone, each distinct hash's postings summed over the shards."""
    summed = {}
    for zone_name in per_shard[0]:
        hashes = np.concatenate([shard[zone_name][0] for shard in per_shard if zone_name in shard])
        counts = np.concatenate([shard[zone_name][1] for shard in per_shard if zone_name in shard])
        _, slot = np.unique(hashes, return_inverse=True)
        summed[zone_name] = np.bincount(slot, weights=counts).astype(np.int64)
    return summed


# -- setting a cluster up ---------------------------------------------------------------------------------

def upgrade_router(router: Store) -> None:
    """Apply the router's migrations (``migrations/router``) up to their head."""
    from alembic import command

    config = router_migrations_config()
    with router.engine.connect() as conn:
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except Exception as exc:
            if 'extension "plproxy"' in str(exc):
                raise DatabaseError(f"the router {router.url} cannot load PL/Proxy: install it on that server "
                                    "(Debian: apt-get install postgresql-15-plproxy)") from None
            raise
        conn.commit()


def _shard_urls(router: Store) -> list[str]:
    with router.connect() as conn:
        return [str(url) for url in conn.execute(text("SELECT url FROM cluster_shards ORDER BY shard_index")).scalars()]


def init_cluster(router_url: str, shard_urls: Sequence[str]) -> list[ShardStatus]:
    """Set up a cluster: migrate the shards, number their track ids, and describe them on the router.

    Parameters
    ----------
    router_url : str
        A database on a PostgreSQL server with PL/Proxy; its role must be allowed to create the extension.
    shard_urls : sequence of str
        S databases (S a power of two, at most 512), each empty of tracks: fpstore databases or new ones.

    Returns
    -------
    shards : list of ShardStatus

    Raises
    ------
    ParameterError
        If S is not a power of two, a shard is given twice, a shard holds tracks, or the router already
        describes other shards (running it again with the same shards only upgrades them).
    """
    n_shards = len(shard_urls)
    if n_shards < 1 or n_shards > _MAX_SHARDS or n_shards & (n_shards - 1):
        raise ParameterError(f"{n_shards} shards: give a power of two (1, 2, 4, ... {_MAX_SHARDS}) of --shard URLs")
    urls = [normalize_url(url).render_as_string(hide_password=False) for url in shard_urls]
    if len(set(urls)) != n_shards:
        raise ParameterError("a shard URL is given twice: each shard is its own database")
    with opened(router_url) as router:
        upgrade_router(router)
        known = _shard_urls(router)
        if known and known != urls:
            raise ParameterError(f"the router {router.url} already routes to {len(known)} other shard(s): use a "
                                 "new router database, or give the same --shard URLs in the same order")
        for index, url in enumerate(urls):
            with opened(url) as shard:
                shard.upgrade()
                if not known:
                    _number_track_ids(shard, index, n_shards)
        if not known:
            with router.begin() as conn:
                conn.execute(text("INSERT INTO cluster_shards (shard_index, url, conninfo) VALUES (:i, :u, :c)"),
                             [{"i": i, "u": url, "c": conninfo(normalize_url(url))} for i, url in enumerate(urls)])
                conn.execute(text("SELECT nextval('cluster_version_seq')"))
    with open_cluster(router_url) as cluster:
        return cluster.status()


def _number_track_ids(shard: Store, index: int, n_shards: int) -> None:
    """Make the shard's new track ids ``index (mod n_shards)``; it must hold no track yet.

    The ids go on after the highest one the database ever gave (tracks stored once and removed): an id
    is never given to two tracks, and a bulk load's id block never meets an old partition's range.
    """
    with shard.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM tracks")).scalar_one():
            raise ParameterError(f"shard {index} ({shard.url}) already holds tracks: a cluster starts from empty "
                                 "shards (ingest the files again through the router)")
        first_id = _next_id_of_shard(conn, "tracks_id_seq", 1, index, n_shards)
        conn.execute(text(f"ALTER SEQUENCE tracks_id_seq INCREMENT BY {n_shards} MINVALUE 0 RESTART WITH {first_id}"))
        first_bulk_id = _next_id_of_shard(conn, "tracks_bulk_id_seq", _BULK_FIRST_ID, index, n_shards)
        conn.execute(text(f"ALTER SEQUENCE tracks_bulk_id_seq INCREMENT BY {n_shards} RESTART WITH {first_bulk_id}"))


def _next_id_of_shard(conn: Connection, sequence: str, lowest: int, index: int, n_shards: int) -> int:
    """The first id ``index (mod n_shards)`` of at least ``lowest`` that ``sequence`` has not given yet."""
    given = int(conn.execute(text(f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                                  f"FROM {sequence}")).scalar_one())
    first = max(given + 1, lowest)
    return first + (index - first) % n_shards


@contextlib.contextmanager
def opened(url: str) -> Iterator[Store]:
    """A Store on ``url`` (no router detection), its engine disposed at the end."""
    engine = new_engine(normalize_url(url), pool_pre_ping=True)
    try:
        yield Store(engine)
    finally:
        engine.dispose()


def cluster_of(router_engine: Engine) -> ClusterStore:
    """The cluster behind a router's engine: a store on each shard it lists."""
    router = Store(router_engine)
    urls = _shard_urls(router)
    if not urls:
        raise FpstoreError(f"the router {router.url} lists no shards: run `fpstore cluster init`")
    engines = [new_engine(normalize_url(url), pool_pre_ping=True, pool_size=8) for url in urls]
    return ClusterStore(router_engine, [Store(engine) for engine in engines])


@contextlib.contextmanager
def open_cluster(router_url: str) -> Iterator[ClusterStore]:
    """The cluster whose router is at ``router_url``."""
    engine = new_engine(normalize_url(router_url), pool_pre_ping=True)
    try:
        cluster = cluster_of(engine)
        try:
            yield cluster
        finally:
            cluster.close()
    finally:
        engine.dispose()

