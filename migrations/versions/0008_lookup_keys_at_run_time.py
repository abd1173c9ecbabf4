"""The posting lookup takes its keys at run time: one plain index scan, planned without them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

``fpstore_postings(zone_id, stored_hashes)`` (0004) compared ``hash`` with ``ANY(stored_hashes)``.
Inlined into the vote's ``EXECUTE ... USING`` (and into a client's statement with constant arrays),
the planner saw every key: it estimated each one's rows from the column's statistics (about 2 ms of
planning for the 10,000 keys of a 10 s query in four zones) and chose a bitmap heap scan. Now the
array is read through a scalar sub-select (an InitPlan, evaluated once when the statement runs), so
the plan cannot depend on the keys, whatever the caller prepares: on a large catalogue, a plain index
scan that walks the sorted keys through ``hashes_zone_hash`` in one pass. Same rows, same answers.
Measured on 2,058 tracks (the dev corpus's clips replicated as ``benchmarks/cluster.py`` does, medians
of 10 queries): the SQL vote over four zones for 10 s queries 272-277 ms before and 264-275 ms after on
one database, 285-309 ms before and 227-231 ms after through four shards on two cores. fpstore's
Python matcher sends the same form of lookup (``fpstore.db.lookup``).
"""

from __future__ import annotations

from alembic import op
from fpstore.db.migrations.siblings import revision_module

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEYS_PLANNED = "h.hash = ANY(stored_hashes)"
_KEYS_AT_RUN_TIME = "h.hash = ANY(CAST((SELECT stored_hashes) AS integer[]))"


def _postings_sql(keys_condition: str) -> str:
    """``CREATE OR REPLACE FUNCTION fpstore_postings`` (0004's text) with ``keys_condition``."""
    text = revision_module("0004_vote_planned_per_call.py").POSTINGS_SQL
    assert text.count(_KEYS_PLANNED) == 1, "0004's lookup no longer holds its keys condition"
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(_KEYS_PLANNED, keys_condition)


def upgrade() -> None:
    op.execute(_postings_sql(_KEYS_AT_RUN_TIME))


def downgrade() -> None:
    op.execute(_postings_sql(_KEYS_PLANNED))
