"""The seed notebook's ``hash_db.pkl``: import it into PostgreSQL, export the database back to it.

The notebook's database is a dict ``{"meta", "tracks", "index"}``:

- ``meta``: ``Fs, N, H, duration, bin_max, peak_params{dist_freq, dist_time, thresh},
  zones[{name, df, dt_min, dt_max}], top_k_targets, created_at_unix, elapsed_seconds``;
- ``tracks``: ``{track_id: file name}``;
- ``index``: ``{zone name: {hash: [posting, ...]}}`` with ``posting = (track_id << 16) | (t_anchor & 0xFFFF)``.

Conventions
-----------
- Hashes are the notebook's unsigned 32-bit values (Python ints); the database stores the same bits
  signed (:func:`fpstore.signal.hashing.hash_keys`).
- ``t_anchor`` is in STFT frames. A posting keeps only its low 16 bits, so an export refuses a database
  holding an anchor at frame 65536 or later, or more than 65536 tracks.
- An imported track has no audio content to digest: its ``sha256`` is
  ``SHA-256(b"fpstore-import:" + SHA-256(pickle file) + b":" + str(pickle track id) + b":" + file name)``,
  so importing the same pickle file twice is recognised (its tracks are skipped). Its ``path`` is
  ``<pickle path>#<pickle track id>/<file name>``, ``n_peaks`` is 0 (the pickle does not hold it) and
  ``n_frames``/``duration_s`` are lower bounds (last anchor frame + 1).
- A pickle track that duplicates a stored track by content (:mod:`fpstore.duplicates`: an export of
  this database, or the same audio ingested) is skipped, kept or replaces it (``on_duplicate``); it is
  compared with the tracks stored before the import, not with the pickle's other tracks.
- Exported track ids are ``0 .. n_tracks - 1`` in the order of ``tracks.id``; posting lists are sorted
  (the notebook appends them in that order), hashes come in the order of their first posting, then by
  value: the notebook's own order, except among the targets of one anchor (it orders those by magnitude,
  which the database does not keep).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fpstore.db.contract import Catalogue
from fpstore.db.pgcopy import decode_postings
from fpstore.db.tracks import TrackRecord
from fpstore.duplicates import DEFAULT_MIN_RATIO, DuplicateCheck, OnDuplicate, OnExcerpt
from fpstore.errors import ParameterError, ProfileMismatch
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.hashing import ZoneHashes
from fpstore.signal.params import FingerprintParams, Zone

#: Bits of a packed posting given to ``t_anchor``; ``track_id`` gets the bits above.
POSTING_T_BITS = 16
POSTING_T_MASK = (1 << POSTING_T_BITS) - 1

_META_KEYS = {"Fs", "N", "H", "duration", "bin_max", "peak_params", "zones", "top_k_targets"}


@dataclass
class PickleSummary:
    """What an import or export moved.

    Attributes
    ----------
    path : str
        The pickle file.
    run_id : int or None
        The run recorded for an import (None for an export).
    n_tracks : int
        Tracks written (import) or read (export).
    postings_by_zone : dict[str, int]
        Postings written (import) or read (export).
    unique_hashes_by_zone : dict[str, int]
        Distinct hashes of the whole pickle.
    seconds : dict[str, float]
        Wall-clock time per step (``read``, ``arrays``, ``write`` ...).
    duplicates : list of (str, str)
        Import: ``(pickle track file name, what happened)`` for each track that was already stored or
        duplicates a stored track (skipped, kept or replacing it).
    n_skipped : int
        Import: tracks not written.
    """

    path: str
    run_id: int | None
    n_tracks: int
    postings_by_zone: dict[str, int] = field(default_factory=dict)
    unique_hashes_by_zone: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    n_skipped: int = 0

    @property
    def postings(self) -> int:
        """Postings over all zones."""
        return sum(self.postings_by_zone.values())


class _BuiltinsOnly(pickle.Unpickler):
    """Unpickle dicts, lists, numbers and strings only: loading a pickle cannot run foreign code."""

    def find_class(self, module: str, name: str) -> Any:
        raise ParameterError(
            f"the pickle refers to {module}.{name}; a notebook hash_db.pkl holds only dicts, lists, numbers "
            "and strings"
        )


def read_seed_pickle(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """Load a notebook database file, allowing only plain Python values in it.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    db : dict
        ``{"meta", "tracks", "index"}``, checked for shape (not yet for parameter ranges).
    digest : bytes
        SHA-256 of the file's bytes (32 bytes).

    Raises
    ------
    ParameterError
        If the file cannot be read, is not a pickle of plain values, or lacks a key the notebook writes.
    """
    shown = os.fsdecode(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ParameterError(f"{shown}: cannot read ({exc.strerror})") from None
    try:
        db = _BuiltinsOnly(io.BytesIO(raw)).load()
    except ParameterError as exc:
        raise ParameterError(f"{shown}: {exc}") from None
    except Exception as exc:  # pickle raises many types for a damaged file; all mean "not a pickle"
        raise ParameterError(f"{shown}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(db, dict) or {"meta", "tracks", "index"} - set(db):
        raise ParameterError(f"{shown}: not a notebook hash database (a dict with meta, tracks and index)")
    missing = _META_KEYS - set(db["meta"]) if isinstance(db["meta"], dict) else _META_KEYS
    if missing:
        raise ParameterError(f"{shown}: meta lacks {sorted(missing)}")
    if not isinstance(db["tracks"], dict) or not isinstance(db["index"], dict):
        raise ParameterError(f"{shown}: tracks and index must be dicts")
    return db, hashlib.sha256(raw).digest()


def params_from_meta(meta: dict[str, Any]) -> FingerprintParams:
    """The fingerprint parameters a notebook database was built with.

    Parameters
    ----------
    meta : dict
        The pickle's ``meta``.

    Returns
    -------
    params : FingerprintParams

    Raises
    ------
    ParameterError
        If a value is out of range; the message names the meta key.

    Examples
    --------
    >>> meta = {"Fs": 22050, "N": 2048, "H": 1024, "duration": 30.0, "bin_max": 1024,
    ...         "peak_params": {"dist_freq": 12, "dist_time": 6, "thresh": 0.01}, "top_k_targets": 5,
    ...         "zones": [{"name": "z", "df": 50, "dt_min": 1, "dt_max": 20}]}
    >>> params_from_meta(meta).zones
    (Zone(name='z', df_bins=50, dt_min_frames=1, dt_max_frames=20),)
    """
    try:
        peak = meta["peak_params"]
        zones = tuple(Zone(z["name"], z["df"], z["dt_min"], z["dt_max"]) for z in meta["zones"])
        return FingerprintParams(
            sample_rate=meta["Fs"], n_fft=meta["N"], hop_length=meta["H"], bin_max=meta["bin_max"],
            peak_dist_freq=peak["dist_freq"], peak_dist_time=peak["dist_time"], peak_thresh=peak["thresh"],
            top_k_targets=meta["top_k_targets"], duration_s=meta["duration"], zones=zones,
        )
    except (KeyError, TypeError) as exc:
        raise ParameterError(f"meta is malformed ({type(exc).__name__}: {exc})") from None
    except ParameterError as exc:
        raise ParameterError(f"meta: {exc}") from None


def meta_from_params(params: FingerprintParams, *, elapsed_seconds: float) -> dict[str, Any]:
    """The notebook's ``meta`` dict for ``params`` (inverse of :func:`params_from_meta`)."""
    return {
        "Fs": params.sample_rate, "N": params.n_fft, "H": params.hop_length,
        "duration": params.duration_s, "bin_max": params.bin_max,
        "peak_params": {"dist_freq": params.peak_dist_freq, "dist_time": params.peak_dist_time,
                        "thresh": params.peak_thresh},
        "zones": [{"name": z.name, "df": z.df_bins, "dt_min": z.dt_min_frames, "dt_max": z.dt_max_frames}
                  for z in params.zones],
        "top_k_targets": params.top_k_targets,
        "created_at_unix": time.time(),
        "elapsed_seconds": elapsed_seconds,
    }


