"""`workflows schedules`: list, pause, resume, delete and trigger cron schedules."""

from __future__ import annotations

import click

from workflows import schedules as api
from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors

SCHEDULE_COLUMNS = ("name", "function", "queue", "cron", "timezone", "state", "next_tick", "source")


@click.group(epilog=EPILOG)
def schedules() -> None:
    """Cron schedules (schedule= on @job/@workflow, or workflows.schedules.create())."""


@schedules.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@clean_errors
def list_(as_json: bool) -> None:
    """List every schedule, with its next tick (times in UTC)."""
    rows = api.list_sync()
    if as_json:
        click.echo(render.to_json(rows))
    elif rows:
        click.echo(render.table([render.schedule_row(r) for r in rows], SCHEDULE_COLUMNS))
    else:
        click.echo("no schedules")


@schedules.command()
@click.argument("name")
@clean_errors
def pause(name: str) -> None:
    """Fire no tick of NAME until it is resumed (restarts keep it paused)."""
    api.pause_sync(name)
    click.echo(f"paused {name}")


@schedules.command()
@click.argument("name")
@clean_errors
def resume(name: str) -> None:
    """Fire NAME's ticks again, from the next one (ticks missed while paused do not fire)."""
    api.resume_sync(name)
    click.echo(f"resumed {name}")


@schedules.command()
@click.argument("name")
@clean_errors
def delete(name: str) -> None:
    """Delete NAME (its executions stay)."""
    deleted = api.delete_sync(name)
    click.echo(f"deleted {name}")
    if deleted["source"] == "code":
        click.echo(
            "note: it is declared in code: the next worker that starts with that code registers "
            "it again (remove it from the code, or pause it)"
        )


@schedules.command()
@click.argument("name")
@clean_errors
def trigger(name: str) -> None:
    """Enqueue one run of NAME now, outside its ticks; prints the execution id."""
    click.echo(api.trigger_sync(name))
