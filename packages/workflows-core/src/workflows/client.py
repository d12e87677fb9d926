"""``workflows.Client``: the client API bound to one database and schema of its own.

The module-level functions (``f.queue()``, ``workflows.get_result()``...) use the process's
settings (``WORKFLOWS_*``, or :func:`workflows.configure`). A Client holds its own settings and
its own connections, so one process can enqueue into two databases, or two schemas, at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ParamSpec, TypeVar, overload

from workflows.api import CallOptions, Function, Handle, _check_signal_args, _result_of
from workflows.config import Settings, checked_overrides
from workflows.errors import ConfigurationError, WorkflowsError
from workflows.ids import ExecutionId, ResultTypeMismatch
from workflows.store import AsyncStore, ClientStores, SyncStore, backend

P = ParamSpec("P")
R = TypeVar("R")


class Client:
    """The client API against ``database_url`` and ``schema``.

    Settings not given are the process's at construction (the ``WORKFLOWS_*`` variables and
    :func:`workflows.configure`); ``**settings`` takes any other :class:`~workflows.config.Settings`
    field (``max_payload_bytes``, ``default_retries``...). Connections open on first use: an
    async pool per event loop, one sync connection per thread. Close it with ``close()`` /
    ``await aclose()``, or use it as a (async) context manager.
    """

    settings: Settings

    def __init__(
        self, database_url: str | None = None, schema: str | None = None, **settings: Any
    ) -> None:
        given = dict(settings)
        if database_url is not None:
            given["database_url"] = database_url
        if schema is not None:
            given["schema"] = schema
        self.settings = dataclasses.replace(
            Settings.current(), **checked_overrides(given, "Client()")
        )
        self._stores: ClientStores | None = backend("workflows.Client").client_stores(self.settings)

    def __repr__(self) -> str:
        # Never the URL: it may hold a password.
        where = "a database URL" if self.settings.database_url else "the embedded database"
        state = "" if self._stores is not None else ", closed"
        return f"<workflows.Client schema={self.settings.schema!r} on {where}{state}>"

    # ---- its stores (used by Handle.queue() for `.options(client=...)`) ---------------------

    def async_store(self) -> AsyncStore:
        stores = self._stores
        if stores is None:
            raise WorkflowsError(f"{self!r} is closed")
        return stores.async_store()

    def sync_store(self) -> SyncStore:
        stores = self._stores
        if stores is None:
            raise WorkflowsError(f"{self!r} is closed")
        return stores.sync_store()

    # ---- enqueueing --------------------------------------------------------------------------

    def _handle(self, fn: Function[P, R] | Handle[P, R]) -> Handle[P, R]:
        if isinstance(fn, Handle):
            return fn.options(client=self)
        if isinstance(fn, Function):
            if fn.kind == "activity":
                raise WorkflowsError(
                    f"{fn.path} is an @activity: call `await {fn.__name__}.run(...)` inside a "
                    "workflow"
                )
            return Handle(fn, CallOptions(client=self))
        raise ConfigurationError(
            f"Client.queue takes a @job or @workflow function (or its .options(...)), "
            f"got {type(fn).__name__}"
        )

    async def queue(
        self, fn: Function[P, R] | Handle[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> ExecutionId[R]:
        """Enqueue a run of ``fn`` into this client's database; its execution id."""
        return await self._handle(fn).queue(*args, **kwargs)

    def queue_sync(
        self, fn: Function[P, R] | Handle[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> ExecutionId[R]:
        return self._handle(fn).queue_sync(*args, **kwargs)

    async def queue_many(
        self,
        fn: Function[P, R] | Handle[P, R],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        /,
    ) -> list[ExecutionId[R]]:
        """Many runs in one round trip: ``[(args, kwargs), ...]``; their ids."""
        return await self._handle(fn).queue_many(calls)

    # ---- the rest of the client API ----------------------------------------------------------

    async def send_signal(self, workflow_id: str, name: str, payload: Any = None) -> None:
        """As :func:`workflows.send_signal`, in this client's database."""
        text = _check_signal_args(name, payload, self.settings)
        await self.async_store().send_signal(str(workflow_id), name, text)

    def send_signal_sync(self, workflow_id: str, name: str, payload: Any = None) -> None:
        text = _check_signal_args(name, payload, self.settings)
        self.sync_store().send_signal(str(workflow_id), name, text)

    async def get_status(self, execution_id: str) -> dict[str, Any]:
        return await self.async_store().get_status(str(execution_id))

    def get_status_sync(self, execution_id: str) -> dict[str, Any]:
        return self.sync_store().get_status(str(execution_id))

    @overload
    async def get_result(self, execution_id: ExecutionId[R], timeout: float | None = None) -> R: ...
    @overload
    async def get_result(
        self, execution_id: ExecutionId[Any], timeout: float | None = None
    ) -> ResultTypeMismatch: ...
    @overload
    async def get_result(self, execution_id: str, timeout: float | None = None) -> Any: ...
    async def get_result(self, execution_id: str, timeout: float | None = None) -> Any:
        """As :func:`workflows.get_result`, in this client's database."""
        status = await self.async_store().wait_finished(str(execution_id), timeout)
        return _result_of(status)

    @overload
    def get_result_sync(self, execution_id: ExecutionId[R], timeout: float | None = None) -> R: ...
    @overload
    def get_result_sync(
        self, execution_id: ExecutionId[Any], timeout: float | None = None
    ) -> ResultTypeMismatch: ...
    @overload
    def get_result_sync(self, execution_id: str, timeout: float | None = None) -> Any: ...
    def get_result_sync(self, execution_id: str, timeout: float | None = None) -> Any:
        return _result_of(self.sync_store().wait_finished(str(execution_id), timeout))

    async def cancel(self, execution_id: str) -> str:
        """As :func:`workflows.cancel`: ``cancelled``, ``cancelling`` or ``already <status>``."""
        return await self.async_store().cancel(str(execution_id))

    def cancel_sync(self, execution_id: str) -> str:
        return self.sync_store().cancel(str(execution_id))

    # ---- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close its connections (this loop's pool awaited). Idempotent; a closed client
        refuses further calls."""
        stores, self._stores = self._stores, None
        if stores is not None:
            await stores.aclose()

    def close(self) -> None:
        """``aclose()`` for synchronous code; a pool of a running loop closes in that loop."""
        stores, self._stores = self._stores, None
        if stores is not None:
            stores.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_client(value: Any) -> Client:
    """``value`` if it is a Client (the ``client=`` option), ConfigurationError otherwise."""
    if not isinstance(value, Client):
        raise ConfigurationError(f"client must be a workflows.Client, got {type(value).__name__}")
    return value
