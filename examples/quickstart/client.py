"""Enqueue the quick start's job and workflow, approve the order, print both results."""

import asyncio

from app import process_order, send_email

import workflows


async def main() -> None:
    job_id = await send_email.queue(to="a@b.c", subject="Hi", body="Welcome!")
    order_id = await process_order.queue("order_123", 99.5, "a@b.c", "tok_visa")
    await workflows.send_signal(order_id, "approved", {"approved": True})
    print("job", job_id, "->", await workflows.get_result(job_id, timeout=60))
    print("workflow", order_id, "->", await workflows.get_result(order_id, timeout=60))


if __name__ == "__main__":
    asyncio.run(main())
