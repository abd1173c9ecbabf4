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


class ServerFailed(DatabaseError):
    """The server failed, or the connection to it was lost (restart, crash, network), during a command.

    Attributes
    ----------
    url : str
        The database's URL, password masked.
    reason : str
        The driver's first line (``connection failed: ...``, ``terminating connection ...``).
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"database {url} failed: {reason}; the unfinished transaction was rolled back (no partial "
                         "track is stored): run the command again once the server is back to finish the work")
        self.url, self.reason = url, reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.url, self.reason)


class ShardDown(DatabaseError):
    """A shard of a cluster failed or could not be reached while a command read from it (nothing was changed).

    Attributes
    ----------
    index : int
        The shard's index in the cluster.
    url : str
        The shard's URL, password masked.
    reason : str
        The driver's first line.
    """

    def __init__(self, index: int, url: str, reason: str) -> None:
        super().__init__(f"shard {index} of the cluster ({url}) is down or unreachable: {reason}; nothing was "
                         "changed: run the command again once it is back (`fpstore cluster status` shows every shard)")
        self.index, self.url, self.reason = index, url, reason

    def __reduce__(self) -> tuple[type, tuple[int, str, str]]:
        return type(self), (self.index, self.url, self.reason)
