"""Track management: list tracks, show one track's statistics, remove tracks with their postings.

``hashes`` has no index on ``track_id`` (it would cost about as many bytes as the ``(zone, hash)``
index), so anything that reads or deletes one track's postings scans ``hashes`` once: show and remove
take many tracks per call for that reason.

Conventions
-----------
- Counts of postings are rows of ``hashes``; ``tracks.n_postings`` is the count written at ingest.
- Times in ``hashes`` are STFT frames; durations are seconds (``_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from fpstore.db.store import Store
from fpstore.errors import NotFound, ParameterError

#: Removing more than this share of all postings prints VACUUM/ANALYZE advice.
VACUUM_ADVICE_SHARE = 0.10

_TRACK_COLUMNS = "t.id, t.file_name, t.path, t.duration_s, t.n_frames, t.n_peaks, t.n_postings, t.run_id, t.ingested_at"


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


def list_tracks(store: Store, *, name: str | None = None, run_id: int | None = None,
                min_postings: int | None = None, max_postings: int | None = None,
                limit: int | None = None) -> TrackListing:
    """Tracks in id order, filtered.

    Parameters
    ----------
    store : Store
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
    store.check_schema()
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
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {_TRACK_COLUMNS} FROM tracks t WHERE {where} ORDER BY t.id LIMIT :limit"), values
        ).mappings().all()
        n_matching, postings = conn.execute(
            text(f"SELECT count(*), coalesce(sum(t.n_postings), 0) FROM tracks t WHERE {where}"), values
        ).one()
        n_total = conn.execute(text("SELECT count(*) FROM tracks")).scalar_one()
    return TrackListing([_plain(row) for row in rows], int(n_matching), int(postings), int(n_total))


def find_track(store: Store, ref: str) -> int:
    """The id of the track named by ``ref``: an id, or a file name held by exactly one track.

    Raises
    ------
    NotFound
        If no track, or several, answer to ``ref``.
    """
    with store.engine.connect() as conn:
        if ref.isdigit():
            found = conn.execute(text("SELECT id FROM tracks WHERE id = :id"), {"id": int(ref)}).scalars().all()
        else:
            found = conn.execute(text("SELECT id FROM tracks WHERE file_name = :n ORDER BY id"),
                                 {"n": ref}).scalars().all()
    if len(found) != 1:
        what = "no track" if not found else f"{len(found)} tracks ({', '.join(map(str, found))})"
        raise NotFound(f"{what} answer(s) to {ref!r}: give a track id (see `fpstore tracks list`)")
    return int(found[0])


def show_track(store: Store, ref: str) -> dict[str, Any]:
    """One track's row and per-zone statistics of its postings (scans ``hashes`` once).

    Parameters
    ----------
    store : Store
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
    store.check_schema()
    track_id = find_track(store, ref)
    with store.engine.connect() as conn:
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


@dataclass(frozen=True)
class Removal:
    """Outcome of :func:`remove_tracks`.

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


def remove_tracks(store: Store, track_ids: Sequence[int], *, vacuum: bool = False) -> Removal:
    """Delete tracks and all their postings in one transaction (one scan of ``hashes``).

    Parameters
    ----------
    store : Store
    track_ids : sequence of int
        Every id must exist; nothing is removed otherwise.
    vacuum : bool
        Run ``VACUUM (ANALYZE)`` on ``hashes`` and ``tracks`` afterwards, so the space is reused and the
        planner's statistics are fresh.

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
    store.check_schema()
    with store.engine.begin() as conn:
        postings_before = int(conn.execute(text("SELECT coalesce(sum(n_postings), 0) FROM tracks")).scalar_one())
        found = set(conn.execute(text("SELECT id FROM tracks WHERE id = ANY(:ids) FOR UPDATE"),
                                 {"ids": ids}).scalars())
        missing = [track_id for track_id in ids if track_id not in found]
        if missing:
            raise NotFound(f"no track with id {', '.join(map(str, missing))}: nothing removed")
        removed = conn.execute(text("DELETE FROM hashes WHERE track_id = ANY(:ids)"), {"ids": ids}).rowcount
        conn.execute(text("DELETE FROM tracks WHERE id = ANY(:ids)"), {"ids": ids})
    if vacuum:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) hashes"))
            conn.execute(text("VACUUM (ANALYZE) tracks"))
    return Removal(ids, int(removed), postings_before, vacuum)


def _plain(row: Any) -> dict[str, Any]:
    """A result row as a dict of JSON-friendly values (timestamps as ISO 8601 text)."""
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in dict(row).items()}
