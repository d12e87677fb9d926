"""`workflows retry` (one execution, or every match of a queue) and `workflows signal`."""

from __future__ import annotations

import json
from typing import Any

import click

from workflows.errors import ConfigurationError
from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors
from workflows_cli.ids import full_id

BULK_COLUMNS = ("id", "kind", "name", "status", "attempts", "finished_at", "skipped")


@click.command(epilog=EPILOG)
@click.argument("execution_id", required=False)
@click.option("--queue", "-q", help="Bulk: every match of this queue.")
@click.option(
    "--status",
    "-s",
    type=click.Choice(["failed", "cancelled"]),
    help="Bulk: retry those that failed, or those cancelled.",
)
@click.option("--name", help="Bulk: only this function (module:qualname).")
@click.option("--since", help="Bulk: ended at or after (ISO-8601, or ago: 30m, 2h, 7d).")
@click.option("--until", help="Bulk: ended before (ISO-8601, or ago: 30m, 2h, 7d).")
@click.option("--limit", "-n", type=click.IntRange(1, 2**31 - 1), help="Bulk: at most this many.")
@click.option("--dry-run", is_flag=True, help="Bulk: list what would be retried; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@clean_errors
def retry(
    execution_id: str | None,
    queue: str | None,
    status: str | None,
    name: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Start a failed or cancelled execution again as a new attempt: EXECUTION_ID, or every
    failed (--status failed) or cancelled root of --queue that matches.

    A workflow resumes from its history: completed steps are not run again, only the step
    that ended it.
    """
    import workflows

    bulk = {"--status": status, "--name": name, "--since": since, "--until": until}
    if execution_id is not None:
        given = [k for k, v in {"--queue": queue, **bulk}.items() if v is not None]
        if given or limit is not None or dry_run:
            raise click.UsageError("give an EXECUTION_ID or bulk options (--queue ...), not both")
        row = workflows.retry_sync(full_id(execution_id))
        if as_json:
            click.echo(render.to_json(row))
        else:
            click.echo(f"retried {row['kind']} {row['id']}: {row['status']}")
        return
    if queue is None or status is None:
        raise click.UsageError("give an EXECUTION_ID, or --queue and --status for a bulk retry")
    rows = workflows.retry_many_sync(
        queue=queue,
        status=status,
        name=name,
        since=since,
        until=until,
        limit=limit,
        dry_run=dry_run,
    )
    if as_json:
        click.echo(render.to_json(rows))
        return
    if rows:
        click.echo(render.table(rows, BULK_COLUMNS[:-1] if dry_run else BULK_COLUMNS))
    skipped = sum(1 for r in rows if "skipped" in r)
    if dry_run:
        click.echo(f"would retry {len(rows)} (dry run: nothing changed)")
    else:
        click.echo(f"retried {len(rows) - skipped}, skipped {skipped}")


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"the payload is not valid JSON: {exc}") from None


@click.command(epilog=EPILOG)
@click.argument("workflow_id")
@click.argument("name")
@click.argument("payload", required=False)
@clean_errors
def signal(workflow_id: str, name: str, payload: str | None) -> None:
    """Send signal NAME to a workflow; PAYLOAD is JSON (none: null)."""
    import workflows

    value = _payload(payload)
    ident = full_id(workflow_id)
    workflows.send_signal_sync(ident, name, value)
    click.echo(f"sent {name} to workflow {ident}")
