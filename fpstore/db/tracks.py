"""Tracks: the ordinary write path, deletion with postings, and the queries about tracks.

The ordinary path (:meth:`Tracks.write`) inserts a batch of tracks and COPYs all their postings into
``hashes`` in one transaction; the rows land in the partition ``hashes_main`` (track ids below 1e9),
whose (zone, hash) index is maintained row by row. It suits small additions; big runs take the bulk
path (:mod:`fpstore.db.bulk`). Both insert ``tracks`` rows with :func:`insert_tracks` and delete with
:func:`delete_tracks`, so a reader never sees a track without its postings or the reverse.

``hashes`` has no index on ``track_id`` (it would cost about as many bytes as the ``(zone, hash)``
index), so anything that reads or deletes one track's postings scans ``hashes`` once: show and remove
take many tracks per call for that reason.

Conventions
-----------
- ``sha256`` is the 32-byte digest of a file's content; it identifies a track (unique in ``tracks``).
- Counts of postings are rows of ``hashes``; ``tracks.n_postings`` is the count written at ingest.
- Times in ``hashes`` are STFT frames; durations are seconds (``_s``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from sqlalchemy import text

from fpstore.db.maintenance import vacuum
from fpstore.db.pgcopy import copy_in, copy_out, decode_postings, postings_payload
from fpstore.errors import NotFound, ParameterError
from fpstore.signal.fingerprint import Fingerprint

if TYPE_CHECKING:
    from fpstore.db.database import Database

#: Removing more than this share of all postings prints VACUUM/ANALYZE advice.
VACUUM_ADVICE_SHARE = 0.10

_TRACK_COLUMNS = "t.id, t.file_name, t.path, t.duration_s, t.n_frames, t.n_peaks, t.n_postings, t.run_id, t.ingested_at"


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
    replaces : tuple of int
        Stored tracks (copies of the same recording) deleted, with their postings, in the transaction
        that writes this one.
    """

    path: str
    sha256: bytes
    fingerprint: Fingerprint
    replaces: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrackRow:
    """A ``tracks`` row to insert: a track's id and everything stored about it but its postings."""

    track_id: int
    path: str
    sha256: bytes
    duration_s: float
    n_frames: int
    n_peaks: int
    n_postings: int

    @classmethod
    def of(cls, record: TrackRecord, track_id: int) -> TrackRow:
        """The row of ``record`` under the id ``track_id``."""
        fp = record.fingerprint
        return cls(track_id, record.path, record.sha256, fp.duration_s, fp.n_frames, fp.n_peaks, fp.n_postings)


@dataclass(frozen=True)
class WrittenTrack:
    """Outcome of writing one :class:`TrackRecord`: its new id, or None if its content was already stored."""

    record: TrackRecord
    track_id: int | None


def insert_tracks(cur: psycopg.Cursor[Any], run_id: int, rows: Sequence[TrackRow]) -> set[int]:
    """Insert ``rows`` into ``tracks`` in the current transaction; skip those whose content is stored.

    Rows go in sorted by digest: concurrent writers inserting overlapping tracks each wait on the other's
    uncommitted ``sha256`` index entries, so all must take them in one order, or two can deadlock.

    Returns
    -------
    inserted : set of int
        Ids of the rows inserted (a row whose ``sha256`` is already stored is not).
    """
    by_digest = sorted(rows, key=lambda row: row.sha256)
    cur.execute(
        "INSERT INTO tracks (id, path, file_name, sha256, duration_s, n_frames, n_peaks, n_postings, run_id)"
        " SELECT i, p, f, d, s, nf, np, npost, %s FROM unnest(%s::int[], %s::text[], %s::text[], %s::bytea[],"
        " %s::float8[], %s::int[], %s::int[], %s::int[]) WITH ORDINALITY AS u(i, p, f, d, s, nf, np, npost, o)"
        " ORDER BY o ON CONFLICT (sha256) DO NOTHING RETURNING id",
        (run_id, [r.track_id for r in by_digest], [r.path for r in by_digest],
         [os.path.basename(r.path) for r in by_digest], [r.sha256 for r in by_digest],
         [r.duration_s for r in by_digest], [r.n_frames for r in by_digest], [r.n_peaks for r in by_digest],
         [r.n_postings for r in by_digest]),
    )
    return {int(row[0]) for row in cur.fetchall()}


