"""Alembic environment of a cluster's router database: migrates the connection fpstore hands over.

The router holds no fingerprints: the PL/Proxy cluster definition and the functions that route to the
shards (docs/cluster.md). Its revisions are kept in ``fpstore_router_version``,
apart from a shard's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

config = context.config

if context.is_offline_mode():
    raise SystemExit("fpstore migrations run online only")
context.configure(connection=config.attributes["connection"], version_table="fpstore_router_version",
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
