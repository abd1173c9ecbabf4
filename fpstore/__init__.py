"""fpstore: an audio fingerprint store in PostgreSQL.

The names a script needs are importable from here::

    from fpstore import FingerprintParams, fingerprint_file, ingest, match_files, open_store

The layers below them (docs/api.md): :mod:`fpstore.signal` (decoding and the fingerprint
pipeline on arrays) and the pure matching math of :mod:`fpstore.matching`, :mod:`fpstore.db` (every SQL
statement and connection), the operations (:mod:`fpstore.ingest`, the matcher
:mod:`fpstore.matching.matcher`, :mod:`fpstore.evaluate`, :mod:`fpstore.pickle_io`, :mod:`fpstore.report`,
:mod:`fpstore.plots`) on the infrastructure of :mod:`fpstore.runtime`, and the command line,
:mod:`fpstore.cli`.

Names are imported on first use, so ``import fpstore`` stays cheap for worker processes that need only
the signal layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fpstore.errors import (
    AudioError,
    DatabaseError,
    FpstoreError,
    NotFound,
    ParameterError,
    ProfileMismatch,
    SchemaNotAtHead,
    ServerFailed,
    ShardDown,
)

if TYPE_CHECKING:
    from fpstore.db.catalogue import open_store
    from fpstore.db.contract import Catalogue
    from fpstore.db.store import Store
    from fpstore.ingest import IngestSummary, ingest
    from fpstore.matching.evidence import PLAIN, ROBUST, DecisionRule, Evidence
    from fpstore.matching.matcher import match_files, match_queries, match_signal
    from fpstore.matching.ranking import match_fingerprint
    from fpstore.matching.results import MatchResult
    from fpstore.signal.fingerprint import Fingerprint, fingerprint_file, fingerprint_signal
    from fpstore.signal.params import FingerprintParams, Zone

__version__ = "0.1.0"

_LAZY = {
    "Store": "fpstore.db.store", "open_store": "fpstore.db.catalogue", "Catalogue": "fpstore.db.contract",
    "IngestSummary": "fpstore.ingest", "ingest": "fpstore.ingest",
    "DecisionRule": "fpstore.matching.evidence", "Evidence": "fpstore.matching.evidence",
    "PLAIN": "fpstore.matching.evidence", "ROBUST": "fpstore.matching.evidence",
    "MatchResult": "fpstore.matching.results", "match_fingerprint": "fpstore.matching.ranking",
    "match_files": "fpstore.matching.matcher", "match_queries": "fpstore.matching.matcher",
    "match_signal": "fpstore.matching.matcher",
    "Fingerprint": "fpstore.signal.fingerprint", "fingerprint_file": "fpstore.signal.fingerprint",
    "fingerprint_signal": "fpstore.signal.fingerprint",
    "FingerprintParams": "fpstore.signal.params", "Zone": "fpstore.signal.params",
}

__all__ = [
    "PLAIN", "ROBUST", "AudioError", "Catalogue", "DatabaseError", "DecisionRule", "Evidence", "Fingerprint",
    "FingerprintParams", "FpstoreError",
    "IngestSummary", "MatchResult", "NotFound", "ParameterError", "ProfileMismatch", "SchemaNotAtHead", "ServerFailed",
    "ShardDown", "Store",
    "Zone", "__version__", "fingerprint_file", "fingerprint_signal", "ingest", "match_files", "match_fingerprint",
    "match_queries", "match_signal", "open_store",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'fpstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
