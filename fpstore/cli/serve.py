"""``fpstore serve``: the catalogue over HTTP (the match API, the track listing, a web page)."""

from __future__ import annotations

import click

from fpstore.cli.options import cli_state


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 exposes the service beyond this machine: set a token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Server processes (each decodes queries on its own core).")
@click.option("--token", envvar="FPSTORE_SERVE_TOKEN", show_envvar=True,
              help="Bearer token every route but /v1/health asks for.")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=50, show_default=True,
              help="Largest request body; a larger one gets 413.")
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, workers: int, token: str | None,
                  max_upload_mb: float) -> None:
    """Serve the catalogue over HTTP: the match API, the track listing and a web page at /.

    POST /v1/match takes an audio file and answers what `fpstore match --json` prints; the OpenAPI
    description is at /openapi.json (browsable at /docs). Runs until Ctrl-C.

    \b
    Example:
      fpstore serve --port 8080 &
      curl --data-binary @query.wav http://127.0.0.1:8080/v1/match
    """
    from fpstore.serve import ServeConfig, run_server

    config = ServeConfig(cli_state(ctx).settings().database_url, token or None, int(max_upload_mb * 1024 * 1024))
    run_server(config, host=host, port=port, workers=workers, announce=lambda line: click.echo(line, err=True))
