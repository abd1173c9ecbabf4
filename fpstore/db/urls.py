"""Database URLs: the forms users have, turned into the one SQLAlchemy + psycopg 3 needs, and back to libpq's.

Accepted: libpq URIs (``postgresql://user@host:5432/db``, ``postgres://...``, with query options such
as ``?sslmode=require`` or ``?host=/run/postgresql``) and SQLAlchemy URLs (``postgresql+psycopg://...``;
``postgresql+psycopg2://`` is rewritten to psycopg 3, the only driver fpstore ships).
"""

from __future__ import annotations

from urllib.parse import quote

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


def libpq_url(url: URL, *, with_password: bool = False) -> str:
    """``url`` as a libpq URI (``postgresql://...``), the form psql, psycopg and libpq-based tools read.

    A unix-socket folder stays readable (``?host=/path/run``, slashes unescaped, as libpq's own
    documentation writes it); every other part is percent-encoded where libpq needs it.

    Parameters
    ----------
    url : sqlalchemy.engine.URL
        As :func:`normalize_url` returns it.
    with_password : bool
        Include the password. By default it is left out, so the URL can be shown, logged or put on a
        command line; libpq then takes the password from ``$PGPASSWORD`` or ``~/.pgpass``, or psql asks.

    Returns
    -------
    url : str

    Examples
    --------
    >>> libpq_url(normalize_url("postgresql+psycopg://fpstore@/fpstore?host=/home/me/fp/run&port=5432"))
    'postgresql://fpstore@/fpstore?host=/home/me/fp/run&port=5432'
    >>> libpq_url(normalize_url("postgresql://me:pw@db.example:5433/fp?sslmode=require"))
    'postgresql://me@db.example:5433/fp?sslmode=require'
    """
    userinfo = quote(url.username or "", safe="")
    if with_password and url.password is not None:
        userinfo += ":" + quote(str(url.password), safe="")
    host = url.host or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = (userinfo + "@" if userinfo else "") + quote(host, safe="[]:") + (f":{url.port}" if url.port else "")
    options = [
        f"{quote(key, safe='')}={quote(value, safe='/')}"
        for key, values in url.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return f"postgresql://{netloc}/{quote(url.database or '', safe='')}" + ("?" + "&".join(options) if options else "")
