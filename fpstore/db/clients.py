"""Other clients of an fpstore database: psql, and any program that reads a libpq URL.

The database in force is the one every fpstore command uses (``--db``, $FPSTORE_DATABASE_URL, the config
file, else the embedded server). The embedded server runs only while some fpstore process is its client
(:mod:`fpstore.db.embedded`), so :func:`run_psql` stays its client while psql runs, and :func:`serve`
keeps it up, with its socket-only, owner-only access, until it is told to stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence

from sqlalchemy.engine import URL

from fpstore.db.embedded import EmbeddedServer, find_psql, socket_url
from fpstore.db.locate import database_url_in_force
from fpstore.db.urls import display_url, libpq_url, normalize_url
from fpstore.errors import DatabaseError

#: Signals that end :func:`serve`: Ctrl-C, ``kill``, and the terminal going away.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def url_in_force(url: str | None, *, config_path: str | None = None) -> tuple[URL, bool]:
    """The database in force, without connecting to it or starting anything.

    Parameters
    ----------
    url : str or None
        As the settings give it; None means $FPSTORE_DATABASE_URL, the config file, else the embedded
        server (:func:`fpstore.db.locate.database_url_in_force`).
    config_path : str or None
        The config file (``--config``); None: $FPSTORE_CONFIG.

    Returns
    -------
    url : sqlalchemy.engine.URL
    embedded : bool
        True for fpstore's embedded server (its URL names the socket of the default data folder).
    """
    chosen, _ = database_url_in_force(url, config_path=config_path)
    if chosen is not None:
        return normalize_url(chosen), False
    return normalize_url(socket_url(EmbeddedServer().socket_dir)), True


def run_psql(url: str | None, psql_args: Sequence[str], *, config_path: str | None = None) -> int:
    """Run psql on the database in force, with ``psql_args`` after the URL; return psql's exit status.

    The embedded server is started if needed and kept up until psql ends. A password travels in
    ``$PGPASSWORD``, not on psql's command line, where other users' ``ps`` could read it. While psql
    runs, Ctrl-C is psql's alone (it cancels the running query); fpstore waits.

    Parameters
    ----------
    url : str or None
        The database as the settings give it (None: $FPSTORE_DATABASE_URL, the config file, else the
        embedded server).
    psql_args : sequence of str
        psql's own arguments, e.g. ``["-c", "SELECT count(*) FROM tracks"]``.
    config_path : str or None
        The config file (``--config``); None: $FPSTORE_CONFIG.

    Returns
    -------
    status : int
        psql's exit status (128 + N if a signal N killed it, as shells report it).

    Raises
    ------
    EmbeddedServerError
        If the embedded server cannot start, or no psql is found.
    """
    resolved, embedded = url_in_force(url, config_path=config_path)
    with contextlib.ExitStack() as stack:
        if embedded:
            resolved = normalize_url(stack.enter_context(EmbeddedServer()).url)
        psql = find_psql(bundled_first=embedded)
        env = dict(os.environ)
        if resolved.password is not None:
            env["PGPASSWORD"] = str(resolved.password)
        try:
            child = subprocess.Popen([str(psql), libpq_url(resolved), *psql_args], env=env)
        except OSError as exc:
            raise DatabaseError(f"cannot run {psql}: {exc.strerror or exc}") from exc
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            status = child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
    return 128 - status if status < 0 else status  # killed by signal N: the shell's 128 + N


def serve(url: str | None, on_ready: Callable[[str], None], *, config_path: str | None = None) -> int:
    """Keep the embedded server up until SIGINT, SIGTERM or SIGHUP, then stop it cleanly.

    Access stays as the embedded server always has it: its unix socket only, its owner only.

    Parameters
    ----------
    url : str or None
        The database as the settings give it; only None (and no $FPSTORE_DATABASE_URL, no URL in the
        config file), the embedded server, can be served.
    on_ready : callable
        Called with the server's libpq URL once it accepts connections.
    config_path : str or None
        The config file (``--config``); None: $FPSTORE_CONFIG.

    Returns
    -------
    signal_number : int
        The signal that ended the wait.

    Raises
    ------
    DatabaseError
        If the database in force is not the embedded server (there is nothing to serve).
    EmbeddedServerError
        If the server cannot start, or does not stop.
    """
    resolved, embedded = url_in_force(url, config_path=config_path)
    if not embedded:
        raise DatabaseError(
            f"nothing to serve: the database in force, {display_url(resolved)}, is not fpstore's embedded "
            "server but one that runs by itself; connect to it with `fpstore db shell` or `psql \"$(fpstore db url)\"`"
        )
    previous_mask: set[int | signal.Signals] | None = None
    try:
        with EmbeddedServer() as server:
            # Blocked only now: the server's processes, already started, must not inherit the mask.
            # Blocked (not handled) so that a second Ctrl-C cannot interrupt the stop half-way.
            previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            on_ready(libpq_url(normalize_url(server.url)))
            return signal.sigwait(STOP_SIGNALS)
    finally:
        if previous_mask is not None:
            while STOP_SIGNALS & signal.sigpending():  # a second Ctrl-C during the stop is spent here
                signal.sigwait(STOP_SIGNALS)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
