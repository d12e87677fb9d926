"""`workflows workers` and `workflows history`: the fleet and one workflow as they are now (and
`workflows history export`: a workflow's history as a file to replay)."""

from __future__ import annotations

import json
from typing import Any

import click

from workflows_cli import render
from workflows_cli.exit_codes import EPILOG
from workflows_cli.failures import clean_errors

WORKER_COLUMNS = ("worker_id", "host", "pid", "queues", "version", "running", "beat", "state")
HISTORY_COLUMNS = (
    "seq",
    "kind",
    "name",
    "status",
    "attempts",
    "started_at",
    "finished_at",
    "duration",
)


def worker_row(worker: dict[str, Any]) -> dict[str, Any]:
    """A worker (``workflows.workers.list``) as a row of ``workflows workers``."""
    return {
        "worker_id": worker["worker_id"],
        "host": worker["hostname"],
        "pid": worker["pid"],
        "queues": ",".join(worker["queues"]),
        "version": worker["code_version"],
        "running": worker["running"],
        "beat": render.duration(worker["beat_age"]),
        "state": "alive" if worker["alive"] else "dead",
    }


@click.command(epilog=EPILOG)
@click.option("--json", "as_json", is_flag=True, help="A JSON array.")
@clean_errors
def workers(as_json: bool) -> None:
    """Every registered worker: host, pid, queues, code version, what it runs now, its last
    heartbeat's age, and whether that is within WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT."""
    from workflows import workers as api

    rows = api.list_sync()
    if as_json:
        click.echo(render.to_json(rows))
    elif rows:
        click.echo(
            render.table(
                [worker_row(w) for w in rows],
                WORKER_COLUMNS,
                width=render.output_width(),
                floors={"worker_id": 8, "state": 5, "beat": 6},
            )
        )
    else:
        click.echo("no workers are registered")


def _shown_status(step: dict[str, Any]) -> str:
    # A scheduled step with an execution is as far as that execution is (pending, running).
    if step["status"] == "scheduled" and step["execution_status"]:
        return str(step["execution_status"])
    return str(step["status"])


def history_rows(steps: list[dict[str, Any]], depth: int = 0) -> list[dict[str, Any]]:
    """Steps (``workflows.executions.history``) as table rows, a child workflow's steps under
    its own and indented."""
    rows: list[dict[str, Any]] = []
    for step in steps:
        rows.append(
            {
                **step,
                "name": "  " * depth + step["name"],
                "status": _shown_status(step),
                "duration": render.duration(step["duration"]),
            }
        )
        rows.extend(history_rows(step.get("children") or [], depth + 1))
    return rows


class _HistoryGroup(click.Group):
    """``workflows history ID`` shows a history, ``workflows history export ID`` writes one.

    Anything but a subcommand's name goes to ``show`` (hidden): ids and prefixes are hex, so
    none is ``export``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["show", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "EXECUTION_ID [--json] | export EXECUTION_ID")


class _ShowCommand(click.Command):
    """``show``, run as ``workflows history ID``: its usage says so."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        path = ctx.parent.command_path if ctx.parent is not None else ctx.command_path
        formatter.write_usage(path, " ".join(self.collect_usage_pieces(ctx)))


@click.group(cls=_HistoryGroup, epilog=EPILOG)
def history() -> None:
    """A workflow's steps in order, child workflows' under theirs (EXECUTION_ID: its id or a
    unique prefix of it; --json: one JSON object, children nested).

    `workflows history export EXECUTION_ID > order.json` writes its history as JSON for
    `workflows replay` (docs/history-format.md)."""


@history.command(name="show", cls=_ShowCommand, hidden=True, epilog=EPILOG)
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, children nested.")
@clean_errors
def show(execution_id: str, as_json: bool) -> None:
    """A workflow's steps in order, child workflows' under theirs (EXECUTION_ID: its id or a
    unique prefix of it)."""
    from workflows import executions
    from workflows_cli.ids import full_id

    found = executions.history_sync(full_id(execution_id))
    if as_json:
        click.echo(render.to_json(found))
        return
    e = found["execution"]
    width = render.output_width()
    title = f"{e['kind']} {e['name']} {e['id']}: {e['status']}" + (
        f" in {render.duration(e['duration'])}" if e["duration"] is not None else ""
    )
    click.echo(title if width is None else render.truncate(title, width))
    rows = history_rows(found["steps"])
    if rows:
        click.echo(
            render.table(
                rows,
                HISTORY_COLUMNS,
                width=width,
                headers={"attempts": "TRIES"},
                # Times whole or not at all; the end left out first when space is short.
                floors={"status": 9, "started_at": 19, "finished_at": 19, "duration": 8},
                optional=("finished_at",),
            )
        )
    elif e["kind"] == "workflow":
        click.echo("no steps yet")


@history.command(name="export", epilog=EPILOG)
@click.argument("execution_id")
@clean_errors
def export(execution_id: str) -> None:
    """Write a workflow's history (EXECUTION_ID: its id or a unique prefix of it) as JSON on
    stdout, for `workflows replay` and workflows.testing.replay: its function, version,
    arguments and steps, in the format of docs/history-format.md. It holds the arguments and
    every step's result as stored: review it before you commit it."""
    from workflows.testing import export_history_sync
    from workflows_cli.ids import full_id

    found = export_history_sync(full_id(execution_id))
    # ASCII: the file goes into a repository and through any terminal's encoding unharmed.
    click.echo(json.dumps(found, indent=2, ensure_ascii=True))
