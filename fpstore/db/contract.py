"""The storage contract: what the operations need from a catalogue, whichever backend holds it.

:class:`Catalogue` is implemented by the single database (:class:`fpstore.db.store.Store`) and by a
cluster's router over its shards (:class:`fpstore.db.cluster.ClusterStore`); :func:`fpstore.open_store`
gives one or the other, and the operations (ingest, matching, monitoring, duplicates, pickles, reports,
the HTTP service) ask only for this. Where a backend differs in kind, it says so through the contract
(:attr:`Catalogue.routed`, :attr:`Catalogue.shards`, :meth:`Catalogue.one_database`), not through its
type: nothing outside :mod:`fpstore.db` tests a store's type (``tests/test_layers.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fpstore.db.bulk import BulkLoads
    from fpstore.db.duplicates import Duplicates
    from fpstore.db.lookup import Lookup
    from fpstore.db.runs import Run
    from fpstore.db.stats import Stats
    from fpstore.db.store import Store
    from fpstore.db.tracks import Tracks
    from fpstore.signal.params import FingerprintParams


class Catalogue(Protocol):
    """An fpstore catalogue: its schema, its fingerprint profile, and the facets that read and write it.

    Every method may raise :class:`~fpstore.errors.DatabaseError` when the database fails (on a cluster,
    :class:`~fpstore.errors.ShardDown` naming the shard).
    """

    @property
    def url(self) -> str:
        """The database's URL, password hidden (a cluster: its router's)."""

    @property
    def tracks(self) -> Tracks:
        """Tracks: write a batch with their postings, list, search, show, name, remove."""

    @property
    def lookup(self) -> Lookup:
        """Postings of a query's keys, the tracks' frame counts, the SQL vote."""

    @property
    def stats(self) -> Stats:
        """The report's aggregates (per zone, per relation)."""

    @property
    def duplicates(self) -> Duplicates:
        """What the duplicate check reads: the hash sample and the postings of the tracks it names."""

    @property
    def bulk(self) -> BulkLoads:
        """Bulk partitions of postings, for large ingests (on one database; a cluster writes per shard)."""

    @property
    def shards(self) -> Sequence[Store]:
        """The databases written, by shard index: a single database is its own only shard."""

    @property
    def routed(self) -> bool:
        """True for a cluster's router: it holds no track itself, each lives on one of :attr:`shards`.

        A routed catalogue's track with content digest ``d`` lives on ``shards[shard_of_digest(d,
        len(shards))]``; each shard written records its own run (``shards[k].run``), and the schema is
        checked shard by shard. False: the catalogue is one database, ``shards == [itself]``.
        """

    def url_with_password(self) -> str:
        """The URL with its password, for another process that opens this catalogue (never to be printed)."""

    def holding_connection(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, the catalogue's statements of this thread share connections checked out once."""

    def one_database(self, what: str) -> None:
        """Raise :class:`~fpstore.errors.ParameterError` naming ``what`` if it needs one database and this is a router."""

    def check_schema(self, *, upgrade_empty: bool = False) -> None:
        """Raise :class:`~fpstore.errors.NotFound` (no schema) or :class:`~fpstore.errors.SchemaNotAtHead`.

        With ``upgrade_empty``, a database without the schema gets it (ingest) instead.
        """

    def schema_revision(self) -> str | None:
        """The schema's revision (None: no schema)."""

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema up to ``revision``."""

    def downgrade(self, revision: str) -> None:
        """Migrate the schema down to ``revision`` (refused by a cluster's router)."""

    def downgrade_drops_data(self, revision: str) -> bool:
        """True if going down to ``revision`` drops every track (``base``)."""

    def ensure_profile(self, params: FingerprintParams) -> dict[str, int]:
        """Record ``params`` as the catalogue's profile, or check they equal it; ``zones.id`` by zone name."""

    def params(self, *, duration_s: float | None = 30.0) -> FingerprintParams:
        """The parameters the catalogue was built with (``duration_s`` as a query or an ingest needs it)."""

    def zone_ids(self) -> dict[str, int]:
        """``zones.id`` by zone name."""

    def run(self, command_name: str, source: str,
            params: FingerprintParams) -> contextlib.AbstractContextManager[Run]:
        """A run recorded for a write (on a cluster, on each shard written: ``shards[k].run``)."""
