"""Alembic environment: migrates the connection fpstore hands over, or the URL from the environment."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from fpstore.db.models import include_in_comparison, metadata
from fpstore.db.urls import normalize_url

config = context.config


def run_migrations_online() -> None:
    """Run migrations on ``config.attributes['connection']`` or on FPSTORE_DATABASE_URL / sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True,
                          include_name=include_in_comparison)
        with context.begin_transaction():
            context.run_migrations()
        return
    import os

    url = os.environ.get("FPSTORE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set FPSTORE_DATABASE_URL (or use `fpstore db upgrade`, which also knows the embedded database)")
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, transaction_per_migration=True,
                          include_name=include_in_comparison)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("fpstore migrations run online only")
run_migrations_online()
