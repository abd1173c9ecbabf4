"""``fpstore config``: the configuration in force, and where each setting came from."""

from __future__ import annotations

from typing import Any

import click

from fpstore.cli.options import cli_state, echo_json, fingerprint_options, json_option


@click.group("config")
def config_group() -> None:
    """The configuration in force.

    \b
    Example:
      fpstore config show
    """


@config_group.command("show")
@fingerprint_options
@json_option
@click.pass_context
def config_show(ctx: click.Context, /, zones: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Print every setting in force and where it came from (option, environment, file or default).

    Takes the same options as ingest, to show what they would change.

    \b
    Example:
      fpstore --config fpstore.toml config show --top-k none
      FPSTORE_CONFIG=fpstore.toml fpstore config show --json
    """
    from fpstore.runtime.config import parse_zone, settings_in_force

    if zones:
        options["zones"] = tuple(parse_zone(spec) for spec in zones)
    state = cli_state(ctx)
    rows = settings_in_force(state.config_path, options=options, database_url=state.db)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        value = row["value"]
        if row["key"] == "zones":
            value = ", ".join(f"{z['name']}:{z['df_bins']}:{z['dt_min_frames']}:{z['dt_max_frames']}" for z in value)
        elif value is None:
            value = {"database_url": "(embedded server)", "config_file": "(none)"}.get(row["key"], "none")
        click.echo(f"{row['key']:<16} {value!s:<48} {row['source']}")
