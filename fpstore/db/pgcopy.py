"""PostgreSQL binary COPY for the ``hashes`` table: rows built from numpy arrays without a Python loop.

Conventions
-----------
- One row is ``(zone smallint, hash integer, track_id integer, t_anchor integer)``; ``hash`` is the
  stored (signed) form of the seed's uint32 hash.
- The binary COPY format is big-endian: a 16-bit field count, then per field a 32-bit byte length and the
  value (PostgreSQL documentation, "COPY: Binary Format").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from fpstore.errors import ParameterError
from fpstore.signal.fingerprint import Fingerprint
from fpstore.signal.hashing import hash_keys

#: Signature, flags field and header-extension length that open every binary COPY stream.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: The 16-bit -1 field count that ends a binary COPY stream.
COPY_TRAILER = b"\xff\xff"

#: Column list matching :data:`POSTING_ROW`, for ``COPY hashes (...) FROM STDIN (FORMAT BINARY)``.
POSTING_COLUMNS = ("zone", "hash", "track_id", "t_anchor")

POSTING_ROW = np.dtype(
    [
        ("n_fields", ">i2"),
        ("zone_len", ">i4"), ("zone", ">i2"),
        ("hash_len", ">i4"), ("hash", ">i4"),
        ("track_len", ">i4"), ("track_id", ">i4"),
        ("t_len", ">i4"), ("t_anchor", ">i4"),
    ]
)


def encode_postings(
    zone_ids: np.ndarray, hash_keys: np.ndarray, track_ids: np.ndarray, t_anchor_frames: np.ndarray
) -> bytes:
    """Encode postings as binary COPY rows (without header and trailer).

    Parameters
    ----------
    zone_ids : np.ndarray [shape=(n,)], integer
        ``zones.id`` of each posting.
    hash_keys : np.ndarray [shape=(n,), dtype=int32]
        Stored form of each hash (see :func:`fpstore.signal.hashing.hash_keys`).
    track_ids : np.ndarray [shape=(n,)], integer
        ``tracks.id`` of each posting.
    t_anchor_frames : np.ndarray [shape=(n,)], integer, in frames

    Returns
    -------
    rows : bytes
        ``n * 32`` bytes.

    Raises
    ------
    ParameterError
        If the arrays differ in length.

    Examples
    --------
    >>> len(encode_postings(np.array([1]), np.array([7], np.int32), np.array([3]), np.array([0])))
    32
    """
    n = len(hash_keys)
    if not len(zone_ids) == len(track_ids) == len(t_anchor_frames) == n:
        raise ParameterError("zone_ids, hash_keys, track_ids and t_anchor_frames must have one length")
    rows = np.empty(n, dtype=POSTING_ROW)
    rows["n_fields"] = len(POSTING_COLUMNS)
    rows["zone_len"] = 2
    rows["hash_len"] = rows["track_len"] = rows["t_len"] = 4
    rows["zone"] = zone_ids
    rows["hash"] = hash_keys
    rows["track_id"] = track_ids
    rows["t_anchor"] = t_anchor_frames
    return rows.tobytes()


def decode_postings(stream: bytes) -> np.ndarray:
    """Decode a whole binary COPY stream of ``hashes (zone, hash, track_id, t_anchor)`` rows.

    The inverse of :func:`encode_postings` with header and trailer, as ``COPY ... TO STDOUT (FORMAT
    BINARY)`` sends it; no Python loop over rows.

    Parameters
    ----------
    stream : bytes
        Header, ``n`` rows of :data:`POSTING_COLUMNS`, trailer.

    Returns
    -------
    rows : np.ndarray [shape=(n,), dtype=POSTING_ROW]
        Fields ``zone``, ``hash`` (stored form), ``track_id``, ``t_anchor`` (big-endian; read them with
        ``.astype``).

    Raises
    ------
    ParameterError
        If the stream is not rows of exactly those four non-null columns.

    Examples
    --------
    >>> rows = encode_postings(np.array([1]), np.array([7], np.int32), np.array([3]), np.array([0]))
    >>> decode_postings(COPY_HEADER + rows + COPY_TRAILER)["hash"].tolist()
    [7]
    """
    body = memoryview(stream)[len(COPY_HEADER): len(stream) - len(COPY_TRAILER)]
    if (
        bytes(stream[: len(COPY_HEADER)]) != COPY_HEADER
        or bytes(stream[len(stream) - len(COPY_TRAILER):]) != COPY_TRAILER
        or len(body) % POSTING_ROW.itemsize
    ):
        raise ParameterError("not a binary COPY stream of (zone, hash, track_id, t_anchor) rows")
    rows = np.frombuffer(body, dtype=POSTING_ROW)
    if rows.size and not (
        (rows["n_fields"] == len(POSTING_COLUMNS)).all() and (rows["zone_len"] == 2).all()
        and (rows["hash_len"] == 4).all() and (rows["track_len"] == 4).all() and (rows["t_len"] == 4).all()
    ):
        raise ParameterError("binary COPY rows do not have the layout (smallint, int, int, int), or hold NULLs")
    return rows


def postings_payload(tracks: Sequence[tuple[int, Fingerprint]], zone_ids: dict[str, int]) -> bytes:
    """Binary COPY rows of every posting of ``tracks``, sorted by (zone, hash).

    Sorted rows make B-tree insertion (ordinary path) visit leaf pages in order, and leave a bulk
    partition's heap clustered by (zone, hash), so one lookup reads few heap pages.

    Parameters
    ----------
    tracks : sequence of (track_id, Fingerprint)
    zone_ids : dict[str, int]
        ``zones.id`` by zone name.

    Returns
    -------
    rows : bytes
        Without header and trailer (:func:`copy_in` adds them); empty if there is no posting.
    """
    zone_parts, hash_parts, track_parts, t_parts = [], [], [], []
    for track_id, fingerprint in tracks:
        for zone_name, postings in fingerprint.zones.items():
            n = len(postings.hashes)
            zone_parts.append(np.full(n, zone_ids[zone_name], dtype=np.int16))
            hash_parts.append(hash_keys(postings.hashes))
            track_parts.append(np.full(n, track_id, dtype=np.int32))
            t_parts.append(postings.t_anchor_frames)
    if not hash_parts:
        return b""
    zones, keys = np.concatenate(zone_parts), np.concatenate(hash_parts)
    # (zone, signed hash) as one int64 sorts like the index; one argsort is faster than lexsort's two keys.
    order = np.argsort((zones.astype(np.int64) << 32) + keys, kind="stable")
    return encode_postings(zones[order], keys[order], np.concatenate(track_parts)[order],
                           np.concatenate(t_parts)[order])


def copy_in(cur: psycopg.Cursor[Any], table_name: str, payload: bytes) -> None:
    """COPY binary posting rows (without header and trailer) into ``table_name``."""
    if not payload:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table_name), sql.SQL(", ").join(map(sql.Identifier, POSTING_COLUMNS)))
    with cur.copy(statement) as copy:
        copy.write(COPY_HEADER)
        copy.write(payload)
        copy.write(COPY_TRAILER)


def copy_out(cur: psycopg.Cursor[Any], where: str = "", params: tuple[Any, ...] = ()) -> bytes:
    """Postings (``hashes`` rows, optionally filtered by the SQL text ``where``) as one binary COPY stream."""
    statement = f"COPY (SELECT {', '.join(POSTING_COLUMNS)} FROM hashes {where}) TO STDOUT (FORMAT BINARY)"
    stream = bytearray()
    with cur.copy(statement, params or None) as copy:
        for block in copy:
            stream += block
    return bytes(stream)
