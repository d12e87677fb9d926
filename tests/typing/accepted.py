"""The types mypy --strict gives typed workflow code (checked by tests/unit/test_typing.py).

No line here may be reported: each ``assert_type`` states what a user's code gets, so a
result typed ``Any`` (which would let anything through) fails as surely as a wrong type.
"""

import asyncio
from typing import Any, assert_type

import workflows
from workflows import ExecutionId, activity, job, workflow


@job(queue="emails")
async def send_email(to: str, subject: str) -> dict[str, bool]:
    return {"sent": True}


@job
def resize(path: str, width: int) -> list[int]:
    return [width]


@activity(retries=3)
async def charge(amount: float) -> dict[str, str]:
    return {"transaction_id": "txn_1"}


@activity
def lookup(sku: str) -> int:
    return len(sku)


@activity(timeout=5)
def weigh(sku: str) -> float:
    return 1.5


@workflow
async def child(n: int) -> list[str]:
    return [str(n)]


@workflow(queue="orders")
async def parent(order_id: str, amount: float) -> str:
    receipt = await charge.run(amount)
    assert_type(receipt, dict[str, str])
    assert_type(await charge.options(retries=0, timeout=10).run(amount), dict[str, str])
    assert_type(await lookup.run("sku-1"), int)
    assert_type(await lookup.options(queue="fast").run("sku-1"), int)
    assert_type(await weigh.run("sku-1"), float)
    assert_type(await child.run(3), list[str])
    assert_type(await child.options(queue="other").run(3), list[str])
    first, second = await asyncio.gather(charge.run(1.0), lookup.run("x"))
    assert_type(first, dict[str, str])
    assert_type(second, int)
    assert_type(await workflows.wait_for_signal("approved", timeout=60), Any)
    assert_type(workflows.get_version("change", 1, 2), int)
    await workflows.sleep(1.5)
    return receipt["transaction_id"]


async def client(plain_id: str) -> None:
    job_id = await send_email.queue("a@b.c", "Hi")
    assert_type(job_id, ExecutionId[dict[str, bool]])
    assert_type(await workflows.get_result(job_id, timeout=60), dict[str, bool])
    assert_type(await workflows.get_result(plain_id), Any)
    order = await parent.options(priority=5).queue("order_1", 9.5)
    assert_type(await workflows.get_result(order), str)
    ids = await resize.queue_many([(("a.png", 10), {})])
    assert_type(ids, list[ExecutionId[list[int]]])
    assert_type(workflows.get_result_sync(resize.queue_sync("b.png", 20)), list[int])
    assert_type(workflows.get_result_sync(plain_id), Any)
    # An id read back from storage, typed again by the caller.
    stored = ExecutionId[dict[str, bool]](plain_id)
    assert_type(await workflows.get_result(stored), dict[str, bool])
    # Still a str: it goes wherever an id goes.
    text: str = order
    await workflows.send_signal(order, "approved", {"approved": True})
    assert_type(await workflows.get_status(text), dict[str, Any])
    assert_type(await workflows.cancel(job_id), str)