def delete_tracks(cur: psycopg.Cursor[Any], track_ids: Sequence[int]) -> int:
    """Delete tracks and all their postings in the current transaction (one scan of ``hashes``).

    Returns
    -------
    postings_removed : int
    """
    cur.execute("DELETE FROM hashes WHERE track_id = ANY(%s)", (list(track_ids),))
    removed = cur.rowcount
    cur.execute("DELETE FROM tracks WHERE id = ANY(%s)", (list(track_ids),))
    return removed


def delete_replaced_tracks(cur: psycopg.Cursor[Any], digests: Sequence[bytes], track_ids: Sequence[int]) -> None:
    """Delete the stored tracks (and postings) that new ones replace, in the new ones' transaction.

    Parameters
    ----------
    digests : sequence of bytes
        Contents being re-ingested (``--force``): their stored tracks go.
    track_ids : sequence of int
        Tracks named by the new records' ``replaces`` (copies of the same recording); ids no longer
        stored are ignored.
    """
    if not digests and not track_ids:
        return
    cur.execute("SELECT id FROM tracks WHERE sha256 = ANY(%s) OR id = ANY(%s) ORDER BY sha256 FOR UPDATE",
                (list(digests), list(track_ids)))
    stored = [int(row[0]) for row in cur.fetchall()]
    if stored:
        delete_tracks(cur, stored)


def count_run(cur: psycopg.Cursor[Any], run_id: int, *, added: int, skipped: int, postings: int) -> None:
    """Add a written batch to its run's counts, in the batch's transaction."""
    cur.execute(
        "UPDATE runs SET tracks_added = tracks_added + %s, tracks_skipped = tracks_skipped + %s,"
        " postings_added = postings_added + %s WHERE id = %s",
        (added, skipped, postings, run_id),
    )


@dataclass(frozen=True)
class TrackListing:
    """Tracks that matched a filter, with totals.

    Attributes
    ----------
    tracks : list of dict
        Keys ``id, file_name, path, duration_s, n_frames, n_peaks, n_postings, run_id, ingested_at``.
    n_matching : int
        Tracks that match the filter (``tracks`` may hold fewer, with a limit).
    postings_matching : int
        Postings of those tracks.
    n_total : int
        Tracks in the database.
    """

    tracks: list[dict[str, Any]]
    n_matching: int
    postings_matching: int
    n_total: int


@dataclass(frozen=True)
class Removal:
    """Outcome of :meth:`Tracks.remove`.

    Attributes
    ----------
    track_ids : list of int
        Tracks removed.
    postings_removed : int
    postings_before : int
        Postings in the database before the removal.
    vacuumed : bool
        Whether ``VACUUM (ANALYZE)`` ran afterwards.
    """

    track_ids: list[int]
    postings_removed: int
    postings_before: int
    vacuumed: bool

    @property
    def share_removed(self) -> float:
        """Fraction of all postings that were removed."""
        return self.postings_removed / self.postings_before if self.postings_before else 0.0

    @property
    def vacuum_advised(self) -> bool:
        """True when so many postings went that ``VACUUM (ANALYZE) hashes`` is worth running."""
        return not self.vacuumed and self.share_removed > VACUUM_ADVICE_SHARE


