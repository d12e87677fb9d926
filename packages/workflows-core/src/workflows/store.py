"""The narrow interface core needs from a store, and how it finds the installed one.

Core never imports a database driver: the PostgreSQL store registers itself when the
``workflows_postgres`` package is importable, which is what the producer install provides.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from workflows.config import Settings
from workflows.errors import ConfigurationError


# Not frozen: a frozen dataclass sets each field through object.__setattr__, a cost paid on
# every enqueue.
@dataclass(slots=True)
class EnqueueRequest:
    kind: str
    name: str
    queue: str
    args: str  # JSON text of {"args": [...], "kwargs": {...}}
    priority: int
    max_retries: int
    timeout: float | None
    run_at: datetime | None = None
    delay: float | None = None
    idempotency_key: str | None = None
    version: int | None = None
    workflow_timeout: float | None = None


class AsyncStore(Protocol):
    async def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str: ...

    async def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        """A run per JSON payload (of arguments), each with ``options`` (its ``args`` unused)."""
        ...

    async def send_signal(self, workflow_id: str, name: str, payload: str) -> None: ...

    async def get_status(self, execution_id: str) -> dict[str, Any]: ...

    async def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]: ...

    async def cancel(self, execution_id: str) -> str: ...


class SyncStore(Protocol):
    def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str: ...

    def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]: ...

    def send_signal(self, workflow_id: str, name: str, payload: str) -> None: ...

    def get_status(self, execution_id: str) -> dict[str, Any]: ...

    def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]: ...

    def cancel(self, execution_id: str) -> str: ...


def postgres_module(name: str, needed_by: str) -> Any:
    """``workflows_postgres.<name>``, imported on first use: core never needs it to import."""
    try:
        return importlib.import_module(f"workflows_postgres.{name}")
    except ImportError as exc:
        if exc.name and not exc.name.startswith("workflows_postgres"):
            raise
        raise ConfigurationError(
            f"{needed_by} needs the PostgreSQL store: pip install workflows-postgres (or currant)"
        ) from None


def _client_module() -> Any:
    return postgres_module("client", "enqueueing and the client API")


def async_store(settings: Settings | None = None) -> AsyncStore:
    """The process's async store for the running event loop (configured from ``WORKFLOWS_*``;
    ``settings``: the caller's ``Settings.current()``, not read again)."""
    store: AsyncStore = _client_module().async_store(settings)
    return store


def sync_store(settings: Settings | None = None) -> SyncStore:
    store: SyncStore = _client_module().sync_store(settings)
    return store
