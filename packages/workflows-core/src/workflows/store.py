"""The narrow interface core needs from a store, and how it finds the installed one.

Core never imports a database driver nor names a store package: the installed store
registers itself under the ``workflows.stores`` entry point group (workflows-postgres does;
the producer install is that package).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows.history import StepRecord
from workflows.records import (
    ActivationResult,
    Advance,
    Advanced,
    Claimed,
    Outcome,
    Plan,
    Recovery,
    Registration,
)


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
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None
    # queue_many() of a function whose keys depend on each call's arguments: (concurrency key,
    # rate key) of each run, in order.
    keys_each: list[tuple[str | None, str | None]] | None = None
    # Seconds the idempotency key holds from the insert (None: as long as the row exists).
    idempotency_ttl: float | None = None
    # The W3C carrier (JSON text) of the enqueue's span, kept on the row (workflows.tracing).
    trace_context: str | None = None
    # The store's own form of these options, made on the first enqueue_one() of this request
    # and reused by the next ones (a function's plain calls share one request).
    prepared: Any = field(default=None, compare=False, repr=False)


class AsyncStore(Protocol):
    async def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str: ...

    def enqueue_one(self, options: EnqueueRequest, payload: str) -> Awaitable[str]:
        """``enqueue(options)`` with ``payload`` as its arguments, outside any caller's
        transaction (``options.args`` unused): a plain ``f.queue(x)``, which reuses one
        ``options`` for every call of ``f``, so nothing in it may change once given here."""
        ...

    async def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]:
        """A run per JSON payload (of arguments), each with ``options`` (its ``args`` unused)."""
        ...

    async def send_signal(self, workflow_id: str, name: str, payload: str) -> None: ...

    async def get_status(self, execution_id: str) -> dict[str, Any]: ...

    async def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]: ...

    async def cancel(self, execution_id: str) -> str: ...

    async def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one named statement of the store's (settings of queues, limits, schedules)
        in a transaction of its own; its rows as dicts."""
        ...


class SyncStore(Protocol):
    def enqueue(self, request: EnqueueRequest, conn: Any = None) -> str: ...

    def enqueue_one(self, options: EnqueueRequest, payload: str) -> str:
        """As ``AsyncStore.enqueue_one``."""
        ...

    def enqueue_many(self, options: EnqueueRequest, payloads: Sequence[str]) -> list[str]: ...

    def send_signal(self, workflow_id: str, name: str, payload: str) -> None: ...

    def get_status(self, execution_id: str) -> dict[str, Any]: ...

    def wait_finished(self, execution_id: str, timeout: float | None) -> dict[str, Any]: ...

    def cancel(self, execution_id: str) -> str: ...

    def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...


class ClientStores(Protocol):
    """The stores of one ``workflows.Client``, apart from the process's default ones: an async
    store per event loop (a pool belongs to one loop) and one sync store, opened on first use."""

    def async_store(self) -> AsyncStore: ...

    def sync_store(self) -> SyncStore: ...

    async def aclose(self) -> None:
        """Close every store (from the loop whose pool it awaits; the others' are ended)."""
        ...

    def close(self) -> None:
        """Close every store from synchronous code."""
        ...


class Backend(Protocol):
    """What an installed store package provides, found through the ``workflows.stores`` entry
    point group (as OpenTelemetry finds its providers): core names no store package."""

    def async_store(self, settings: Settings | None = None) -> AsyncStore: ...

    def sync_store(self, settings: Settings | None = None) -> SyncStore: ...

    async def worker_store(
        self, settings: Settings, *, dsn: str | None = None, max_size: int = 10
    ) -> WorkerStore: ...

    def migrate(self, settings: Settings) -> list[int]: ...

    def client_stores(self, settings: Settings) -> ClientStores: ...


class Listener(Protocol):
    """A worker's listening session: notifications in, and the hold that makes offers good.

    Notifications are hints: a handoff is read back from the table (``take_handoff``), a
    cancel checked with ``WorkerStore.cancel_requested``.
    """

    @property
    def alive(self) -> bool:
        """Connected and listening (read from any thread)."""
        ...

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff; ``on_connected`` after each
        (re)connect, when the worker should look for work announced meanwhile."""
        ...

    async def take_handoff(self, execution_id: str) -> Claimed | None:
        """The job a start notification named, if the table says it was handed to this worker."""
        ...

    async def offer(self, queues: Sequence[str], seconds: float) -> bool:
        """Offer this idle worker for the next job of ``queues`` for ``seconds``; False when
        the session that makes an offer good is not up."""
        ...

    async def withdraw(self) -> None: ...

    async def close(self) -> None: ...


class Heart(Protocol):
    """Beats a worker's heartbeat from a thread, on a connection of its own."""

    def beat(self) -> bool:
        """Beat; False when the worker had been declared dead (it registered again)."""
        ...

    def close(self) -> None: ...