def index_arrays(zone_index: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten one zone's ``{hash: [posting, ...]}`` into two aligned arrays, in one pass.

    Parameters
    ----------
    zone_index : dict[int, list[int]]

    Returns
    -------
    hashes : np.ndarray [shape=(n_postings,), dtype=uint32]
    postings : np.ndarray [shape=(n_postings,), dtype=uint32]
        Packed ``(track_id << 16) | t_anchor``.

    Raises
    ------
    ParameterError
        If a hash or posting is not an integer in ``[0, 2**32)``.

    Examples
    --------
    >>> h, p = index_arrays({7: [1, 65536], 9: [2]})
    >>> h.tolist(), p.tolist()
    ([7, 7, 9], [1, 65536, 2])
    """
    n_hashes = len(zone_index)
    try:
        keys = np.fromiter(zone_index.keys(), dtype=np.int64, count=n_hashes)
        lengths = np.fromiter(map(len, zone_index.values()), dtype=np.int64, count=n_hashes)
        postings = np.fromiter(itertools.chain.from_iterable(zone_index.values()), dtype=np.int64,
                               count=int(lengths.sum()))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ParameterError(f"hashes and postings must be integers ({exc})") from None
    for name, values in (("hash", keys), ("posting", postings)):
        if values.size and (values.min() < 0 or values.max() >= 1 << 32):
            raise ParameterError(f"a {name} lies outside [0, 2**32): the notebook packs both into 32 bits")
    return np.repeat(keys, lengths).astype(np.uint32), postings.astype(np.uint32)


def import_seed_pickle(store: Catalogue, path: str | os.PathLike[str], *, on_duplicate: OnDuplicate = "skip",
                       duplicate_min_ratio: float = DEFAULT_MIN_RATIO, on_excerpt: OnExcerpt = "keep") -> PickleSummary:
    """Load a notebook ``hash_db.pkl`` into the database, as one run and one transaction.

    Tracks of this very file that are already stored (it was imported before) are skipped; a track that
    duplicates a stored one by content is skipped, kept or replaces it, as ``on_duplicate`` says.

    Parameters
    ----------
    store : Catalogue
    path : str or path-like
    on_duplicate : {"skip", "keep", "replace"}
    duplicate_min_ratio : float
    on_excerpt : {"keep", "skip"}
        As in :func:`fpstore.ingest.ingest`.

    Returns
    -------
    summary : PickleSummary

    Raises
    ------
    ParameterError
        If the file is not a notebook database, or a posting names a track missing from ``tracks``.
    ProfileMismatch
        If the database was built with other fingerprint parameters than the pickle.
    """
    shown = os.fsdecode(path)
    clock = time.perf_counter()
    db, digest = read_seed_pickle(path)
    try:
        params = params_from_meta(db["meta"])
    except ParameterError as exc:
        raise ParameterError(f"{shown}: {exc}") from None
    seconds = {"read": time.perf_counter() - clock}

    clock = time.perf_counter()
    seed_ids = np.array(sorted(db["tracks"]), dtype=np.int64)
    per_zone: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for zone in params.zones:
        if zone.name not in db["index"]:
            raise ParameterError(f"{shown}: index has no zone {zone.name!r} though meta lists it")
        hashes, postings = index_arrays(db["index"][zone.name])
        slot = _dense_track_ids(seed_ids, (postings >> POSTING_T_BITS).astype(np.int64),
                                f"{shown}: zone {zone.name!r} has postings of track ids missing from tracks")
        per_zone[zone.name] = (slot, hashes, (postings & POSTING_T_MASK).astype(np.int32))
    records = _track_records(shown, digest, db["tracks"], seed_ids, per_zone, params)
    seconds["arrays"] = time.perf_counter() - clock

    clock = time.perf_counter()
    check = DuplicateCheck(store, on_duplicate, duplicate_min_ratio, on_excerpt)
    store.one_database("importing a pickle (`fpstore import-pickle`)")
    store.check_schema(upgrade_empty=True)
    duplicates: list[tuple[str, str]] = []
    try:
        with store.run("import-pickle", os.path.abspath(shown), params) as run:
            to_write = _records_to_write(store, check, records, run.zone_ids, duplicates)
            written = [w for w in store.tracks.write(run.id, to_write, run.zone_ids) if w.track_id is not None]
    except ProfileMismatch as exc:
        raise ProfileMismatch(f"{shown} cannot go into this database: {exc}") from None
    seconds["write"] = time.perf_counter() - clock
    return PickleSummary(
        shown, run.id, len(written),
        postings_by_zone={name: sum(int(w.record.fingerprint.zones[name].hashes.size) for w in written)
                          for name in per_zone},
        unique_hashes_by_zone={name: len(db["index"][name]) for name in per_zone},
        seconds=seconds, duplicates=duplicates, n_skipped=len(records) - len(written),
    )


def _records_to_write(store: Catalogue, check: DuplicateCheck, records: list[TrackRecord], zone_ids: dict[str, int],
                      duplicates: list[tuple[str, str]]) -> list[TrackRecord]:
    """The records to write: not stored yet, and not skipped as duplicates; ``duplicates`` gets the reasons."""
    if not store.tracks.count():
        return records  # nothing stored to duplicate (the pickle's tracks are not compared with each other)
    stored = store.tracks.ids_by_sha256([record.sha256 for record in records])
    to_write = []
    for record in records:
        name = os.path.basename(record.path)
        if record.sha256 in stored:
            duplicates.append((name, f"already in the database as track {stored[record.sha256]}"))
            continue
        kept, note = check.apply(record, zone_ids)
        if note:
            duplicates.append((name, note))
        if kept is not None:
            to_write.append(kept)
    return to_write


def imported_track_digest(pickle_digest: bytes, seed_track_id: int, file_name: str) -> bytes:
    """The 32-byte ``tracks.sha256`` given to track ``seed_track_id`` of the pickle with ``pickle_digest``."""
    return hashlib.sha256(
        b"fpstore-import:" + pickle_digest + b":" + str(seed_track_id).encode() + b":" + file_name.encode()
    ).digest()


def _track_records(shown: str, digest: bytes, tracks: dict[int, str], seed_ids: np.ndarray,
                   per_zone: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                   params: FingerprintParams) -> list[TrackRecord]:
    """One TrackRecord per pickle track (in track-id order), its postings split off the zone arrays."""
    split: dict[str, list[ZoneHashes]] = {}
    last_frame = np.full(seed_ids.size, -1, dtype=np.int64)
    for name, (slot, hashes, t_anchor) in per_zone.items():
        order = np.argsort(slot, kind="stable")
        bounds = np.cumsum(np.bincount(slot, minlength=seed_ids.size))[:-1]
        split[name] = [ZoneHashes(h, t) for h, t in zip(np.split(hashes[order], bounds),
                                                        np.split(t_anchor[order], bounds))]
        np.maximum.at(last_frame, slot, t_anchor)
    records = []
    for i, seed_id in enumerate(seed_ids.tolist()):
        n_frames = int(last_frame[i]) + 1
        fingerprint = Fingerprint({name: split[name][i] for name in per_zone},
                                  n_frames * params.seconds_per_frame, n_frames, 0)
        file_name = str(tracks[seed_id])
        records.append(TrackRecord(f"{os.path.abspath(shown)}#{seed_id}/{file_name}",
                                   imported_track_digest(digest, seed_id, file_name), fingerprint))
    return records


def export_seed_pickle(store: Catalogue, path: str | os.PathLike[str], *, overwrite: bool = False) -> PickleSummary:
    """Write the database as the notebook's ``hash_db.pkl``, so its loading and statistics cells work on it.

    Parameters
    ----------
    store : Catalogue
    path : str or path-like
        The file to write (atomically: a temporary file renamed into place).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    summary : PickleSummary

    Raises
    ------
    ParameterError
        If ``path`` exists and ``overwrite`` is False, or the database does not fit the notebook's 16-bit
        posting fields (more than 65536 tracks, or an anchor at frame 65536 or later).
    NotFound
        If the database holds no fingerprints yet.
    """
    shown = os.fsdecode(path)
    if os.path.exists(path) and not overwrite:
        raise ParameterError(f"{shown} exists: choose another name, or overwrite it with --force")
    started = clock = time.perf_counter()
    store.check_schema()
    snapshot = store.stats.snapshot()
    tracks, zone_names = snapshot.tracks, snapshot.zone_names
    params = store.params(duration_s=snapshot.duration_s)
    rows = np.concatenate([decode_postings(stream) for stream in snapshot.copy_streams])
    seconds = {"read": time.perf_counter() - clock}

    clock = time.perf_counter()
    track_ids = np.array([track_id for track_id, _ in tracks], dtype=np.int64)
    seed_track = _dense_track_ids(track_ids, rows["track_id"].astype(np.int64),
                                  "hashes holds postings of track ids missing from tracks; remove them first")
    t_anchor = rows["t_anchor"].astype(np.int64)
    _check_fits_posting(tracks, seed_track, t_anchor)
    packed = (seed_track << POSTING_T_BITS) | t_anchor
    zone_col = rows["zone"].astype(np.int16)
    hash_col = rows["hash"].astype(np.int32).view(np.uint32)
    index = {
        zone.name: zone_index(hash_col[zone_col == zone_id], packed[zone_col == zone_id])
        for zone_id, zone in _zones_by_id(zone_names, params)
    }
    seconds["arrays"] = time.perf_counter() - clock

    clock = time.perf_counter()
    db = {
        "meta": meta_from_params(params, elapsed_seconds=time.perf_counter() - started),
        "tracks": {seed: name for seed, (_, name) in enumerate(tracks)},
        "index": index,
    }
    _write_atomically(path, db)
    seconds["write"] = time.perf_counter() - clock
    return PickleSummary(
        shown, None, len(tracks),
        postings_by_zone={name: sum(map(len, idx.values())) for name, idx in index.items()},
        unique_hashes_by_zone={name: len(idx) for name, idx in index.items()},
        seconds=seconds,
    )


def zone_index(hashes: np.ndarray, postings: np.ndarray) -> dict[int, list[int]]:
    """Group one zone's postings by hash, as the notebook's ``{hash: [posting, ...]}``.

    Parameters
    ----------
    hashes : np.ndarray [shape=(n,), dtype=uint32]
    postings : np.ndarray [shape=(n,)], integer
        Packed postings.

    Returns
    -------
    index : dict[int, list[int]]
        Python ints throughout; each list sorted; keys in the order of their smallest posting, then hash.

    Examples
    --------
    >>> zone_index(np.array([9, 7, 7], np.uint32), np.array([5, 3, 1]))
    {7: [1, 3], 9: [5]}
    """
    order = np.lexsort((postings, hashes))
    hashes, postings = hashes[order], postings[order]
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]]) if hashes.size else np.empty(0, np.int64)
    ends = np.r_[starts[1:], hashes.size].astype(np.int64)
    by_first = np.lexsort((hashes[starts], postings[starts])) if starts.size else starts
    flat = postings.tolist()
    keys = hashes[starts].tolist()
    return {keys[i]: flat[starts[i]:ends[i]] for i in by_first.tolist()}


def _dense_track_ids(track_ids: np.ndarray, posting_tracks: np.ndarray, unknown_message: str) -> np.ndarray:
    """Position of each posting's track in ``track_ids`` (sorted); ParameterError(unknown_message) if absent."""
    slot = np.searchsorted(track_ids, posting_tracks)
    inside = slot < track_ids.size
    if not inside.all() or not (track_ids[slot[inside]] == posting_tracks).all():
        raise ParameterError(unknown_message)
    return slot.astype(np.int64)


def _check_fits_posting(tracks: list[tuple[int, str]], seed_track: np.ndarray, t_anchor: np.ndarray) -> None:
    """Refuse what the notebook's 16 + 16-bit posting would silently truncate."""
    if len(tracks) > 1 << POSTING_T_BITS:
        raise ParameterError(
            f"the database holds {len(tracks)} tracks; the notebook's posting has 16 bits for the track id "
            f"(at most {1 << POSTING_T_BITS} tracks): export a smaller database"
        )
    too_late = t_anchor > POSTING_T_MASK
    if too_late.any():
        first = int(seed_track[np.argmax(too_late)])
        raise ParameterError(
            f"track {tracks[first][0]} ({tracks[first][1]}) has an anchor at frame {int(t_anchor.max())}; the "
            f"notebook's posting keeps 16 bits of t_anchor (frames 0..{POSTING_T_MASK}), so it would be "
            "truncated: remove the long tracks (fpstore tracks remove) before exporting"
        )


def _zones_by_id(zone_names: dict[int, str], params: FingerprintParams) -> list[tuple[int, Zone]]:
    """``(zones.id, Zone)`` in the profile's zone order."""
    ids = {name: zone_id for zone_id, name in zone_names.items()}
    return [(ids[zone.name], zone) for zone in params.zones]


def _write_atomically(path: str | os.PathLike[str], db: dict[str, Any]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle = tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".fpstore-export-", delete=False)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    try:
        with handle:
            pickle.dump(db, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise
