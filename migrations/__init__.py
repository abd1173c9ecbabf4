"""Alembic migrations of the fpstore schema (installed as ``fpstore.db.migrations``)."""
