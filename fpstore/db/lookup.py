"""The posting lookup that matching runs on, and the SQL vote (``fpstore_match_zones`` and ``fpstore_match_anchors``).

Conventions
-----------
- Keys are ``(zones.id, stored hash)``: the stored hash is the seed's uint32 value read as int32
  (:func:`fpstore.signal.hashing.hash_keys`).
- Times are STFT frames.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fpstore.db.database import Database

# One index scan per zone with `hash = ANY(sorted keys)`: the B-tree walks the sorted keys in one pass
# (measured 8 ms per zone for 2,700 keys, against 11 ms for a nested loop of probes, PostgreSQL 15,
# 1,000 tracks). The keys reach it through a scalar sub-select, evaluated when the statement runs:
# seeing them, the planner spent ~2 ms estimating 10,000 keys and chose a bitmap heap scan, and
# through four shards on two cores a 10 s query's lookup took 185 ms against 130 ms now (migration
# 0008 does the same in fpstore_postings). Each zone's postings come back as one bytea of big-endian
# int4 triples (hash, track_id, t_anchor): 26 ms against 40 ms for int arrays and far less than a row
# per posting (47,000 postings, 10,000 tracks).
_LOOKUP_ONE_ZONE = (
    "(SELECT string_agg(int4send(hash) || int4send(track_id) || int4send(t_anchor), ''::bytea)"
    " FROM hashes WHERE zone = %s AND hash = ANY(CAST((SELECT %s::int[]) AS int[])))"
)
# The same for one track: `hashes` is partitioned by track id, so the planner scans the index of the
# track's partition only (a catalogue loaded in bulk has many), and only its rows come back.
_LOOKUP_ONE_ZONE_ONE_TRACK = _LOOKUP_ONE_ZONE.replace("WHERE zone = %s", "WHERE track_id = %s AND zone = %s")

# The same with at most ``cap`` postings of each key: one index probe per key, stopped at its cap
# (LATERAL ... LIMIT), so a key of a long list costs no more than its cap; the keys and caps in order.
_LOOKUP_ONE_ZONE_CAPPED = (
    "(SELECT string_agg(int4send(k.hash) || int4send(p.track_id) || int4send(p.t_anchor), ''::bytea)"
    " FROM unnest(CAST((SELECT %s::int[]) AS int[]), CAST((SELECT %s::int[]) AS int[])) AS k(hash, cap)"
    " CROSS JOIN LATERAL (SELECT track_id, t_anchor FROM hashes WHERE zone = %s AND hash = k.hash LIMIT k.cap) p)"
)

#: A lookup of at least this many keys is split into :attr:`Lookup.statements_at_once` statements run at
#: once on as many connections: the server runs one statement on one core, and a query that names
#: nothing spends most of its time waiting for it (20,000 keys and 600,000 postings at 10,000
#: recordings). Below it, a second connection's round trip costs more than the half it saves.
SPLIT_MIN_KEYS = 2000

#: The SQL vote of each count and chance model (migrations 0002 to 0006, and 0009), one call per query.
_SQL_VOTES = {
    (count, "poisson"): f"SELECT track_id, offset_frames, votes, score FROM {function}(%s::text[], %s::bigint[], "
                        "%s::int[], %s)"
    for count, function in (("pairs", "fpstore_match_zones"), ("anchors", "fpstore_match_anchors"))
} | {
    (count, "tracks"): "SELECT track_id, offset_frames, votes, score FROM fpstore_match_tracks(%s::text[], "
                       f"%s::bigint[], %s::int[], %s, {str(count == 'anchors').lower()})"
    for count in ("pairs", "anchors")
}


def _int_array_literal(values: np.ndarray) -> str:
    """``{1,2,3}``: PostgreSQL's text form of an integer array (psycopg adapting a list costs ~2 µs a value)."""
    return "{" + ",".join(map(str, values.tolist())) + "}"