class Tracks:
    """The tracks of one database (``store.tracks``)."""

    def __init__(self, store: Database) -> None:
        self._store = store
        # File name of every stored track asked for so far (:meth:`names`): a track's name is written with
        # it and never changed, and a database never gives an id twice (its sequences only go on, a
        # cluster's shards' too), so an entry never goes stale: a track deleted since only stops being
        # voted for. Ingest and delete in other processes (another worker of ``fpstore serve``) need no
        # invalidation for the same reason. Dropping the tables starts the ids again: this process's own
        # downgrade forgets the names (:meth:`forget_names`); another process's needs this one restarted.
        self._known_names: dict[int, str] = {}

    # -- writing ------------------------------------------------------------------------------------
    def write(self, run_id: int, records: Sequence[TrackRecord], zone_ids: dict[str, int], *,
              replace: bool = False) -> list[WrittenTrack]:
        """Insert tracks and COPY all their postings in one transaction (the ordinary path).

        A track whose content is already stored (by another run, or a concurrent process) is left
        as it is and reported with ``track_id=None``, unless ``replace`` is set: then the old track
        and its postings are deleted first, in the same transaction. So are the tracks a record
        ``replaces``.

        Parameters
        ----------
        run_id : int
        records : sequence of TrackRecord
        zone_ids : dict[str, int]
            ``zones.id`` by zone name.
        replace : bool

        Returns
        -------
        written : list of WrittenTrack, in the order of ``records``
        """
        if not records:
            return []
        with self._store.raw() as conn, conn.transaction(), conn.cursor() as cur:
            delete_replaced_tracks(cur, [record.sha256 for record in records] if replace else [],
                                   [track_id for record in records for track_id in record.replaces])
            # Ids follow the order of ``records`` (the files' sorted order), whatever the insert order.
            cur.execute("SELECT nextval(pg_get_serial_sequence('tracks', 'id')) FROM generate_series(1, %s)",
                        (len(records),))
            ids = sorted(int(row[0]) for row in cur.fetchall())
            inserted = insert_tracks(cur, run_id, [TrackRow.of(r, i) for r, i in zip(records, ids)])
            written = [WrittenTrack(r, i if i in inserted else None) for r, i in zip(records, ids)]
            added = [(w.track_id, w.record.fingerprint) for w in written if w.track_id is not None]
            copy_in(cur, "hashes", postings_payload(added, zone_ids))
            count_run(cur, run_id, added=len(added), skipped=len(written) - len(added),
                      postings=sum(fp.n_postings for _, fp in added))
        return written

    def remove(self, track_ids: Sequence[int], *, vacuum_after: bool = False) -> Removal:
        """Delete tracks and all their postings in one transaction (one scan of ``hashes``).

        Parameters
        ----------
        track_ids : sequence of int
            Every id must exist; nothing is removed otherwise.
        vacuum_after : bool
            Run ``VACUUM (ANALYZE)`` on ``hashes`` and ``tracks`` afterwards, so the space is reused and
            the planner's statistics are fresh.

        Returns
        -------
        removal : Removal

        Raises
        ------
        ParameterError
            If ``track_ids`` is empty.
        NotFound
            If an id names no track (the message lists them); nothing is removed.
        """
        ids = sorted({int(track_id) for track_id in track_ids})
        if not ids:
            raise ParameterError("give at least one track id to remove")
        self._store.check_schema()
        with self._store.raw() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT coalesce(sum(n_postings), 0) FROM tracks")
            postings_before = int(_one(cur)[0])
            cur.execute("SELECT id FROM tracks WHERE id = ANY(%s) FOR UPDATE", (ids,))
            found = {int(row[0]) for row in cur.fetchall()}
            missing = [track_id for track_id in ids if track_id not in found]
            if missing:
                raise NotFound(f"no track with id {', '.join(map(str, missing))}: nothing removed")
            removed = delete_tracks(cur, ids)
        if vacuum_after:
            vacuum(self._store, ["hashes", "tracks"])
        return Removal(ids, removed, postings_before, vacuum_after)

    # -- reading --------------------------------------------------------------------------------------
    def id_by_sha256(self, sha256: bytes) -> int | None:
        """The id of the track with this content digest, or None."""
        with self._store.connect() as conn:
            found = conn.execute(text("SELECT id FROM tracks WHERE sha256 = :d"), {"d": sha256}).scalar()
        return None if found is None else int(found)

    def stored_cut_s(self, track_id: int) -> tuple[bool, float | None]:
        """Whether the track is stored, and the seconds its run loaded per file (``runs.duration_s``; None: whole files)."""
        with self._store.connect() as conn:
            row = conn.execute(text("SELECT r.duration_s FROM tracks t JOIN runs r ON r.id = t.run_id WHERE t.id = :i"),
                               {"i": track_id}).first()
        return (False, None) if row is None else (True, None if row[0] is None else float(row[0]))

    def ids_by_sha256(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        """Track id by content digest, for those of ``digests`` that are stored."""
        with self._store.connect() as conn:
            rows = conn.execute(text("SELECT sha256, id FROM tracks WHERE sha256 = ANY(:d)"),
                                {"d": list(digests)}).all()
        return {bytes(digest): int(track_id) for digest, track_id in rows}

    def count(self) -> int:
        """Number of tracks stored."""
        with self._store.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM tracks")).scalar_one())

    def names(self, track_ids: Sequence[int]) -> dict[int, str]:
        """File names of the given tracks, read from the database only for ids not asked for before.

        An id is answered if its track was stored when first asked for (a track removed since keeps its
        name here: use :meth:`find` or :meth:`search` to tell whether a track is stored).

        The matcher asks for the names of the tracks it ranks at every answer; a long-lived process (``fpstore
        serve``) then reads each track's name once.
        """
        known = self._known_names
        missing = sorted({int(track_id) for track_id in track_ids} - known.keys())
        if missing:
            with self._store.raw() as conn, conn.cursor() as cur:
                cur.execute("SELECT id, file_name FROM tracks WHERE id = ANY(%s)", (missing,))
                known.update((int(track_id), str(name)) for track_id, name in cur.fetchall())
        return {int(track_id): known[int(track_id)] for track_id in track_ids if int(track_id) in known}

    def forget_names(self) -> None:
        """Forget the names :meth:`names` read: the tracks table was dropped, and its ids start again."""
        self._known_names.clear()

    def ids_by_file_name(self) -> dict[str, int]:
        """Track id by file name and by file-name stem (``track001.mp3`` and ``track001``)."""
        with self._store.connect() as conn:
            rows = conn.execute(text("SELECT id, file_name FROM tracks ORDER BY id")).all()
        found: dict[str, int] = {}
        for track_id, file_name in rows:
            found[file_name] = int(track_id)
            found.setdefault(os.path.splitext(file_name)[0], int(track_id))
        return found

    def postings(self, track_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """All postings of one track, per zone name, as ``(hashes uint32, t_anchor_frames int32)``.

        Raises
        ------
        NotFound
            If there is no track ``track_id``.
        """
        with self._store.raw() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM tracks WHERE id = %s", (track_id,))
            if cur.fetchone() is None:
                raise NotFound(f"track id={track_id} is not in the database")
            rows = decode_postings(copy_out(cur, "WHERE track_id = %s", (track_id,)))
        zone_col = rows["zone"].astype(np.int16)
        hash_col = rows["hash"].astype(np.int32).view(np.uint32)
        t_col = rows["t_anchor"].astype(np.int32)
        return {name: (hash_col[zone_col == zone_id], t_col[zone_col == zone_id])
                for name, zone_id in self._store.zone_ids().items()}

    def search(self, *, name: str | None = None, run_id: int | None = None, min_postings: int | None = None,
             max_postings: int | None = None, limit: int | None = None) -> TrackListing:
        """Tracks in id order, filtered.

        Parameters
        ----------
        name : str or None
            Keep file names matching this pattern, ``*`` and ``?`` as in a shell, letter case ignored.
        run_id : int or None
            Keep tracks added by this run.
        min_postings, max_postings : int or None
            Keep tracks with at least / at most this many postings.
        limit : int or None
            Return at most this many tracks (the counts still cover every match).

        Returns
        -------
        listing : TrackListing

        Raises
        ------
        ParameterError
            If ``limit`` is not positive.
        """
        if limit is not None and limit < 1:
            raise ParameterError(f"limit={limit} must be a positive number of tracks")
        self._store.check_schema()
        pattern = None
        if name is not None:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = escaped.replace("*", "%").replace("?", "_")
        where = (
            "(CAST(:pattern AS text) IS NULL OR t.file_name ILIKE :pattern)"
            " AND (CAST(:run_id AS int) IS NULL OR t.run_id = :run_id)"
            " AND (CAST(:low AS int) IS NULL OR t.n_postings >= :low)"
            " AND (CAST(:high AS int) IS NULL OR t.n_postings <= :high)"
        )
        values = {"pattern": pattern, "run_id": run_id, "low": min_postings, "high": max_postings, "limit": limit}
        with self._store.connect() as conn:
            rows = conn.execute(
                text(f"SELECT {_TRACK_COLUMNS} FROM tracks t WHERE {where} ORDER BY t.id LIMIT :limit"), values
            ).mappings().all()
            n_matching, postings = conn.execute(
                text(f"SELECT count(*), coalesce(sum(t.n_postings), 0) FROM tracks t WHERE {where}"), values
            ).one()
            n_total = conn.execute(text("SELECT count(*) FROM tracks")).scalar_one()
        return TrackListing([_plain(row) for row in rows], int(n_matching), int(postings), int(n_total))

    def find(self, ref: str) -> int:
        """The id of the track named by ``ref``: an id, or a file name held by exactly one track.

        Raises
        ------
        NotFound
            If no track, or several, answer to ``ref``.
        """
        with self._store.connect() as conn:
            if ref.isdigit():
                found = conn.execute(text("SELECT id FROM tracks WHERE id = :id"), {"id": int(ref)}).scalars().all()
            else:
                found = conn.execute(text("SELECT id FROM tracks WHERE file_name = :n ORDER BY id"),
                                     {"n": ref}).scalars().all()
        if len(found) != 1:
            what = "no track" if not found else f"{len(found)} tracks ({', '.join(map(str, found))})"
            raise NotFound(f"{what} answer(s) to {ref!r}: give a track id (see `fpstore tracks list`)")
        return int(found[0])

    def show(self, ref: str) -> dict[str, Any]:
        """One track's row and per-zone statistics of its postings (scans ``hashes`` once).

        Parameters
        ----------
        ref : str
            Track id, or a file name held by one track.

        Returns
        -------
        track : dict
            The ``tracks`` row, its run's command and source, and ``zones``: per zone ``zone, postings,
            unique_hashes, shared_hashes`` (hashes some other track has too, in the same zone),
            ``first_anchor``/``last_anchor`` (frames) and ``postings_per_s``.

        Raises
        ------
        NotFound
            If ``ref`` names no track or several.
        """
        self._store.check_schema()
        track_id = self.find(ref)
        with self._store.connect() as conn:
            row = conn.execute(
                text(f"SELECT {_TRACK_COLUMNS}, r.command AS run_command, r.source AS run_source "
                     "FROM tracks t JOIN runs r ON r.id = t.run_id WHERE t.id = :id"), {"id": track_id}
            ).mappings().one()
            zones = conn.execute(text(
                "WITH mine AS (SELECT zone, hash, t_anchor FROM hashes WHERE track_id = :id) "
                "SELECT z.name AS zone, count(m.hash) AS postings, count(DISTINCT m.hash) AS unique_hashes, "
                " count(DISTINCT m.hash) FILTER (WHERE EXISTS (SELECT 1 FROM hashes o WHERE o.zone = m.zone"
                "   AND o.hash = m.hash AND o.track_id <> :id)) AS shared_hashes, "
                " min(m.t_anchor) AS first_anchor, max(m.t_anchor) AS last_anchor "
                "FROM zones z LEFT JOIN mine m ON m.zone = z.id GROUP BY z.id, z.name ORDER BY z.id"
            ), {"id": track_id}).mappings().all()
        track = _plain(row)
        seconds = track["duration_s"] or 0.0
        track["zones"] = [
            {**_plain(zone), "postings_per_s": zone["postings"] / seconds if seconds else None} for zone in zones
        ]
        return track


def _one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


def _plain(row: Any) -> dict[str, Any]:
    """A result row as a dict of JSON-friendly values (timestamps as ISO 8601 text)."""
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in dict(row).items()}
