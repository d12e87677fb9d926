"""Stands for the user's module of workflows the README's replay example imports."""

from workflows import workflow


@workflow(queue="orders")
async def process_order(order_id: str) -> str:
    return order_id
