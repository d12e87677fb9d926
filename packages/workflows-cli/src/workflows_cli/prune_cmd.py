"""`workflows prune`: delete finished executions (with their steps, signals and children)."""

from __future__ import annotations

import click

from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors

STATUSES = ("completed", "failed", "cancelled")


@click.command(epilog=EPILOG)
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Prune what finished longer ago than this (90s, 15m, 12h, 7d, 2w) whatever its "
    "status; default: each status's retention (WORKFLOWS_RETENTION*).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help="Only executions that ended so (repeat for several); default: all three.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object of counts.")
@clean_errors
def prune(older_than: str | None, statuses: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Delete finished workflows and jobs past their retention, each with everything under it.

    A workflow goes with its steps, signals, activities and child workflows, and only once all
    of them have finished; running, pending and waiting executions are never deleted.
    """
    from workflows.retention import prune_sync

    counts = prune_sync(older_than, list(statuses) or None, dry_run)
    if as_json:
        click.echo(render.to_json({**counts, "dry_run": dry_run}))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {counts['executions']} executions ({counts['roots']} trees), "
        f"{counts['steps']} steps, {counts['signals']} signals"
    )
