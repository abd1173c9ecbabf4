"""Which database is in force: the one place that decides, for the command line and the library alike.

In this order: the URL given (``--db``, or ``open_store(url)``), ``$FPSTORE_DATABASE_URL``, the
``[database] url`` of the config file (``--config``, else ``$FPSTORE_CONFIG``), else fpstore's embedded
server. :func:`database_url_in_force` is the only reader of ``$FPSTORE_DATABASE_URL``; it imports
nothing but the standard library, so ``fpstore db url`` pays for no database driver to find it.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from fpstore.errors import ParameterError

#: Environment variable naming the database; without it (and without ``--db``) the config file, then fpstore's own.
DATABASE_URL_ENV = "FPSTORE_DATABASE_URL"
#: Environment variable naming a config file, used when ``--config`` is not given.
CONFIG_ENV = "FPSTORE_CONFIG"
#: The sections a config file may hold.
CONFIG_SECTIONS = ("database", "fingerprint")


def config_file_in_force(config_path: str | os.PathLike[str] | None = None) -> str | None:
    """The config file in force: ``config_path``, else ``$FPSTORE_CONFIG``, else None (no file)."""
    chosen = config_path or os.environ.get(CONFIG_ENV)
    return os.fsdecode(chosen) if chosen else None


def read_config_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's TOML, its sections and its ``[database]`` keys checked.

    Raises
    ------
    ParameterError
        If the file is missing or not TOML, or holds an unknown section or an unknown key in
        ``[database]``; the message names the file.
    """
    shown = os.fsdecode(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ParameterError(f"{shown}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{shown}: not valid TOML ({exc})") from None
    unknown = set(document) - set(CONFIG_SECTIONS)
    if unknown:
        raise ParameterError(f"{shown}: unknown section(s) {sorted(unknown)}; known: {', '.join(CONFIG_SECTIONS)}")
    database = document.get("database", {})
    if set(database) - {"url"}:
        raise ParameterError(f"{shown}: unknown key(s) {sorted(set(database) - {'url'})} in [database]")
    return document


def database_url_in_force(url: str | None = None, *,
                          config_path: str | os.PathLike[str] | None = None) -> tuple[str | None, str]:
    """The database in force, and where it was named.

    Parameters
    ----------
    url : str or None
        A URL given by the caller (``--db``, ``open_store(url)``); it wins.
    config_path : str, path-like or None
        The config file (``--config``); None: ``$FPSTORE_CONFIG``, else no file.

    Returns
    -------
    url : str or None
        As given (not yet normalised); None means fpstore's embedded server.
    source : str
        ``"option"``, ``"environment"``, the config file's path, or ``"default"`` (the embedded server).

    Raises
    ------
    ParameterError
        If the config file consulted cannot be read (:func:`read_config_document`).
    """
    if url:
        return url, "option"
    from_environment = os.environ.get(DATABASE_URL_ENV)
    if from_environment:
        return from_environment, "environment"
    config_file = config_file_in_force(config_path)
    if config_file:
        from_file = read_config_document(config_file).get("database", {}).get("url")
        if from_file:
            return from_file, config_file
    return None, "default"