class WorkerStore(Protocol):
    """Everything a worker asks of its store; dataclasses in and out, never rows or SQL."""

    settings: Settings

    def is_transient(self, exc: BaseException) -> bool:
        """An error of the database or the connection (retry later), not of the code."""
        ...

    def is_poison(self, exc: BaseException) -> bool:
        """A write refused for a value in it (one item's doing, not the database's state)."""
        ...

    async def close(self) -> None: ...

    # -- membership
    async def register_worker(self, worker_id: str, registration: Registration) -> None: ...

    async def deregister_worker(self, worker_id: str) -> None: ...

    def heart(self, worker_id: str, registration: Registration) -> Heart: ...

    def listener(
        self,
        worker_id: str,
        *,
        on_work: Callable[[str], None],
        on_cancel: Callable[[str], None],
        on_start: Callable[[str], None],
        on_connected: Callable[[], None],
    ) -> Listener: ...

    # -- the claim-and-record round
    async def pump(
        self,
        worker_id: str,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        known_versions: dict[str, int] | None = None,
        resume_sticky: bool = False,
    ) -> tuple[set[str], list[Claimed]]: ...

    async def any_runnable(self, queues: Sequence[str]) -> bool: ...

    async def release(self, claimed: Claimed, worker_id: str, delay: float = 0.0) -> bool: ...

    async def release_id(
        self, execution_id: str, lease: int, worker_id: str, delay: float = 0.0
    ) -> bool: ...

    async def release_many(self, claims: Sequence[Claimed], worker_id: str) -> int: ...

    async def cancel_requested(self, claimed: Claimed, worker_id: str) -> bool: ...

    async def running_here(self, worker_id: str) -> set[tuple[str, int]]: ...

    # -- workflows
    async def load_history(self, workflow_id: str) -> list[StepRecord]: ...

    async def apply_activation(
        self,
        claimed: Claimed,
        worker_id: str,
        *,
        number: int,
        delivered: Sequence[int],
        plan: Plan,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> ActivationResult: ...

    async def advance(self, worker_id: str, items: Sequence[Advance]) -> list[Advanced]: ...

    # -- maintenance
    async def lead(self, worker_id: str, ttl: float) -> bool:
        """Become or stay the fleet's maintenance leader for ``ttl`` seconds; False when
        another live worker leads."""
        ...

    async def resign(self, worker_id: str) -> None: ...

    async def fire_due_steps(self) -> int: ...

    async def expire_workflows(self) -> list[str]:
        """Fail the workflows past their deadline; the queue of each failed."""
        ...

    async def recover(self, worker_id: str, timeout: float) -> Recovery: ...

    async def workers_alive(self, timeout: float) -> int: ...

    async def queue_depths(
        self, queues: Sequence[str], cap: int = 100_000
    ) -> dict[tuple[str, str], int]: ...

    async def control(self, statement: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """As :meth:`AsyncStore.control` (schedules fired, flow settings read)."""
        ...


_GROUP = "workflows.stores"
_backend: Backend | None = None


def backend(needed_by: str = "the client API") -> Backend:
    """The installed store (entry point group ``workflows.stores``; ``WORKFLOWS_STORE`` picks
    one by name when several are installed)."""
    global _backend
    if _backend is not None:
        return _backend
    import os

    found = _entry_points()
    wanted = os.environ.get("WORKFLOWS_STORE")
    if wanted is not None and wanted not in found:
        raise ConfigurationError(
            f"WORKFLOWS_STORE={wanted!r}: no such store installed "
            f"(installed: {', '.join(sorted(found)) or 'none'})"
        )
    if not found:
        raise ConfigurationError(
            f"{needed_by} needs a store: pip install workflows-postgres (or currant)"
        )
    if wanted is None and len(found) > 1:
        raise ConfigurationError(
            f"several stores are installed ({', '.join(sorted(found))}): "
            "choose one with WORKFLOWS_STORE"
        )
    loaded: Backend = found[wanted or next(iter(found))].load()
    _backend = loaded
    return loaded


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=_GROUP)}


def async_store(settings: Settings | None = None) -> AsyncStore:
    """The process's async store for the running event loop (configured from ``WORKFLOWS_*``;
    ``settings``: the caller's ``Settings.current()``, not read again)."""
    # The loaded backend without a call more: this is on every enqueue.
    return (_backend or backend("enqueueing and the client API")).async_store(settings)


def sync_store(settings: Settings | None = None) -> SyncStore:
    return (_backend or backend("enqueueing and the client API")).sync_store(settings)
