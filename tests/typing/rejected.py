"""Calls mypy --strict must refuse (checked by tests/unit/test_typing.py).

Each line that must be reported ends with ``# E: <error code>``: the test checks that mypy
reports exactly those lines, each with exactly those codes, and nothing else.
"""

# ruff: noqa: F841

import asyncio

import workflows
from workflows import activity, job, workflow


@job(queue="emails")
async def send_email(to: str, subject: str) -> dict[str, bool]:
    return {"sent": True}


@activity
async def charge(amount: float, card_token: str) -> dict[str, str]:
    return {"transaction_id": "txn_1"}


@activity
def lookup(sku: str) -> int:
    return len(sku)


@workflow
async def child(n: int) -> list[str]:
    return [str(n)]


async def wrong_client() -> None:
    await send_email.queue("a@b.c", 42)  # E: arg-type
    send_email.queue_sync("a@b.c")  # E: call-arg
    await send_email.options(queue="high").queue(to="a@b.c", subjet="Hi")  # E: call-arg
    await send_email.options(retries="3").queue("a@b.c", "Hi")  # E: arg-type
    await child.queue("three")  # E: arg-type
    job_id = await send_email.queue("a@b.c", "Hi")
    sent: str = await workflows.get_result(job_id)  # E: assignment
    workflows.get_result_sync(job_id)["sent"].upper()  # E: attr-defined
    wrong: list[int] = workflows.get_result_sync(job_id)  # E: assignment
    await workflows.get_result(job_id, timeout="1m")  # E: call-overload
    await workflows.send_signal(job_id, 7)  # E: arg-type
    # A job is no workflow step.
    await send_email.run("a@b.c", "Hi")  # E: attr-defined


@workflow
async def wrong_workflow(order_id: str) -> int:
    receipt = await charge.run("99.5", "tok")  # E: arg-type
    await charge.options(timeout=10).run(99.5)  # E: call-arg
    total: float = receipt["transaction_id"]  # E: assignment
    pending = charge.run(1.0, "tok")
    pending["transaction_id"]  # E: index
    count: str = await lookup.run("sku")  # E: assignment
    names = await child.run(3)
    names + 1  # E: operator
    _, found = await asyncio.gather(charge.run(1.0, "tok"), lookup.run("sku"))
    found.upper()  # E: attr-defined
    await workflows.sleep("1h")  # E: arg-type
    await workflows.wait_for_signal("approved", timeout="1d")  # E: arg-type
    workflows.get_version("change", "1", 2)  # E: arg-type
    return receipt  # E: return-value


@workflow  # E: arg-type
def not_async(n: int) -> int:
    return n


@workflow(queue="orders")  # E: arg-type
def not_async_either(n: int) -> int:
    return n
