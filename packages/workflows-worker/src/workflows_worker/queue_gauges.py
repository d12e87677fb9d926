"""The per-queue gauges read from the database: depth by status, and the oldest pending age.

Every worker reads them for its own queues once per heartbeat interval (see maintenance.py),
each with bounded work however deep a queue is: depths are counted exactly up to a limit and
estimated past it, and the oldest age is a skip scan of the claim index (see sql/metrics.sql).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workflows.store import WorkerStore

__all__ = ["MAX_PRIORITY_LEVELS", "QueueGauges", "plan_rows", "read_queue_gauges"]

# Distinct priorities the oldest-age scan visits per queue (one index probe each): past that
# many pending in one queue, the age is that of the highest ones.
MAX_PRIORITY_LEVELS = 1000


@dataclass(frozen=True)
class QueueGauges:
    depths: dict[tuple[str, str], int]
    # The (queue, status) pairs whose depth is the planner's estimate, not a count.
    estimated: frozenset[tuple[str, str]]
    oldest_pending_age: dict[str, float]


async def read_queue_gauges(
    store: WorkerStore, queues: Sequence[str], exact_limit: int
) -> QueueGauges:
    depths = await store.queue_depths(queues, exact_limit)
    estimated: set[tuple[str, str]] = set()
    for (queue, status), n in depths.items():
        if n < exact_limit:
            continue
        # The count stopped at the limit: at least that many, and the planner's estimate
        # (from ANALYZE's statistics, as fresh as autovacuum keeps them) says how many more.
        rows = await store.control(f"queue_depth_estimate_{status}", [queue])
        depths[(queue, status)] = max(exact_limit, plan_rows(rows))
        estimated.add((queue, status))
    ages = await store.control("queue_oldest_pending_age", [list(queues), MAX_PRIORITY_LEVELS])
    return QueueGauges(
        depths,
        frozenset(estimated),
        {str(row["queue"]): float(row["age"]) for row in ages},
    )


def plan_rows(rows: list[dict[str, Any]]) -> int:
    """The top node's row estimate of an ``EXPLAIN (FORMAT JSON)`` result.

    asyncpg hands the plan over as JSON text, psycopg as the decoded value.
    """
    (row,) = rows
    (plan,) = row.values()
    if isinstance(plan, str | bytes):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])
