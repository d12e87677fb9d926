"""Enqueueing inside a Django ``transaction.atomic()`` block (the psycopg 3 backend).

The job is written through Django's own connection, in its transaction: it exists (and a
worker hears of it) only if the block commits. A block that raises leaves neither the order
nor the job behind.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import django
from django.conf import settings
from django.db import connection, transaction

from workflows import job


@job(queue="emails")
def send_confirmation(order_id: int) -> str:
    return f"confirmation sent for order {order_id}"


def place_order(item: str, *, fail_after_enqueue: bool = False) -> int:
    """Insert an order and enqueue its confirmation in one transaction; its id."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO shop_order (item) VALUES (%s) RETURNING id", [item])
            order_id: int = cursor.fetchone()[0]
        # connection.connection: the psycopg.Connection under Django's, inside the atomic block.
        send_confirmation.options(conn=connection.connection).queue_sync(order_id)
        if fail_after_enqueue:
            raise RuntimeError("payment declined")
    return order_id


# ---- setup: a real project has this in settings.py and a model with a migration ------------


def database_settings(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a ``postgresql://user:password@host:port/name`` URL."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3 when it is installed
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def setup(database_url: str) -> None:
    """Configure Django in this process (once) and create the app's table in ``public``."""
    if not settings.configured:
        settings.configure(
            DATABASES={"default": database_settings(database_url)},
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS shop_order (id bigserial PRIMARY KEY, item text NOT NULL)"
        )


if __name__ == "__main__":
    import os

    setup(os.environ["WORKFLOWS_DATABASE_URL"])
    print("order", place_order("a book"), "placed; its confirmation is queued")
