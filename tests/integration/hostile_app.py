"""Functions for tests/integration/test_hostile_input.py; module-level so a worker imports them.

Each workflow hands one poison value to the API from workflow code; the API must refuse it
there (ConfigurationError, failing the workflow) before the store is asked to write it.
"""

from __future__ import annotations

from typing import Any

import workflows
from workflows import activity, get_version, job, wait_for_signal, workflow


@job(queue="hostile", retries=0)
async def echo(value: Any = None) -> Any:
    return value


@activity(retries=0)
def poison_retries() -> None:
    """Never runs: its retries were set past what the store's integer column holds."""


@activity(retries=0)
def poison_timeout() -> None:
    """Never runs: its timeout was set to NaN."""


# Set after decoration, as code may do: the decorator's check is not the last line of defence.
poison_retries.retries = 2**40
poison_timeout.timeout = float("nan")


@workflow(queue="hostile")
async def runs_step_with_poison_retries() -> None:
    await poison_retries.run()


@workflow(queue="hostile")
async def runs_step_with_poison_timeout() -> None:
    await poison_timeout.run()


@workflow(queue="hostile")
async def sleeps_forever() -> None:
    await workflows.sleep(float("inf"))


@workflow(queue="hostile")
async def waits_with_nan_timeout() -> None:
    await wait_for_signal("go", timeout=float("nan"))


@workflow(queue="hostile")
async def waits_for_huge_signal_name() -> None:
    await wait_for_signal("s" * 10_000)


@workflow(queue="hostile")
async def versions_nul_change_id() -> int:
    return get_version("change\x00", 1, 2)
