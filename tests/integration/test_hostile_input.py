"""Poison input at the producer: our own error, raised before the database, and no row written.

Each value here made the driver or PostgreSQL fail with a raw error (asyncpg's
UntranslatableCharacterError, DataError, DatetimeFieldOverflowError, a UnicodeEncodeError, a
RecursionError...), or was stored as something else (NaN, -infinity), before the API checked it.
"""

from __future__ import annotations

import math
import secrets
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import workflows
from tests.integration import hostile_app
from tests.integration.conftest import StartWorker, wait_status
from workflows import ConfigurationError, SerializationError
from workflows.api import WorkflowFunction
from workflows_postgres.store import PostgresStore


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


# (error, message it must hold, options, arguments). The message proves the API's own check
# refused it: a safety net in the store may turn a driver's error into the same type.
POISON = [
    pytest.param(
        SerializationError,
        "arguments contains a NUL",
        {},
        ({"k": ["a\x00b"]},),
        id="nul-in-args",
    ),
    pytest.param(
        SerializationError,
        "arguments contains a lone surrogate",
        {},
        ({"k\ud800": "v"},),
        id="lone-surrogate-in-args",
    ),
    pytest.param(
        SerializationError,
        "arguments is nested too deeply",
        {},
        (nested(10_000),),
        id="10000-deep-nesting",
    ),
    # 1,000,000 characters (under the 1 MiB limit), 4,000,000 bytes of UTF-8.
    pytest.param(
        SerializationError,
        "over the limit of 1048576",
        {},
        ("😀" * 1_000_000,),
        id="4MB-multibyte-argument",
    ),
    pytest.param(
        ConfigurationError,
        "retries must be a whole number from 0 to 1000000",
        {"retries": 2**40},
        (),
        id="retries-2**40",
    ),
    pytest.param(
        ConfigurationError,
        "idempotency_key must be at most 1000 bytes",
        {"idempotency_key": secrets.token_hex(500_000)},
        (),
        id="1MB-idempotency-key",
    ),
    pytest.param(
        ConfigurationError,
        "run_at must be a timezone-aware datetime after",
        {"run_at": datetime(1, 1, 1, tzinfo=UTC)},
        (),
        id="run_at-min",
    ),
    pytest.param(
        ConfigurationError,
        "run_at must be a timezone-aware datetime after",
        {"run_at": datetime.max.replace(tzinfo=UTC)},
        (),
        id="run_at-max",
    ),
    pytest.param(
        ConfigurationError,
        "timeout must be a finite number",
        {"timeout": math.nan},
        (),
        id="nan-timeout",
    ),
    pytest.param(
        ConfigurationError,
        "delay must be a finite number",
        {"delay": math.inf},
        (),
        id="inf-delay",
    ),
]


async def count_rows(store: PostgresStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM workflows.executions"))


def count_rows_sync(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM workflows.executions").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(("error", "message", "options", "args"), POISON)
async def test_queue_refuses_poison_and_enqueues_nothing(
    store: PostgresStore,
    error: type[Exception],
    message: str,
    options: dict[str, Any],
    args: tuple[Any, ...],
) -> None:
    with pytest.raises(error, match=message):
        if options:
            await hostile_app.echo.options(**options).queue(*args)
        else:
            await hostile_app.echo.queue(*args)
    assert await count_rows(store) == 0


@pytest.mark.parametrize(("error", "message", "options", "args"), POISON)
def test_queue_sync_refuses_poison_and_enqueues_nothing(
    database_url: str,
    error: type[Exception],
    message: str,
    options: dict[str, Any],
    args: tuple[Any, ...],
) -> None:
    with pytest.raises(error, match=message):
        if options:
            hostile_app.echo.options(**options).queue_sync(*args)
        else:
            hostile_app.echo.queue_sync(*args)
    assert count_rows_sync(database_url) == 0


async def test_run_at_refuses_only_the_instants_the_driver_sends_as_infinity(
    store: PostgresStore,
) -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime.max.replace(tzinfo=UTC)
    # The same instants in another zone are the same poison.
    for run_at in (first, last, last.astimezone(timezone(timedelta(hours=-5)))):
        with pytest.raises(ConfigurationError, match="run_at"):
            await hostile_app.echo.options(run_at=run_at).queue()
    # One microsecond inside, PostgreSQL stores the instant as given.
    for run_at in (first + timedelta(microseconds=1), last - timedelta(microseconds=1)):
        job_id = await hostile_app.echo.options(run_at=run_at).queue()
        assert (await store.get_status(job_id))["run_at"] == run_at.isoformat()
    finite = "SELECT count(*) FROM workflows.executions WHERE isfinite(run_at)"
    assert await store.pool.fetchval(finite) == await count_rows(store) == 2


@pytest.mark.parametrize(
    ("name", "payload", "error", "message"),
    [
        pytest.param(
            "s" * 10_000,
            None,
            ConfigurationError,
            "signal name must be at most 255 characters",
            id="10000-character-name",
        ),
        pytest.param(
            "go\x00", None, ConfigurationError, "signal name must not contain a NUL", id="nul"
        ),
        pytest.param(
            "go\udfff",
            None,
            ConfigurationError,
            "signal name must be valid Unicode",
            id="surrogate",
        ),
        pytest.param(
            "go",
            {"k": "\x00"},
            SerializationError,
            "signal payload contains a NUL",
            id="nul-payload",
        ),
    ],
)
async def test_send_signal_checks_before_the_database(
    store: PostgresStore, name: str, payload: Any, error: type[Exception], message: str
) -> None:
    # No such workflow: only a check made before the store's query can raise these errors.
    missing = str(uuid.uuid4())
    with pytest.raises(error, match=message):
        await workflows.send_signal(missing, name, payload)
    with pytest.raises(error, match=message):
        workflows.send_signal_sync(missing, name, payload)
    assert await store.pool.fetchval("SELECT count(*) FROM workflows.workflow_signals") == 0


@pytest.mark.parametrize(
    ("wf", "message"),
    [
        (hostile_app.runs_step_with_poison_retries, "retries must be a whole number from 0 to"),
        (hostile_app.runs_step_with_poison_timeout, "timeout must be a finite number"),
        (hostile_app.sleeps_forever, "seconds must be a finite number"),
        (hostile_app.waits_with_nan_timeout, "timeout must be a finite number"),
        (hostile_app.waits_for_huge_signal_name, "signal name must be at most 255 characters"),
        (hostile_app.versions_nul_change_id, "change_id must not contain a NUL"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, WorkflowFunction) else "",
)
async def test_workflow_code_cannot_store_a_poison_value(
    store: PostgresStore, start_worker: StartWorker, wf: WorkflowFunction[[], Any], message: str
) -> None:
    wf_id = await wf.queue()
    await start_worker("hostile")
    status = await wait_status(store, wf_id, {"failed"})
    assert status["error"]["type"] == "ConfigurationError"
    assert message in status["error"]["message"]
    # Refused in the workflow's code: no step, no activity, nothing but the workflow itself.
    assert await store.steps_of(wf_id) == []
    assert await count_rows(store) == 1
