"""Stands in for production: starts an order, lets it reach its week-long sleep, and exports its
history with the CLI into histories/ (what a team keeps in its repository)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import shop

import workflows
from currant.testing import Environment


def export(order: str) -> str:
    command = [str(Path(sys.executable).parent / "workflows"), "history", "export", order]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


async def main(admin_url: str) -> str:
    async with Environment(["orders"], database_url=admin_url, time_skipping=False) as env:
        order = await shop.process_order.queue("o-prod", 5, "tok")
        while not any(s["kind"] == "timer" for s in (await env.history(order))["steps"]):
            await asyncio.sleep(0.02)
        assert (await workflows.get_status(order))["status"] == "waiting"
        return await asyncio.to_thread(export, order)


document = asyncio.run(main(sys.argv[1]))
Path("histories").mkdir(exist_ok=True)
Path("histories/order-waiting.json").write_text(document)
