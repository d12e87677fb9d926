"""`workflows`: migrate, status, list, cancel, and the embedded development database."""

from __future__ import annotations

from typing import Any

import click

from workflows.config import Settings
from workflows.states import Kind, Status
from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors
from workflows_cli.logs import setup_logging


def _store() -> Any:
    from workflows_postgres.sync import SyncStore

    return SyncStore(Settings.from_env())


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="workflows-cli")
def cli() -> None:
    """Durable jobs and workflows on PostgreSQL."""


@cli.command()
@clean_errors
def migrate() -> None:
    """Create or upgrade the schema (idempotent; safe when run concurrently)."""
    from workflows import admin
    from workflows_postgres.migrate import latest_version

    settings = Settings.from_env()
    # WARNING, whatever WORKFLOWS_LOG_LEVEL says: what it applied is its output below.
    setup_logging("WARNING", settings.log_format)
    applied = admin.migrate()
    if applied:
        click.echo(
            f"applied migrations {', '.join(str(v) for v in applied)} to schema {settings.schema!r}"
        )
    else:
        click.echo(f"schema {settings.schema!r} is up to date (version {latest_version()})")


@cli.command()
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@clean_errors
def status(execution_id: str, as_json: bool) -> None:
    """Show one execution (EXECUTION_ID: its id or a unique prefix of it)."""
    from workflows_cli.ids import full_id

    execution_id = full_id(execution_id)
    store = _store()
    found = store.get_status(execution_id)
    if as_json:
        click.echo(render.to_json(found))
        return
    click.echo(render.details(found))
    if found["kind"] == Kind.WORKFLOW:
        steps = store.steps_of(execution_id)
        if steps:
            click.echo("steps:")
            click.echo(
                render.table(
                    steps,
                    ("seq", "kind", "name", "status", "result"),
                    width=render.output_width(),
                )
            )


@cli.command(name="list")
@click.option("--queue", "-q", help="Only this queue.")
@click.option(
    "--status", "-s", type=click.Choice([s.value for s in Status]), help="Only this status."
)
@click.option("--kind", "-k", type=click.Choice([k.value for k in Kind]), help="Only this kind.")
@click.option("--name", help="Only this function (its import path, as `app:send_email`).")
@click.option(
    "--since",
    metavar="TIME",
    help="Created at or after: ISO-8601 (UTC if no offset) or an age, 2h, 30m, 7d.",
)
@click.option("--until", metavar="TIME", help="Created before: as --since.")
@click.option("--after", metavar="CURSOR", help="The page after the one that printed CURSOR.")
@click.option("--limit", "-n", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array (next cursor on stderr).")
@click.option(
    "--paged",
    is_flag=True,
    help='With --json: one object, {"executions": [...], "next": CURSOR or null}.',
)
@clean_errors
def list_(
    queue: str | None,
    status: str | None,
    kind: str | None,
    name: str | None,
    since: str | None,
    until: str | None,
    after: str | None,
    limit: int,
    as_json: bool,
    paged: bool,
) -> None:
    """List executions, newest first; a full page ends with the cursor of the next one."""
    from workflows import executions
    from workflows.errors import ConfigurationError

    for option, value, check in (
        ("--since", since, executions.parse_time),
        ("--until", until, executions.parse_time),
        ("--after", after, executions.decode_cursor),
        ("--queue", queue, executions.check_text),
        ("--name", name, executions.check_text),
    ):
        try:
            check(value, option)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None
    page = executions.list_sync(
        queue=queue,
        status=status,
        kind=kind,
        name=name,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    rows, cursor = page["executions"], page["next"]
    if as_json and paged:
        click.echo(render.to_json(page))
        return
    if as_json:
        click.echo(render.to_json(rows))
        if cursor:
            click.echo(f"next: {cursor}", err=True)
        return
    if rows:
        click.echo(render.executions_table(rows, render.output_width()))
    elif cursor:
        click.echo(f"no executions match among the {executions.SCAN_LIMIT:,} read")
    else:
        click.echo("no executions match")
    if cursor:
        click.echo(f"more: add --after {cursor}")


@cli.command()
@click.argument("execution_id")
@clean_errors
def cancel(execution_id: str) -> None:
    """Cancel an execution (and, for a workflow, what it started); EXECUTION_ID: its id or a
    unique prefix of it."""
    from workflows_cli.ids import full_id

    execution_id = full_id(execution_id)
    outcome = _store().cancel(execution_id)
    if outcome == "cancelled":
        click.echo(f"cancelled {execution_id}")
    elif outcome == "cancelling":
        click.echo(f"cancelling {execution_id}: its worker has been told to stop it")
    else:
        click.echo(f"{execution_id} {outcome}: nothing to cancel")


@cli.group(name="dev-db")
def dev_db() -> None:
    """The embedded PostgreSQL used when WORKFLOWS_DATABASE_URL is unset."""


@dev_db.command(name="stop")
@clean_errors
def dev_db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    from workflows_postgres import embedded

    if embedded.stop(Settings.from_env().data_dir):
        click.echo("stopped the embedded PostgreSQL")
    else:
        click.echo("the embedded PostgreSQL was not running")


@dev_db.command(name="url")
@clean_errors
def dev_db_url() -> None:
    """Start the embedded PostgreSQL if needed and print its URL."""
    from workflows_postgres import embedded

    click.echo(embedded.ensure_running(Settings.from_env().data_dir))


def _add_groups() -> None:
    # Imported here: each module imports clean_errors from this one.
    from workflows_cli.dashboard_cmd import dashboard
    from workflows_cli.fleet_cmd import history, workers
    from workflows_cli.flow_cmd import queues, rate_limits
    from workflows_cli.prune_cmd import prune
    from workflows_cli.retry_cmd import retry, signal
    from workflows_cli.schedules_cmd import schedules

    cli.add_command(dashboard)
    cli.add_command(prune)
    cli.add_command(queues)
    cli.add_command(rate_limits)
    cli.add_command(schedules)
    cli.add_command(retry)
    cli.add_command(signal)
    cli.add_command(workers)
    cli.add_command(history)

    from workflows_cli.replay_cmd import replay

    cli.add_command(replay)


_add_groups()


def main() -> None:
    cli(prog_name="workflows")
