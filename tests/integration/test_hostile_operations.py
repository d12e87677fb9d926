"""Poison input to the operators' calls (retry, prune, list, history, prefixes, stats, the
idempotency window): each is refused with one of our own errors, never a driver's, and
changes nothing."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

import workflows
from tests.integration import jobs_app
from workflows import WorkflowsError
from workflows_postgres.store import PostgresStore

HUGE = "x" * 1_000_000
TEXTS = ["\x00", "a\x00b", "\ud800", HUGE, "", " "]

Call = Callable[[], Awaitable[Any]]

CALLS: list[Any] = [
    *(pytest.param(lambda t=t: workflows.retry(t), id=f"retry-{i}") for i, t in enumerate(TEXTS)),
    *(
        pytest.param(lambda t=t: workflows.executions.history(t), id=f"history-{i}")
        for i, t in enumerate(TEXTS)
    ),
    *(
        pytest.param(lambda t=t: workflows.executions.resolve(t), id=f"resolve-{i}")
        for i, t in enumerate(TEXTS)
    ),
    *(
        pytest.param(lambda t=t: workflows.send_signal(t, "go"), id=f"signal-{i}")
        for i, t in enumerate(TEXTS)
    ),
    *(
        pytest.param(lambda t=t: workflows.executions.list(name=t), id=f"list-name-{i}")
        for i, t in enumerate(TEXTS[:4])
    ),
    *(
        pytest.param(lambda t=t: workflows.executions.list(after=t), id=f"list-after-{i}")
        for i, t in enumerate([*TEXTS, "bm90IGEgY3Vyc29y", "MjAyNnxub3QtYS11dWlk"])
    ),
    *(
        pytest.param(lambda v=v: workflows.executions.list(since=v), id=f"list-since-{i}")
        for i, v in enumerate(
            ["\x00", "\ud800", HUGE, "99999999999999w", "1e9d", -1, math.nan, object()]
        )
    ),
    *(
        pytest.param(lambda t=t: workflows.queues.stats(t), id=f"stats-{i}")
        for i, t in enumerate(TEXTS[:4])
    ),
    *(
        pytest.param(
            lambda t=t: workflows.retry_many(queue=t, status="failed"), id=f"retry-many-q-{i}"
        )
        for i, t in enumerate(TEXTS)
    ),
    *(
        pytest.param(
            lambda v=v: workflows.retry_many(queue="q", status="failed", since=v),
            id=f"retry-many-since-{i}",
        )
        for i, v in enumerate(["\x00", "99999999999999w", datetime.min, "not a time"])
    ),
    pytest.param(
        lambda: workflows.retry_many(queue="q", status="running"), id="retry-many-running"
    ),
    pytest.param(lambda: workflows.retry_many(queue="q", limit=-1), id="retry-many-limit"),
    *(
        pytest.param(lambda v=v: workflows.prune(older_than=v), id=f"prune-{i}")
        for i, v in enumerate(
            [math.nan, math.inf, -1, "\x00", "\ud800", HUGE, True, timedelta(days=-1)]
        )
    ),
    pytest.param(lambda: workflows.prune(statuses=["running"]), id="prune-running"),
    *(
        pytest.param(
            lambda v=v: jobs_app.flaky.options(idempotency_key="k", idempotency_ttl=v).queue(
                "k", 0
            ),
            id=f"ttl-{i}",
        )
        for i, v in enumerate([math.nan, math.inf, -1, "\x00", "\ud800", True, "5 days"])
    ),
]


@pytest.mark.parametrize("call", CALLS)
async def test_poison_to_an_operation_is_refused_with_our_error_and_writes_nothing(
    store: PostgresStore, call: Call
) -> None:
    before = await store.pool.fetchval("SELECT count(*) FROM workflows.executions")
    with pytest.raises(WorkflowsError) as raised:
        await call()
    message = str(raised.value)
    # One line, and not the whole 1 MB value echoed back.
    assert "\n" not in message and len(message) < 2_000
    assert await store.pool.fetchval("SELECT count(*) FROM workflows.executions") == before
