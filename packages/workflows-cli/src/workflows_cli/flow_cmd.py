"""`workflows queues ...` and `workflows rate-limits ...`: the fleet's flow-control settings."""

from __future__ import annotations

from typing import Any

import click

from workflows.errors import ConfigurationError
from workflows.flow import check_key, check_limit, parse_rate
from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors

QUEUE_COLUMNS = (
    "name",
    "concurrency",
    "rate",
    "paused",
    "running",
    "pending",
    "waiting",
    "held",
    "throttled",
    "oldest",
    "completed_5m",
    "failed_5m",
)
_QUEUE_HEADERS = {
    "concurrency": "CONC",
    "running": "RUN",
    "pending": "PEND",
    "waiting": "WAIT",
    "throttled": "THROT",
    "completed_5m": "OK/5M",
    "failed_5m": "FAIL/5M",
}


def _limit_option(value: str | None, name: str, parse: Any) -> Any:
    """A limit given on the command line: its value, None for 'none', or unchanged."""
    from workflows.queues import UNCHANGED

    if value is None:
        return UNCHANGED
    if value.strip().lower() == "none":
        return None
    try:
        return parse(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{name}") from None


def _concurrency(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ConfigurationError(
            f"concurrency must be a whole number or 'none', got {text!r}"
        ) from None
    return check_limit("concurrency", number)


def _rate(text: str) -> str:
    parse_rate(text)
    return text


def queue_row(stats: dict[str, Any]) -> dict[str, Any]:
    """A queue's figures (``workflows.queues.stats``) as a row of ``workflows queues``: a count
    that reached the cap as ``100000+``, the oldest pending's age as ``42s``."""
    from workflows.queues import COUNT_CAP

    row = dict(stats)
    for key in ("pending", "waiting", "held", "throttled"):
        if row.get(key) == COUNT_CAP:
            row[key] = f"{COUNT_CAP}+"
    row["oldest"] = render.duration(stats.get("oldest_pending_seconds"))
    return row


def _queue_table(rows: list[dict[str, Any]]) -> str:
    return render.table(
        [queue_row(r) for r in rows],
        QUEUE_COLUMNS,
        width=render.output_width(),
        headers=_QUEUE_HEADERS,
        floors={"name": 8},
        # An 80-column terminal holds all but one: waiting workflows are the least urgent.
        optional=("waiting",),
    )


def _echo_queues(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(render.to_json(rows))
    elif rows:
        click.echo(_queue_table(rows))
    else:
        click.echo("no queues have settings, workers, or recent executions")


@click.group(epilog=EPILOG, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Without a command: a JSON array.")
@click.pass_context
@clean_errors
def queues(ctx: click.Context, as_json: bool) -> None:
    """Queues' figures (without a command: as `queues list`), and their fleet-wide limits and
    pauses (stored in the database, seen by every worker)."""
    if ctx.invoked_subcommand is None:
        from workflows import queues as api

        _echo_queues(api.stats_sync(), as_json)


@queues.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@clean_errors
def queues_list(as_json: bool) -> None:
    """Every known queue with its figures: running, pending, waiting, held and throttled
    executions, the oldest runnable pending one's age, ends in the last five minutes, and its
    limits. Known: with settings, a registered worker, pending or running executions, or an
    end in the last five minutes."""
    from workflows import queues as api

    _echo_queues(api.stats_sync(), as_json)


@queues.command(name="show")
@click.argument("queue")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@clean_errors
def queues_show(queue: str, as_json: bool) -> None:
    """One queue's settings and figures."""
    from workflows import queues as api

    (row,) = api.stats_sync(queue)
    click.echo(render.to_json(row) if as_json else _queue_table([row]))


@queues.command(name="set-limit")
@click.argument("queue")
@click.option(
    "--concurrency",
    metavar="N|none",
    help="At most N executions of the queue running at once, across all workers.",
)
@click.option(
    "--rate",
    metavar="RATE|none",
    help="At most this many starts in any window of the period: 100/s, 500/m, 10/30s.",
)
@clean_errors
def queues_set_limit(queue: str, concurrency: str | None, rate: str | None) -> None:
    """Set (or with 'none' remove) a queue's concurrency and rate limits."""
    from workflows import queues as api

    if concurrency is None and rate is None:
        raise click.UsageError("give --concurrency, --rate or both")
    row = api.set_limit_sync(
        queue,
        concurrency=_limit_option(concurrency, "concurrency", _concurrency),
        rate=_limit_option(rate, "rate", _rate),
    )
    click.echo(
        f"queue {queue}: concurrency {row['concurrency'] or 'unlimited'}, "
        f"rate {row['rate'] or 'unlimited'}{', paused' if row['paused'] else ''}"
    )


@queues.command(name="pause")
@click.argument("queue")
@clean_errors
def queues_pause(queue: str) -> None:
    """Start nothing more from the queue (what runs finishes)."""
    from workflows import queues as api

    api.pause_sync(queue)
    click.echo(f"paused queue {queue}")


@queues.command(name="resume")
@click.argument("queue")
@clean_errors
def queues_resume(queue: str) -> None:
    """Start the queue's executions again."""
    from workflows import queues as api

    api.resume_sync(queue)
    click.echo(f"resumed queue {queue}")


@click.group(name="rate-limits", epilog=EPILOG)
def rate_limits() -> None:
    """Named rates shared by every execution with that rate_key, whatever its queue."""


@rate_limits.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@clean_errors
def rate_limits_list(as_json: bool) -> None:
    """Every rate set, with the starts in its current window."""
    from workflows import rate_limits as api

    rows = api.list_sync()
    if as_json:
        click.echo(render.to_json(rows))
    elif rows:
        click.echo(render.table(rows, ("key", "rate", "recent_starts")))
    else:
        click.echo("no rate limits are set")


@rate_limits.command(name="set")
@click.argument("key")
@click.argument("rate")
@clean_errors
def rate_limits_set(key: str, rate: str) -> None:
    """Allow at most RATE (100/s, 500/m, 10/30s) starts of executions with rate_key KEY."""
    from workflows import rate_limits as api

    try:
        check_key("rate key", key)
        parse_rate(rate)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None
    api.set_sync(key, rate)
    click.echo(f"rate limit {key}: {parse_rate(rate)}")


@rate_limits.command(name="delete")
@click.argument("key")
@clean_errors
def rate_limits_delete(key: str) -> None:
    """Remove a rate: executions with the key start unlimited."""
    from workflows import rate_limits as api

    if api.delete_sync(key):
        click.echo(f"deleted rate limit {key}")
    else:
        click.echo(f"no rate limit {key}")
