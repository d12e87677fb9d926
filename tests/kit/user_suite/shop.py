"""A user's application, as the README's quick start has it."""

from __future__ import annotations

from workflows import SignalTimeoutError, activity, job, sleep, wait_for_signal, workflow


@job(queue="emails", retries=3)
async def send_email(to: str, subject: str) -> str:
    return f"sent {subject} to {to}"


@activity(retries=3, timeout=60)
async def charge_card(amount: int, card_token: str) -> dict[str, str]:
    return {"transaction_id": f"tx-{card_token}-{amount}"}


@workflow(queue="orders", version=1, timeout=30 * 86400)
async def process_order(order_id: str, amount: int, card_token: str) -> dict[str, object]:
    charge = await charge_card.run(amount, card_token)
    await sleep(7 * 86400)  # a week's grace
    try:
        approval = await wait_for_signal("approved", timeout=86400)
    except SignalTimeoutError:
        approval = None
    return {
        "order_id": order_id,
        "transaction_id": charge["transaction_id"],
        "approved": approval is not None,
    }
