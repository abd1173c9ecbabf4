"""Database URLs: the forms users have, turned into the one SQLAlchemy + psycopg 3 needs.

Accepted: libpq URIs (``postgresql://user@host:5432/db``, ``postgres://...``, with query options such
as ``?sslmode=require`` or ``?host=/run/postgresql``) and SQLAlchemy URLs (``postgresql+psycopg://...``;
``postgresql+psycopg2://`` is rewritten to psycopg 3, the only driver fpstore ships).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fpstore.errors import ParameterError

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg2cffi"}


def normalize_url(url: str) -> URL:
    """Parse ``url`` and return a SQLAlchemy URL that uses the psycopg 3 driver.

    Parameters
    ----------
    url : str
        A libpq URI or a SQLAlchemy PostgreSQL URL.

    Returns
    -------
    url : sqlalchemy.engine.URL

    Raises
    ------
    ParameterError
        If ``url`` is not a PostgreSQL URL; the message never shows the password.

    Examples
    --------
    >>> normalize_url("postgresql://me@db.example:5433/fp").render_as_string()
    'postgresql+psycopg://me@db.example:5433/fp'
    """
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    except ArgumentError:
        raise ParameterError(
            "database URL must look like postgresql://user@host:port/dbname "
            "or postgresql+psycopg://user@host:port/dbname"
        ) from None
    if parsed.drivername not in _SCHEMES:
        raise ParameterError(
            f"database URL scheme {parsed.drivername!r} is not PostgreSQL; "
            "use postgresql://user@host:port/dbname"
        )
    return parsed.set(drivername="postgresql+psycopg")


def display_url(url: URL) -> str:
    """``url`` as text with any password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)
