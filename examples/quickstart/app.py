"""The quick start: a job, an activity and a workflow (see README.md)."""

from workflows import activity, get_version, job, wait_for_signal, workflow


@job(queue="emails", retries=3)
async def send_email(to: str, subject: str, body: str) -> dict[str, bool]:
    print(f"sending {subject!r} to {to}")
    return {"sent": True}


@activity(retries=3, timeout=60)
async def charge_card(amount: float, card_token: str) -> dict[str, str]:
    print(f"charging {amount} to {card_token}")
    return {"transaction_id": "txn_123"}


@activity(retries=3, timeout=60)
async def send_sms(order_id: str) -> None:
    print(f"texting about {order_id}")


@workflow(queue="orders", version=1, timeout=3600)
async def process_order(
    order_id: str, amount: float, email: str, card_token: str
) -> dict[str, str]:
    charge = await charge_card.run(amount, card_token)
    if get_version("send_sms", 1, 2) >= 2:
        await send_sms.run(order_id)
    approval = await wait_for_signal("approved", timeout=86400)
    if not approval.get("approved"):
        return {"order_id": order_id, "status": "rejected"}
    return {"order_id": order_id, "transaction_id": charge["transaction_id"]}
