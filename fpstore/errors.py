"""Exceptions raised by fpstore.

Every error that fpstore raises on purpose derives from :class:`FpstoreError`; the CLI turns those
into a one-line ``Error: ...`` message and exit status 1, and lets anything else surface as a bug.
"""


class FpstoreError(Exception):
    """Base class of every error fpstore raises on purpose."""


class ParameterError(FpstoreError):
    """An argument, array or configuration value is out of its valid range or of the wrong type."""


class AudioError(FpstoreError):
    """An audio file cannot be read or decoded."""


class NotFound(FpstoreError):
    """A track, run, zone or file that was asked for does not exist."""


class DatabaseError(FpstoreError):
    """The database cannot be reached, or refused an operation."""


class SchemaNotAtHead(DatabaseError):
    """The database schema is older or newer than this version of fpstore expects."""


class ProfileMismatch(FpstoreError):
    """The fingerprint parameters asked for differ from those the database was built with."""


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL server cannot be initialised, started or stopped."""
