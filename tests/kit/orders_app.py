"""The README's order workflow and a few jobs, as a user's application would have them."""

from __future__ import annotations

from typing import Any

import workflows
from workflows import activity, get_version, job, sleep, wait_for_signal, workflow

attempts: dict[str, int] = {}


@job(queue="emails", retries=3)
async def send_email(to: str, subject: str, body: str) -> str:
    return f"sent {subject!r} to {to}"


@job(queue="emails", retries=2)
def flaky_email(key: str, failures: int) -> int:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= failures:
        raise ConnectionError(f"smtp down ({attempts[key]})")
    return attempts[key]


@job(queue="emails")
async def welcome(user: str) -> str:
    """Code under test that enqueues: one email per call."""
    await send_email.queue(to=f"{user}@example.com", subject="Welcome", body="...")
    return user


@activity(retries=3, timeout=60)
async def charge_card(amount: int, card_token: str) -> dict[str, Any]:
    return {"transaction_id": f"tx-{card_token}-{amount}"}


@workflow(queue="orders", version=1, timeout=30 * 86400)
async def process_order(order_id: str, amount: int, email: str, card_token: str) -> dict[str, Any]:
    charge = await charge_card.run(amount, card_token)
    if get_version("send_sms", 1, 2) >= 2:
        await sleep(7 * 86400)  # a week's grace before asking
    try:
        approval = await wait_for_signal("approved", timeout=86400)
    except workflows.SignalTimeoutError:
        approval = {"approved": False, "why": "no answer in a day"}
    return {"order_id": order_id, "transaction_id": charge["transaction_id"], "approval": approval}


@workflow(queue="orders", timeout=3600)
async def waits_forever() -> None:
    await wait_for_signal("never")


@workflow(queue="orders", timeout=30 * 86400)
async def weekly_report() -> dict[str, str]:
    start = workflows.now()
    await sleep(7 * 86400)
    return {
        "start": start.isoformat(),
        "end": workflows.now().isoformat(),
        "id": str(workflows.uuid4()),
    }
