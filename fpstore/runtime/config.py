"""Configuration: a TOML file with a fingerprint profile and the database URL; options override it.

Example ``fpstore.toml``::

    [database]
    url = "postgresql://team@dbhost/fingerprints"

    [fingerprint]
    duration_s = "full"        # or seconds
    top_k_targets = 5          # or "none"
    bin_max = 1024             # or "none"

    [[fingerprint.zones]]
    name = "Fsmall_Tshort"
    df_bins = 50
    dt_min_frames = 1
    dt_max_frames = 20

Precedence, highest first: command-line option, config file, built-in default (the seed's values).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from fpstore.db.locate import config_file_in_force, database_url_in_force, read_config_document
from fpstore.errors import ParameterError
from fpstore.signal.params import FingerprintParams, Zone

_PARAM_FIELDS = {f.name for f in dataclasses.fields(FingerprintParams)}
_NULLABLE = {"bin_max": "none", "top_k_targets": "none", "duration_s": "full"}
_ZONE_FIELDS = {f.name for f in dataclasses.fields(Zone)}


@dataclass(frozen=True)
class Settings:
    """What is in force, and where each value came from.

    Attributes
    ----------
    params : FingerprintParams
    database_url : str or None
        None means the embedded server.
    sources : dict[str, str]
        For each parameter name and ``database_url``: ``"default"``, ``"option"``, ``"environment"``
        or the config file's path.
    """

    params: FingerprintParams
    database_url: str | None
    sources: dict[str, str]


def parse_nullable(name: str, value: Any) -> Any:
    """Map the word that stands for "no limit" (``none``; ``full`` for duration_s) to None."""
    word = _NULLABLE.get(name)
    if word is not None and isinstance(value, str) and value.strip().lower() == word:
        return None
    return value


def parse_zone(spec: str) -> Zone:
    """Parse ``NAME:DF_BINS:DT_MIN_FRAMES:DT_MAX_FRAMES`` into a Zone.

    Raises
    ------
    ParameterError
        If the text is not four colon-separated fields with integer limits.

    Examples
    --------
    >>> parse_zone("wide:150:1:60")
    Zone(name='wide', df_bins=150, dt_min_frames=1, dt_max_frames=60)
    """
    parts = spec.split(":")
    if len(parts) != 4:
        raise ParameterError(f"zone={spec!r} must be NAME:DF_BINS:DT_MIN_FRAMES:DT_MAX_FRAMES")
    try:
        df_bins, dt_min, dt_max = (int(part) for part in parts[1:])
    except ValueError:
        raise ParameterError(f"zone={spec!r}: DF_BINS, DT_MIN_FRAMES and DT_MAX_FRAMES must be integers") from None
    return Zone(parts[0], df_bins, dt_min, dt_max)


def read_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str | None]:
    """Read a config file: ``(fingerprint parameter overrides, database url or None)``.

    Raises
    ------
    ParameterError
        If the file is missing or not TOML, or holds an unknown key or a value out of range; the
        message names the file and the key.
    """
    shown = os.fsdecode(path)
    document = read_config_document(path)
    database = document.get("database", {})
    fingerprint = dict(document.get("fingerprint", {}))
    unknown = set(fingerprint) - _PARAM_FIELDS
    if unknown:
        raise ParameterError(f"{shown}: unknown key(s) {sorted(unknown)} in [fingerprint]; known: {sorted(_PARAM_FIELDS)}")
    overrides: dict[str, Any] = {}
    for key, value in fingerprint.items():
        if key == "zones":
            overrides["zones"] = tuple(_zone_from_table(shown, index, table) for index, table in enumerate(value))
        else:
            overrides[key] = parse_nullable(key, value)
    try:
        FingerprintParams(**overrides)
    except ParameterError as exc:
        raise ParameterError(f"{shown}: [fingerprint] {exc}") from None
    return overrides, database.get("url")


def _zone_from_table(shown: str, index: int, table: Any) -> Zone:
    if not isinstance(table, dict):
        raise ParameterError(f"{shown}: fingerprint.zones[{index}] must be a table")
    unknown = set(table) - _ZONE_FIELDS
    missing = _ZONE_FIELDS - set(table)
    if unknown or missing:
        raise ParameterError(
            f"{shown}: fingerprint.zones[{index}] has unknown key(s) {sorted(unknown)} or lacks {sorted(missing)}"
        )
    try:
        return Zone(**table)
    except ParameterError as exc:
        raise ParameterError(f"{shown}: fingerprint.zones[{index}]: {exc}") from None


def resolve_settings(config_path: str | None = None, *, options: dict[str, Any] | None = None,
                     database_url: str | None = None) -> Settings:
    """Combine defaults, the config file and command-line options.

    Parameters
    ----------
    config_path : str or None
        Config file; None falls back to $FPSTORE_CONFIG, then to no file.
    options : dict or None
        Parameter values given on the command line (None values are ignored).
    database_url : str or None
        ``--db`` value; falls back to $FPSTORE_DATABASE_URL, then to the config file
        (:func:`fpstore.db.locate.database_url_in_force`, the one place that decides).

    Returns
    -------
    settings : Settings
    """
    sources = {name: "default" for name in _PARAM_FIELDS}
    values: dict[str, Any] = {}
    config_file = config_file_in_force(config_path)
    if config_file:
        file_values, _ = read_config_file(config_file)
        values.update(file_values)
        sources.update({name: config_file for name in file_values})
    for name, value in (options or {}).items():
        if value is not None:
            values[name] = parse_nullable(name, value)
            sources[name] = "option"
    params = FingerprintParams(**values)
    url, sources["database_url"] = database_url_in_force(database_url, config_path=config_file)
    return Settings(params, url, sources)


def settings_in_force(config_path: str | None = None, *, options: dict[str, Any] | None = None,
                      database_url: str | None = None) -> list[dict[str, Any]]:
    """What ``fpstore config show`` prints: every setting, its value and where the value came from.

    Parameters
    ----------
    config_path, options, database_url
        As for :func:`resolve_settings`.

    Returns
    -------
    rows : list of dict
        ``{"key", "value", "source"}`` per setting, in this order: ``config_file``, ``database_url``
        (password masked; None = the embedded server), each fingerprint parameter, ``zones`` (a list of
        dicts). ``source`` is ``default``, ``option``, ``environment`` or the config file's path.

    Raises
    ------
    ParameterError
        If the config file or an option holds an unknown key or an out-of-range value.
    """
    from fpstore.db.urls import display_url, normalize_url

    chosen_file = config_file_in_force(config_path)
    file_source = "option" if config_path else ("environment" if chosen_file else "default")
    settings = resolve_settings(config_path, options=options, database_url=database_url)
    rows: list[dict[str, Any]] = [
        {"key": "config_file", "value": chosen_file, "source": file_source},
        {"key": "database_url",
         "value": display_url(normalize_url(settings.database_url)) if settings.database_url else None,
         "source": settings.sources["database_url"]},
    ]
    for spec in dataclasses.fields(FingerprintParams):
        value = getattr(settings.params, spec.name)
        if spec.name == "zones":
            value = [dataclasses.asdict(zone) for zone in value]
        rows.append({"key": spec.name, "value": value, "source": settings.sources[spec.name]})
    return rows
