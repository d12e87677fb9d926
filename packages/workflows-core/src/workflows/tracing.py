"""OpenTelemetry spans of enqueues, execution attempts and signals (optional).

Traced only when ``opentelemetry-api`` is importable (``pip install 'workflows-core[otel]'``)
and ``WORKFLOWS_TRACING`` is not ``off``; the spans go wherever the application's tracer
provider sends them (none set: OpenTelemetry's no-op). Nothing here imports opentelemetry
until a call site first asks for the tracer, and the answer is kept: when tracing is unused,
an enqueue pays one comparison.

The trace context travels on the execution row (its ``trace_context`` column, the W3C carrier
as JSON), never in the arguments: an enqueue's span is the parent of every attempt of what it
enqueued; a workflow activation's span is the parent of the activities and child workflows it
starts. Names of the attributes: see docs/tracing.md.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from workflows.config import Settings
from workflows.errors import ConfigurationError

if TYPE_CHECKING:
    from workflows.records import Claimed, Plan
    from workflows.store import EnqueueRequest

__all__ = [
    "ATTEMPT",
    "EXECUTION_ID",
    "FUNCTION",
    "KIND",
    "PARENT_ID",
    "QUEUE",
    "SIGNAL",
    "Tracer",
    "attempt",
    "failed",
    "stamp",
    "tracer",
]

# Messaging semantic conventions (an execution is a message on its queue) ...
SYSTEM = "messaging.system"
OPERATION = "messaging.operation.type"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
# ... and the library's own.
QUEUE = "workflows.queue"
FUNCTION = "workflows.function"
KIND = "workflows.kind"
ATTEMPT = "workflows.attempt"
EXECUTION_ID = "workflows.execution_id"
PARENT_ID = "workflows.parent_id"
SIGNAL = "workflows.signal"

_SYSTEM_NAME = "workflows"
_UNKNOWN = object()
_INSTRUMENTATION = "workflows"


class Tracer:
    """The process's spans, once opentelemetry-api is imported."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace

        from workflows import __version__

        self._trace = trace
        self._context = context
        self._propagate = propagate
        # A ProxyTracer until the application sets its provider, then that provider's: kept.
        self._tracer = trace.get_tracer(_INSTRUMENTATION, __version__)
        self._no_provider = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._provided = False
        # Loads a provider named by OTEL_PYTHON_TRACER_PROVIDER, if one is, into the global.
        trace.get_tracer_provider()

    def live(self) -> bool:
        """Whether the application has set a tracer provider. Until then (the API alone
        installed, or the SDK not configured yet) every span would be the API's no-op, and
        making them would cost an enqueue more than the store's client does."""
        if self._provided:
            return True
        # The module's global, read where it exists: get_tracer_provider() looks a variable up
        # in os.environ on every call while no provider is set (1.8 us, the whole cost of an
        # unused tracing on the enqueue path). Set once per process (OpenTelemetry refuses a
        # second), so once seen it is never looked at again.
        provider = getattr(self._trace, "_TRACER_PROVIDER", _UNKNOWN)
        if provider is _UNKNOWN:
            provider = self._trace.get_tracer_provider()
        self._provided = provider is not None and not isinstance(provider, self._no_provider)
        return self._provided

    # ---- producers -------------------------------------------------------------------------

    def carrier(self) -> str | None:
        """The current context as the JSON text of its W3C carrier; None when there is no
        trace to continue (no span, or the API's no-op one)."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        return json.dumps(carrier, separators=(",", ":")) if carrier else None

    def _producer(self, request: EnqueueRequest, operation: str) -> Any:
        return self._tracer.start_as_current_span(
            f"{operation} {request.name}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={
                SYSTEM: _SYSTEM_NAME,
                OPERATION: "send",
                DESTINATION: request.queue,
                QUEUE: request.queue,
                FUNCTION: request.name,
                KIND: request.kind,
            },
        )

    async def queue(
        self,
        request: EnqueueRequest,
        enqueue: Callable[[EnqueueRequest, Any], Awaitable[str]],
        conn: Any,
    ) -> str:
        """``enqueue(request, conn)`` in a producer span whose context the row keeps."""
        with self._producer(request, "enqueue") as span:
            request.trace_context = self.carrier()
            execution_id = await enqueue(request, conn)
            span.set_attribute(EXECUTION_ID, execution_id)
            span.set_attribute(MESSAGE_ID, execution_id)
            return execution_id

    def queue_sync(
        self, request: EnqueueRequest, enqueue: Callable[[EnqueueRequest, Any], str], conn: Any
    ) -> str:
        with self._producer(request, "enqueue") as span:
            request.trace_context = self.carrier()
            execution_id = enqueue(request, conn)
            span.set_attribute(EXECUTION_ID, execution_id)
            span.set_attribute(MESSAGE_ID, execution_id)
            return execution_id

    async def queue_many(
        self,
        request: EnqueueRequest,
        payloads: Sequence[str],
        enqueue: Callable[[EnqueueRequest, Sequence[str]], Awaitable[list[str]]],
    ) -> list[str]:
        """One span for the batch: every run's row keeps its context."""
        with self._producer(request, "enqueue") as span:
            span.set_attribute(BATCH_COUNT, len(payloads))
            request.trace_context = self.carrier()
            return await enqueue(request, payloads)

    def _signal(self, workflow_id: str, name: str) -> Any:
        return self._tracer.start_as_current_span(
            f"signal {name}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={
                SYSTEM: _SYSTEM_NAME,
                OPERATION: "send",
                EXECUTION_ID: workflow_id,
                KIND: "workflow",
                SIGNAL: name,
            },
        )

    async def signal(
        self, workflow_id: str, name: str, send: Callable[[], Awaitable[None]]
    ) -> None:
        with self._signal(workflow_id, name):
            await send()

    def signal_sync(self, workflow_id: str, name: str, send: Callable[[], None]) -> None:
        with self._signal(workflow_id, name):
            send()

    # ---- consumers -------------------------------------------------------------------------

    @contextmanager
    def attempt(self, c: Claimed) -> Iterator[Any]:
        """The current span for one attempt of ``c``: a child of the context on its row, or
        a new trace's root when the row has none (never of whatever span started the task)."""
        parent = self._context.Context()
        # A context that is not a carrier (the column is any role's to write: text nested too
        # deeply for json.loads, a list, numbers): a new trace, never a failed attempt.
        with suppress(Exception):
            if c.trace_context:
                parent = self._propagate.extract(json.loads(c.trace_context))
        attributes: dict[str, Any] = {
            SYSTEM: _SYSTEM_NAME,
            OPERATION: "process",
            DESTINATION: c.queue,
            MESSAGE_ID: c.id,
            QUEUE: c.queue,
            FUNCTION: c.name,
            KIND: c.kind,
            ATTEMPT: c.attempts,
            EXECUTION_ID: c.id,
        }
        if c.parent_id is not None:
            attributes[PARENT_ID] = c.parent_id
        with self._tracer.start_as_current_span(
            f"{c.kind} {c.name}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    def failed(self, error: dict[str, Any]) -> None:
        """Mark the current span failed, the stored error recorded as its exception event."""
        span = self._trace.get_current_span()
        if not span.is_recording():
            return
        kind = str(error.get("type") or "Error")
        message = str(error.get("message") or "")
        event = {"exception.type": kind, "exception.message": message}
        if error.get("traceback"):
            event["exception.stacktrace"] = str(error["traceback"])
        span.add_event("exception", event)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"{kind}: {message}"))


