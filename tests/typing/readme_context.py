"""What the README's API snippets use without defining it (see tests/unit/test_typing.py).

The test writes the quick start's ``app.py`` beside this file, and each snippet into the body
of a function of a module that imports everything here, as a reader's own code would have it.
"""

from datetime import UTC, datetime

from app import charge_card, process_order, send_email, send_sms

import workflows
from workflows import activity, get_version, job, wait_for_signal, workflow

__all__ = [
    "UTC",
    "activity",
    "addresses",
    "body",
    "charge_card",
    "cleanup",
    "datetime",
    "execution_id",
    "get_version",
    "job",
    "order_id",
    "process_order",
    "send_email",
    "send_sms",
    "subject",
    "to",
    "wait_for_signal",
    "workflow",
    "workflows",
]

to, subject, body = "a@b.c", "Hi", "Welcome!"
addresses = ["a@b.c", "d@e.f"]
order_id = "order_123"
execution_id = "0190a3c4-1b2c-7d3e-8f40-5a6b7c8d9e0f"


@job(queue="maintenance")
async def cleanup(folder: str) -> None: ...
