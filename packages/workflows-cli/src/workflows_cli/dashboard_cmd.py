"""`workflows dashboard`: serve the web dashboard (the `dashboard` extra)."""

from __future__ import annotations

import logging
import os

import click

from workflows_cli.dashboard.security import is_loopback
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors

TOKEN_VARIABLE = "WORKFLOWS_DASHBOARD_TOKEN"
MISSING_EXTRA = (
    "the dashboard needs its extra: pip install 'currant[dashboard]' "
    "(or 'workflows-cli[dashboard]')"
)


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to bind."
)
@click.option("--read-only", is_flag=True, help="Hide every action and refuse every POST.")
@clean_errors
def dashboard(host: str, port: int, read_only: bool) -> None:
    """Serve the web dashboard: queues, workers, executions, workflow timelines, schedules.

    It binds to 127.0.0.1 unless told otherwise. Any other address needs
    WORKFLOWS_DASHBOARD_TOKEN: browsers then ask for it as the password of HTTP Basic
    credentials (any user name), scripts may send `Authorization: Bearer TOKEN`. Serve it
    behind TLS when it leaves the machine.
    """
    token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"binding to {host} exposes the dashboard beyond this machine: set "
            f"{TOKEN_VARIABLE} (see `workflows dashboard --help`)"
        )
    try:
        import uvicorn

        from workflows_cli.dashboard.app import Options, create_app
    except ImportError as exc:
        raise click.ClickException(MISSING_EXTRA) from exc
    from workflows import queues

    # A database that is unreachable or not migrated is said now, not on the first page.
    queues.stats_sync()
    app = create_app(Options(read_only=read_only, token=token))
    logging.getLogger(__name__).info(
        "dashboard on http://%s:%d/%s", host, port, " (read-only)" if read_only else ""
    )
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