# (the WORKFLOWS_TRACING it was resolved for, the tracer or None)
_resolved: tuple[str, Tracer | None] = ("", None)
_NULL: AbstractContextManager[Any] = nullcontext()


def tracer(settings: Settings) -> Tracer | None:
    """The tracer, or None when nothing would be traced: tracing off, opentelemetry-api not
    installed, or no tracer provider set by the application (yet).

    Raises ``ConfigurationError`` for ``WORKFLOWS_TRACING=on`` without opentelemetry-api.
    """
    mode, found = _resolved
    if mode != settings.tracing:
        found = _resolve(settings.tracing)
    return None if found is None or not found.live() else found


def _resolve(mode: str) -> Tracer | None:
    global _resolved
    found: Tracer | None = None
    if mode != "off":
        try:
            found = Tracer()
        except ImportError:
            if mode == "on":
                raise ConfigurationError(
                    "WORKFLOWS_TRACING=on needs opentelemetry-api: "
                    "pip install 'workflows-core[otel]' (or set WORKFLOWS_TRACING=auto or off)"
                ) from None
    _resolved = (mode, found)
    return found


def attempt(settings: Settings, claimed: Claimed) -> AbstractContextManager[Any]:
    """The span of one attempt of ``claimed`` (job, activity or workflow activation)."""
    found = tracer(settings)
    return _NULL if found is None else found.attempt(claimed)


def failed(settings: Settings, error: dict[str, Any]) -> None:
    """The current attempt failed with ``error`` (a stored error: type, message, traceback)."""
    found = tracer(settings)
    if found is not None:
        found.failed(error)


def stamp(settings: Settings, plan: Plan) -> Plan:
    """``plan`` with the current span's context for the children it starts."""
    if not plan.children:
        return plan
    found = tracer(settings)
    if found is None:
        return plan
    carrier = found.carrier()
    return plan if carrier is None else replace(plan, trace_context=carrier)