@dataclass(frozen=True)
class LookupStatement:
    """The posting lookup of some keys: one statement, one sub-select per zone present."""

    statement: str
    params: list[object]
    #: The zones present, in the order of the statement's columns.
    zones: np.ndarray

    @classmethod
    def of(cls, key_zones: np.ndarray, key_hashes: np.ndarray, caps: np.ndarray | None = None,
           track_id: int | None = None) -> LookupStatement:
        """The statement for these keys (see :meth:`Lookup.postings`).

        With ``caps``, at most that many postings of each key; with ``track_id`` (and no caps), only that
        track's postings (:meth:`Lookup.track_postings`).
        """
        zones_present = np.unique(key_zones)
        params: list[object] = []
        for zone_id in zones_present.tolist():
            in_zone = key_zones == zone_id
            if caps is None:
                params += [*([] if track_id is None else [track_id]), zone_id, _int_array_literal(key_hashes[in_zone])]
            else:
                params += [_int_array_literal(key_hashes[in_zone]), _int_array_literal(caps[in_zone]), zone_id]
        one_zone = (_LOOKUP_ONE_ZONE_CAPPED if caps is not None else _LOOKUP_ONE_ZONE if track_id is None
                    else _LOOKUP_ONE_ZONE_ONE_TRACK)
        return cls("SELECT " + ", ".join([one_zone] * zones_present.size), params, zones_present)


