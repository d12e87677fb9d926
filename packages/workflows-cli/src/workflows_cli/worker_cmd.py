"""`currant worker`: run a worker process."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from workflows.config import LOG_FORMATS, LOG_LEVELS, MAX_CONCURRENCY, MAX_PREFETCH, Settings
from workflows.errors import WorkflowsError
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors
from workflows_cli.logs import setup_logging
from workflows_cli.main import cli as workflows_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="workflows-cli")
def cli() -> None:
    """currant: durable jobs and workflows on PostgreSQL."""


@cli.command()
@click.option(
    "-q", "--queue", "queues", multiple=True, required=True, help="A queue to serve (repeatable)."
)
@click.option(
    "-A", "--app", "apps", multiple=True, help="A module to import up front (repeatable)."
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    default=None,
    help="Executions at once [default: WORKFLOWS_WORKER_MAX_CONCURRENT].",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0, MAX_PREFETCH),
    default=None,
    help="Executions claimed ahead of free slots, 0 for none (opt-in: see the README) "
    "[default: WORKFLOWS_WORKER_PREFETCH, else 0].",
)
@click.option("--burst", is_flag=True, help="Exit once the queues hold nothing runnable.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics and /healthz on this port, 0 for a free one the OS picks "
    "[default: WORKFLOWS_WORKER_METRICS_PORT].",
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Log records of this level and above [default: WORKFLOWS_LOG_LEVEL, else INFO].",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    help="text, or json: one object per line with the execution's fields "
    "[default: WORKFLOWS_LOG_FORMAT, else text].",
)
@clean_errors
def worker(
    queues: tuple[str, ...],
    apps: tuple[str, ...],
    concurrency: int | None,
    prefetch: int | None,
    burst: bool,
    metrics_port: int | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run a worker serving QUEUEs until SIGTERM/SIGINT."""
    from workflows_worker.imports import add_cwd_to_path, import_app_modules
    from workflows_worker.logs import CONTEXT_FIELDS
    from workflows_worker.worker import Worker

    # Before any application code runs: a bad setting is reported as itself.
    settings = Settings.from_env()
    handler = setup_logging(
        log_level or settings.log_level, (log_format or settings.log_format).lower()
    )
    if handler is not None:
        # Records of the store's own loggers, logged in the worker's tasks, name it too.
        handler.addFilter(CONTEXT_FIELDS)
    add_cwd_to_path()
    try:
        import_app_modules(list(apps))
    except Exception as exc:
        raise WorkflowsError(f"cannot import --app module: {type(exc).__name__}: {exc}") from None
    w = Worker(
        list(queues),
        settings=settings,
        concurrency=concurrency,
        prefetch=prefetch,
        burst=burst,
        metrics_port=metrics_port,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.stop)
        await w.run()

    asyncio.run(main())


for _name, _command in workflows_cli.commands.items():
    cli.add_command(_command, _name)


def main() -> None:
    try:
        cli(prog_name="currant")
    except KeyboardInterrupt:
        sys.exit(130)
