"""The user's tests: only the public kit (the `workflows` plugin's fixtures, workflows.testing)."""

from __future__ import annotations

import time
from pathlib import Path

import shop

from currant.testing import Environment
from workflows.testing import replay


async def test_send_email(workflows_env: Environment) -> None:
    assert await workflows_env.run(shop.send_email, "a@b.c", "Hi") == "sent Hi to a@b.c"


async def test_an_order_nobody_approves_takes_no_time(workflows_env: Environment) -> None:
    began = time.monotonic()
    result = await workflows_env.run(shop.process_order, "o-1", 10, "tok")
    assert result == {"order_id": "o-1", "transaction_id": "tx-tok-10", "approved": False}
    assert time.monotonic() - began < 2.0


def test_recorded_orders_still_replay() -> None:
    histories = sorted((Path(__file__).parent / "histories").glob("*.json"))
    assert histories
    for path in histories:
        replay(path, shop.process_order)