def _lookup_sorted(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value of each wanted key in sorted ``keys`` (0 when absent), and whether it was there."""
    where = np.searchsorted(keys, wanted)
    found = np.zeros(wanted.size, dtype=bool)
    inside = where < keys.size
    found[inside] = keys[where[inside]] == wanted[inside]
    looked_up = np.zeros(wanted.size, dtype=np.int64)
    looked_up[found] = values[where[found]]
    return looked_up, found


Postings = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _combined_keys(zones: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """One int64 per ``(zone, stored hash)`` key: the zone in the high half, the hash's 32 bits in the low."""
    return (np.asarray(zones, dtype=np.int64) << 32) | (np.asarray(hashes, dtype=np.int64) & 0xFFFFFFFF)


@dataclass(frozen=True)
class _Answered:
    """One call's keys (sorted, those without postings too) and its postings sorted by key."""

    keys: np.ndarray
    starts: np.ndarray  # each key's postings are rows [starts, ends) of the columns
    ends: np.ndarray
    columns: Postings  # key, hash, track_id, t_anchor


def _rows_of_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Every row index of the ranges ``[starts[i], ends[i])``, range after range."""
    lengths = ends - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    rows: np.ndarray = np.arange(int(lengths.sum()), dtype=np.int64) + offsets
    return rows


class PostingMemory:
    """The postings of the keys looked up in the last few calls, so that a key asked again is not fetched again.

    A stream's overlapping windows share half their keys, and a window's later looks (another offset
    tolerance, the evidence of one track) ask for keys its first look fetched. The memory holds the
    answers of its last ``calls`` calls (keys with no posting too) and forgets the older ones. Threads may
    share one (:meth:`Lookup.sharing`): a call another thread makes meanwhile is remembered too.
    """

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self._answered: list[_Answered] = []
        self._remembered = threading.Lock()  # two threads' answers are both kept

    def postings(self, key_zones: np.ndarray, key_hashes: np.ndarray,
                 fetch: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]) -> Postings:
        """The postings of the keys, the ones not remembered from ``fetch`` (see :meth:`Lookup.postings`)."""
        wanted, remembered, missing = self._recall(key_zones, key_hashes)
        parts = [remembered]
        if missing.size:
            zones, hashes, tracks, t_anchor = fetch(*_split_keys(missing))
            parts.append((_combined_keys(zones, hashes), hashes, tracks, t_anchor))
        key, hashes, tracks, t_anchor = (np.concatenate([part[i] for part in parts]) for i in range(4))
        order = np.argsort(key, kind="stable")
        columns = (key[order], hashes[order], tracks[order], t_anchor[order])
        answered = _Answered(
            wanted, np.searchsorted(columns[0], wanted), np.searchsorted(columns[0], wanted, side="right"), columns)
        with self._remembered:
            kept = [*self._answered, answered]
            self._answered = kept[max(len(kept) - self.calls, 0):] if self.calls > 0 else []
        return key >> 32, hashes, tracks, t_anchor

    def recall(self, key_zones: np.ndarray, key_hashes: np.ndarray) -> tuple[Postings, np.ndarray, np.ndarray]:
        """The remembered postings of the keys (as :meth:`postings` returns them), and the keys not remembered.

        Nothing is fetched, and the call is not remembered.

        Returns
        -------
        postings : tuple of np.ndarray
            zone_ids, hashes, track_ids, t_anchor_frames of the remembered keys' postings.
        missing_zones, missing_hashes : np.ndarray
            The keys not remembered.
        """
        _, (key, hashes, tracks, t_anchor), missing = self._recall(key_zones, key_hashes)
        return (key >> 32, hashes, tracks, t_anchor), *_split_keys(missing)

    def _recall(self, key_zones: np.ndarray, key_hashes: np.ndarray) -> tuple[np.ndarray, Postings, np.ndarray]:
        """The distinct wanted keys (combined), the remembered ones' postings (keys combined), the missing keys."""
        wanted = np.unique(_combined_keys(key_zones, key_hashes))
        left = wanted  # the keys no newer call answered, sorted
        parts: list[Postings] = []
        for answered in reversed(self._answered):
            if left.size == 0:
                break
            if answered.keys.size == 0:
                continue
            where = np.minimum(np.searchsorted(answered.keys, left), answered.keys.size - 1)
            hit = answered.keys[where] == left
            rows = _rows_of_ranges(answered.starts[where[hit]], answered.ends[where[hit]])
            parts.append((answered.columns[0][rows], answered.columns[1][rows], answered.columns[2][rows],
                          answered.columns[3][rows]))
            left = left[~hit]
        remembered = tuple(np.concatenate([part[i] for part in parts] or [np.zeros(0, np.int64)]) for i in range(4))
        return wanted, remembered, left  # type: ignore[return-value]


def _split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combined keys (:func:`_combined_keys`) back to ``(zones.id, stored hash)``."""
    return (keys >> 32).astype(np.int16), (keys & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


class Lookup:
    """Reads for matching (``store.lookup``)."""

    def __init__(self, store: Database) -> None:
        self._store = store
        # (ids, n_frames) of the stored tracks asked for so far, sorted by id, replaced as one tuple (a
        # reader in another thread sees one or the other): a stored track's length never changes and
        # ids are not reused, and the tracks null asks for every voted track at each look.
        self._known_frames = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        #: :meth:`remembering`'s memory, one per thread: the HTTP service matches queries in several at once.
        self._thread = threading.local()
        #: Statements a lookup of :data:`SPLIT_MIN_KEYS` keys or more is split into, each on its own
        #: connection, run at once (1: one statement). Not in a thread that holds its connection
        #: (:meth:`~fpstore.db.store.Store.holding_connection`: the HTTP service and a monitored stream,
        #: which match several queries or windows at once on a connection each).
        self.statements_at_once = 2
        #: Whether :meth:`prefetch` fetches ahead (with :attr:`statements_at_once` 2 or more). Off: on the
        #: shared 2-core machine it gained nothing over the split lookups alone, and a look fetched ahead
        #: that is not taken (a query named by the look before it) keeps the server busy after the answer.
        self.fetch_ahead = False
        #: Threads that run the other statements of a split lookup, and how many (made on first use).
        self._helpers: tuple[int, ThreadPoolExecutor] | None = None
        self._helpers_made = threading.Lock()
        #: The thread that makes and fetches the look asked for ahead (:meth:`prefetch`), made on first use.
        self._ahead: ThreadPoolExecutor | None = None

    def postings(self, key_zones: np.ndarray, key_hashes: np.ndarray,
                 caps: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Every stored posting whose ``(zone, hash)`` is one of the keys, in one statement.

        Parameters
        ----------
        key_zones : np.ndarray [shape=(k,)], integer
            ``zones.id`` of each key.
        key_hashes : np.ndarray [shape=(k,), dtype=int32]
            Stored form of each key's hash; sorted keys make the index scans walk the B-tree in order.
        caps : np.ndarray [shape=(k,)], integer, or None
            At most this many postings of each key (any of them; ≥ 1), so that a caller who only needs
            to know whether a key has more than ``cap - 1`` does not fetch a long list; the memory of
            :meth:`remembering` is not used then. None: every posting.

        Returns
        -------
        zone_ids, hashes, track_ids, t_anchor_frames : np.ndarray [shape=(p,), dtype=int64]
            One entry per posting found; ``hashes`` in the stored (signed) form.
        """
        if caps is not None:
            return self.run(LookupStatement.of(key_zones, key_hashes, caps))
        ahead = self._fetched_ahead(key_zones, key_hashes)
        if ahead is not None:
            return ahead
        memory: PostingMemory | None = getattr(self._thread, "memory", None)
        if memory is not None:
            return memory.postings(key_zones, key_hashes, self._fetch)
        return self._fetch(key_zones, key_hashes)

    def prefetch(self, keys_of: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """Make the keys of a look likely to come next and fetch their postings, in a thread, while the caller votes.

        The next :meth:`postings` call of this thread takes them if it asks for the same keys (else they are
        dropped, and that call waits for ``keys_of`` only). Not without :attr:`fetch_ahead`, nor when
        :attr:`statements_at_once` is 1, nor in
        a thread that holds its connection (as :meth:`postings` splits), nor within :meth:`remembering`.

        Parameters
        ----------
        keys_of : callable
            Returns the look's ``(key_zones, key_hashes)`` as :meth:`postings` takes them; run in the thread
            (it may fingerprint the look's variants).
        """
        if (not self.fetch_ahead or self.statements_at_once < 2 or self._store.holds_connection()
                or getattr(self._thread, "memory", None) is not None):
            return
        with self._helpers_made:
            if self._ahead is None:
                self._ahead = ThreadPoolExecutor(1, thread_name_prefix="fpstore-ahead")
            ahead = self._ahead
        keys: concurrent.futures.Future[tuple[np.ndarray, np.ndarray]] = concurrent.futures.Future()

        def fetch() -> tuple[np.ndarray, ...]:
            try:
                zones, hashes = keys_of()
            except BaseException as exc:
                keys.set_exception(exc)
                raise
            keys.set_result((zones, hashes))
            return self._fetch(zones, hashes)

        self._thread.ahead = (keys, ahead.submit(fetch))

    def forget_ahead(self) -> None:
        """Drop what :meth:`prefetch` fetched for this thread and no lookup took (the query it was for has its answer)."""
        self._thread.ahead = None

    def _fetched_ahead(self, key_zones: np.ndarray, key_hashes: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """The postings :meth:`prefetch` fetched if it was asked for these keys (None otherwise, or if it failed)."""
        asked: tuple[concurrent.futures.Future[tuple[np.ndarray, np.ndarray]],
                     concurrent.futures.Future[tuple[np.ndarray, ...]]] | None = getattr(self._thread, "ahead", None)
        if asked is None:
            return None
        self._thread.ahead = None
        keys, postings = asked
        if keys.exception() is not None:
            return None  # (asked again here, the same keys raise in the caller's own thread)
        zones, hashes = keys.result()
        if not (np.array_equal(zones, key_zones) and np.array_equal(hashes, key_hashes)):
            return None  # another look came next: the one fetched ahead was not needed
        return None if postings.exception() is not None else postings.result()

    def _fetch(self, key_zones: np.ndarray, key_hashes: np.ndarray) -> tuple[np.ndarray, ...]:
        """:meth:`postings` of the keys, in :attr:`statements_at_once` statements run at once when there are many.

        The keys are cut into consecutive runs of about equal size, so each key's postings stay together
        and in the order one statement gives them; the runs' postings are concatenated in key order.
        """
        parts = min(self.statements_at_once, key_hashes.size // SPLIT_MIN_KEYS)
        if parts < 2 or self._store.holds_connection():
            return self.run(LookupStatement.of(key_zones, key_hashes))
        bounds = np.linspace(0, key_hashes.size, parts + 1).astype(np.int64)
        statements = [LookupStatement.of(key_zones[a:b], key_hashes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        with self._helpers_made:
            if self._helpers is None or self._helpers[0] < parts - 1:
                self._helpers = (parts - 1, ThreadPoolExecutor(parts - 1, thread_name_prefix="fpstore-lookup"))
            helpers = self._helpers[1]
        others = [helpers.submit(self.run, statement) for statement in statements[1:]]
        try:
            first = self.run(statements[0])
        finally:
            concurrent.futures.wait(others)  # no statement left running on its connection
        found = [first, *(other.result() for other in others)]
        return tuple(np.concatenate(column) for column in zip(*found))

    def track_postings(self, key_zones: np.ndarray, key_hashes: np.ndarray, track_id: int) -> tuple[np.ndarray, ...]:
        """The postings of the keys that belong to one track (as :meth:`postings`, in one statement).

        For a monitored stream's targeted test, which only counts one track's postings: the database
        reads the index of that track's partition of ``hashes`` alone. Within :meth:`remembering`, the
        keys of the last calls for the same track are not fetched again.
        """
        memory: PostingMemory | None = getattr(self._thread, "memory", None)
        if memory is None:
            return self.run_everywhere(LookupStatement.of(key_zones, key_hashes, track_id=track_id))

        def fetch(zones: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, ...]:
            # keys whose postings a whole lookup remembers are not fetched again, for one track or all
            (*remembered, tracks, t_anchor), zones, hashes = memory.recall(zones, hashes)
            mine = tracks == track_id
            found = self.run_everywhere(LookupStatement.of(zones, hashes, track_id=track_id)) if zones.size else ()
            return tuple(np.concatenate([column[mine], *([found[i]] if found else [])])
                         for i, column in enumerate([*remembered, tracks, t_anchor]))

        track_memory: tuple[int, PostingMemory] | None = getattr(self._thread, "track_memory", None)
        if track_memory is None or track_memory[0] != track_id:
            track_memory = self._thread.track_memory = (track_id, PostingMemory(memory.calls))
        return track_memory[1].postings(key_zones, key_hashes, fetch)

    def run_everywhere(self, lookup: LookupStatement) -> tuple[np.ndarray, ...]:
        """Run a lookup statement where the postings are (this database; every shard of a cluster)."""
        return self.run(lookup)

    def remembers(self) -> bool:
        """True within :meth:`remembering` or :meth:`sharing` in this thread."""
        return getattr(self._thread, "memory", None) is not None

    @contextlib.contextmanager
    def remembering(self, calls: int) -> Iterator[PostingMemory]:
        """Within the block, :meth:`postings` fetches only the keys none of its last ``calls`` calls asked for.

        For a stream matched window by window (:mod:`fpstore.monitor`), whose windows overlap, and a
        query's later looks (:func:`fpstore.matching.matcher.match_prepared`, :mod:`fpstore.serve`): the
        catalogue is taken not to change meanwhile.
        The memory is this thread's (another thread may share it: :meth:`sharing`). A cluster's lookup
        (``ClusterLookup``) fetches every key every time.
        """
        with self.sharing(PostingMemory(calls)) as memory:
            yield memory

    @contextlib.contextmanager
    def sharing(self, memory: PostingMemory) -> Iterator[PostingMemory]:
        """Within the block, this thread's :meth:`postings` use ``memory``, another thread's :meth:`remembering`.

        A monitored stream's analysis thread looks up the next window's keys ahead into the memory the
        stream's own thread then finds them in. The memory of :meth:`track_postings` stays this thread's.
        """
        previous = getattr(self._thread, "memory", None)
        self._thread.memory = memory
        try:
            yield memory
        finally:
            self._thread.memory = previous
            self._thread.track_memory = None

    def run(self, lookup: LookupStatement) -> tuple[np.ndarray, ...]:
        """Run a lookup statement made once (a cluster runs the same one on every shard); see :meth:`postings`."""
        with self._store.raw() as conn, conn.cursor(binary=True) as cur:
            cur.execute(lookup.statement, lookup.params)
            row = cur.fetchone()
        assert row is not None
        triples = [np.frombuffer(blob or b"", dtype=">i4").reshape(-1, 3) for blob in row]
        found = np.concatenate(triples).astype(np.int64)
        found_zone = np.repeat(lookup.zones.astype(np.int64), [t.shape[0] for t in triples])
        return found_zone, found[:, 0], found[:, 1], found[:, 2]

    def track_frames(self, track_ids: np.ndarray) -> np.ndarray:
        """``tracks.n_frames`` of each track (0 for an id not stored), aligned with ``track_ids``.

        Only the ids not asked for before are read from the database (one statement).
        """
        ids = np.asarray(track_ids, dtype=np.int64)
        frames, known = _lookup_sorted(*self._known_frames, ids)
        missing = np.unique(ids[~known])
        if missing.size:
            read = self._read_frames(missing)
            stored = read > 0  # an id not stored (yet) is asked again next time
            known_ids, known_frames = self._known_frames
            merged_ids = np.concatenate([known_ids, missing[stored]])
            order = np.argsort(merged_ids)
            self._known_frames = (merged_ids[order], np.concatenate([known_frames, read[stored]])[order])
            frames[~known] = read[np.searchsorted(missing, ids[~known])]
        return frames

    def forget_frames(self) -> None:
        """Forget what :meth:`track_frames` read: the tracks table was dropped, and its ids start again."""
        self._known_frames = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def _read_frames(self, track_ids: np.ndarray) -> np.ndarray:
        """``tracks.n_frames`` of each of the distinct ``track_ids`` (0 for an id not stored), from the database."""
        with self._store.raw() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, n_frames FROM tracks WHERE id = ANY(%s::int[])", (_int_array_literal(track_ids),))
            frames = dict(cur.fetchall())
        return np.array([frames.get(track_id, 0) for track_id in track_ids.tolist()], dtype=np.int64)

    def sql_vote(self, zone_names: list[str], hashes: np.ndarray, t_query_frames: np.ndarray, *,
                 top_k: int, count: str = "pairs", null: str = "poisson") -> list[tuple[int, int, int, float]]:
        """Call the SQL vote: ``[(track_id, offset_frames, votes, score)]``, ranked.

        Parameters
        ----------
        zone_names : list of str [length n]
            The zone of each query hash.
        hashes : np.ndarray [shape=(n,), dtype=uint32]
            The query's hashes (the seed's unsigned values).
        t_query_frames : np.ndarray [shape=(n,)], integer, in frames
        top_k : int
        count : {"pairs", "anchors"}
            What a bin counts: ``fpstore_match_zones`` or ``fpstore_match_anchors``.
        null : {"poisson", "tracks"}
            The score's chance model: those functions', or ``fpstore_match_tracks``'s (migration 0009).
        """
        with self._store.raw() as conn, conn.cursor() as cur:
            cur.execute(_SQL_VOTES[count, null],
                        (zone_names, hashes.astype(np.int64).tolist(), t_query_frames.tolist(), top_k))
            return [(int(t), int(o), int(v), float(p)) for t, o, v, p in cur.fetchall()]
