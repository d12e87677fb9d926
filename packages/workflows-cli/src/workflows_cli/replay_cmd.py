"""`workflows replay`: exported histories replayed against today's code, before a deploy."""

from __future__ import annotations

import sys

import click

from workflows_cli.exit_codes import EPILOG, EXIT_ERROR
from workflows_cli.failures import clean_errors


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines()) or "failed"


@click.command(epilog=EPILOG)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "-A",
    "--app",
    "apps",
    multiple=True,
    help="A module to import first, as `currant worker -A` does (repeatable).",
)
@clean_errors
def replay(files: tuple[str, ...], apps: tuple[str, ...]) -> None:
    """Replay histories written by `workflows history export` (FILES) against today's code,
    with the pure engine a worker runs: no database, no worker.

    Each file's workflow is found by its recorded path as a worker finds it (in the -A
    modules, or application code under this directory). One line per file: `replayed` on
    stdout, or `failed` and why on stderr (the NonDeterminismError message: the step, what
    history holds, what the code asked for). Exits 1 if any file failed."""
    from workflows.config import Settings
    from workflows.errors import ConfigurationError, WorkflowsError
    from workflows.testing import read_history
    from workflows.testing import replay as replay_history
    from workflows_worker.imports import (
        FunctionNotFound,
        ImportPolicy,
        add_cwd_to_path,
        import_app_modules,
    )

    settings = Settings.from_env()
    add_cwd_to_path()
    try:
        import_app_modules(list(apps))
    except Exception as exc:
        raise WorkflowsError(f"cannot import --app module: {type(exc).__name__}: {exc}") from None
    policy = ImportPolicy.from_settings(settings)
    failed = 0
    for path in files:
        try:
            history = read_history(path)
            name = history["workflow"]["name"]
            try:
                fn = policy.resolve(name, "workflow")
            except FunctionNotFound as exc:
                raise ConfigurationError(f"{exc} (import it with -A)") from None
            done = replay_history(history, fn)
        except WorkflowsError as exc:
            failed += 1
            click.echo(f"failed {path}: {_one_line(str(exc))}", err=True)
            continue
        ident = f" {done.workflow_id}" if done.workflow_id else ""
        click.echo(f"replayed {path}: {done.name}{ident} ({done.status}, {done.steps} steps)")
    if failed:
        sys.exit(EXIT_ERROR)
