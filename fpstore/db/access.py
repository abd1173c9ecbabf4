"""Access control: give a team's database role read-only access to an fpstore database.

A matching team reads the inverted index (tables, the ``postings`` view, the SQL functions such as
``fpstore_hash_key`` and, once migrated, ``fpstore_match``) but must never change it. PostgreSQL's own
privileges enforce that: :func:`grant_reader` grants exactly ``CONNECT`` on the database, ``USAGE`` on
the schema, ``SELECT`` on its tables and views and ``EXECUTE`` on its functions, and revokes every
write privilege the role may have been given on them before.

Conventions
-----------
- The role must exist already (``CREATE ROLE analysts LOGIN PASSWORD '...'``): creating roles and
  choosing their passwords is the database administrator's job, not fpstore's.
- Role, schema and database names are SQL identifiers, quoted by :class:`psycopg.sql.Identifier`; they
  cannot be bound parameters, and quoting makes any name safe. Every other value is bound.
- Granting is idempotent: running it twice leaves the same privileges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql

from fpstore.errors import DatabaseError, NotFound, ParameterError

if TYPE_CHECKING:
    from fpstore.db.store import Store

#: PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1); longer role names cannot exist.
_MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class ReaderGrant:
    """What :func:`grant_reader` granted: to ``role``, in ``database``, on ``schema``'s objects."""

    role: str
    database: str
    schema: str
    relations: tuple[str, ...]
    functions: tuple[str, ...]


def grant_reader(store: Store, role: str) -> ReaderGrant:
    """Give ``role`` read-only access to the fpstore tables, views and functions of ``store``.

    Parameters
    ----------
    store : Store
        Connected as a role that owns the fpstore objects (the one that ran the migrations).
    role : str
        An existing PostgreSQL role, e.g. ``"matching_team"``.

    Returns
    -------
    grant : ReaderGrant

    Raises
    ------
    ParameterError
        If ``role`` is empty or longer than 63 bytes.
    NotFound
        If no role ``role`` exists.
    SchemaNotAtHead
        If the database has no fpstore schema, or another revision than this fpstore's.
    DatabaseError
        If the connected role may not grant (it does not own the objects).

    Examples
    --------
    >>> grant_reader(store, "matching_team").relations        # doctest: +SKIP
    ('alembic_version', 'failures', 'hashes', 'postings', 'profile', 'runs', 'tracks', 'zones')
    >>> grant_reader(store, "nobody_here")                    # doctest: +SKIP
    Traceback (most recent call last):
    fpstore.errors.NotFound: role 'nobody_here' does not exist: ...
    """
    if not role or len(role.encode("utf-8")) > _MAX_IDENTIFIER_BYTES:
        raise ParameterError(f"role={role!r} must be a PostgreSQL role name of 1 to 63 bytes")
    store.one_database("granting read access (`fpstore db grant-reader`)")
    store.check_schema()
    return _grant(store, role)


def _grant(store: Store, role: str) -> ReaderGrant:
    with store.raw() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT rolname = current_user FROM pg_roles WHERE rolname = %s", (role,))
        found = cur.fetchone()
        if found is None:
            raise NotFound(
                f"role {role!r} does not exist: create it first (CREATE ROLE ... LOGIN PASSWORD '...'), "
                "then grant it read access"
            )
        cur.execute("SELECT current_user, pg_get_userbyid(relowner), (SELECT rolsuper FROM pg_roles WHERE rolname = "
                    "current_user) FROM pg_class WHERE oid = 'tracks'::regclass")
        user, owner, superuser = cur.fetchone() or ("", "", False)
        if user != owner and not superuser:
            raise DatabaseError(f"the role {user} cannot grant on {store.url}: the fpstore tables belong to {owner}; "
                                f"run `fpstore db grant-reader` as {owner} (the role that ran `fpstore db upgrade`)")
        if found[0]:
            raise ParameterError(f"role={role!r} is the role fpstore is connected as, which owns the tables")
        cur.execute("SELECT current_database(), current_schema()")
        database, schema = cur.fetchone() or ("", "")
        names = {"role": sql.Identifier(role), "schema": sql.Identifier(schema), "db": sql.Identifier(database)}
        for statement in _READER_STATEMENTS:
            cur.execute(sql.SQL(statement).format(**names))
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege(%s, c.oid, 'SELECT')"
            " ORDER BY c.relname",
            (schema, role),
        )
        relations = tuple(name for (name,) in cur.fetchall())
        cur.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1",
            (schema, role),
        )
        functions = tuple(name for (name,) in cur.fetchall())
    return ReaderGrant(role, database, schema, relations, functions)


# Write privileges are revoked first, so the role ends read-only even if it was given more before;
# default privileges extend the grant to tables and functions that later migrations create.
_READER_STATEMENTS = (
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {schema} FROM {role}",
    "REVOKE CREATE ON SCHEMA {schema} FROM {role}",
    "GRANT CONNECT ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA {schema} TO {role}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT EXECUTE ON FUNCTIONS TO {role}",
)
