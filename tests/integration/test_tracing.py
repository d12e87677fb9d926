"""OpenTelemetry tracing: one trace from the producer's span through every attempt of a
workflow, its activities and its child, read back from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import workflows
from tests.integration import tracing_app as app
from tests.integration.conftest import StartWorker, until
from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows_postgres.store import PostgresStore

_EXPORTER = InMemorySpanExporter()


class _Open(SpanProcessor):
    """Counts the spans started and not yet ended: the worker's last span ends just after
    the write that get_result sees, so a test waits for none to be open."""

    def __init__(self) -> None:
        self.open = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.open -= 1


_OPEN = _Open()


def _install_provider() -> None:
    # The global provider can be set once per process: the first test to need it sets it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_OPEN)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)


async def settled(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans exported once every span started has ended."""
    await until(lambda: _OPEN.open == 0, "every span to end")
    return ours(exporter)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _install_provider()
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    _EXPORTER.clear()
    app.attempts.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("messaging.system") == "workflows"
    ]


def named(spans: list[ReadableSpan], function: Any, kind: str | None = None) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.attributes is not None
        and s.attributes.get("workflows.function") == function.path
        and (kind is None or s.kind.name == kind)
    ]


def of(spans: list[ReadableSpan], execution_id: str) -> list[ReadableSpan]:
    """The consumer spans of one execution (its attempts or activations)."""
    return [
        s
        for s in spans
        if s.kind == SpanKind.CONSUMER
        and s.attributes is not None
        and s.attributes.get("workflows.execution_id") == execution_id
    ]


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def trace_context(store: PostgresStore, execution_id: str) -> dict[str, str] | None:
    text = await store.pool.fetchval(
        f"SELECT trace_context::text FROM {store.settings.schema}.executions WHERE id = $1",
        execution_id,
    )
    return None if text is None else json.loads(text)


async def test_one_trace_from_the_producer_span_through_a_workflow_its_activities_and_child(
    store: PostgresStore, start_worker: StartWorker, spans: InMemorySpanExporter
) -> None:
    await start_worker("traced")
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        wf = await app.traced_order.queue(4)
    assert await workflows.get_result(wf, timeout=30) == {
        "found": 40,
        "note": "order-4 ok",
        "child": 51,
    }
    steps = await store.steps_of(wf)
    lookup_id, flaky_id, child_id = (str(s["execution_id"]) for s in steps)
    child_lookup_id = str((await store.steps_of(child_id))[0]["execution_id"])

    found = await settled(spans)
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in found} == {trace_id}

    # The producer: a child of the caller's span, named after the function.
    (enqueue,) = named(found, app.traced_order, "PRODUCER")
    assert enqueue.name == f"enqueue {app.traced_order.path}"
    assert parent_of(enqueue) == request.get_span_context().span_id
    assert enqueue.attributes == {
        "messaging.system": "workflows",
        "messaging.operation.type": "send",
        "messaging.destination.name": "traced",
        "messaging.message.id": wf,
        "workflows.queue": "traced",
        "workflows.function": app.traced_order.path,
        "workflows.kind": "workflow",
        "workflows.execution_id": wf,
    }
    # The row keeps the enqueue span's context, not the arguments.
    carrier = await trace_context(store, wf)
    assert carrier is not None
    assert carrier["traceparent"].split("-")[2] == format(enqueue.context.span_id, "016x")
    assert "traceparent" not in (await store.get_status(wf))["args"]

    # Each activation of the workflow continues the context on its row: the enqueue span's.
    activations = named(found, app.traced_order, "CONSUMER")
    assert activations
    for span in activations:
        assert parent_of(span) == enqueue.context.span_id
        assert span.kind == SpanKind.CONSUMER
        assert span.attributes is not None
        assert span.attributes["workflows.execution_id"] == wf
        assert span.attributes["workflows.kind"] == "workflow"
        assert span.attributes["workflows.attempt"] == 1
    activation_ids = {s.context.span_id for s in activations}

    # Its activities and its child: children of the activation that started them.
    (lookup,) = of(found, lookup_id)
    assert parent_of(lookup) in activation_ids
    assert lookup.name == f"activity {app.lookup.path}"
    assert lookup.kind == SpanKind.CONSUMER
    assert lookup.attributes == {
        "messaging.system": "workflows",
        "messaging.operation.type": "process",
        "messaging.destination.name": "traced",
        "messaging.message.id": lookup_id,
        "workflows.queue": "traced",
        "workflows.function": app.lookup.path,
        "workflows.kind": "activity",
        "workflows.attempt": 1,
        "workflows.execution_id": lookup_id,
        "workflows.parent_id": wf,
    }
    assert lookup.status.status_code == StatusCode.UNSET

    # A failed attempt: an error span with the exception; its retry: a second span, attempt 2,
    # a child of the same context (the one on the row).
    first, second = sorted(of(found, flaky_id), key=lambda s: s.start_time or 0)
    assert [first.attributes["workflows.attempt"], second.attributes["workflows.attempt"]] == [
        1,
        2,
    ]  # type: ignore[index]
    assert parent_of(first) == parent_of(second)
    assert parent_of(first) in activation_ids
    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == "ConnectionError: order-4: transient"
    (event,) = [e for e in first.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ConnectionError"
    assert event.attributes["exception.message"] == "order-4: transient"
    assert "raise ConnectionError" in str(event.attributes["exception.stacktrace"])
    assert second.status.status_code == StatusCode.UNSET
    assert not [e for e in second.events if e.name == "exception"]

    # The child workflow: its activations are children of its parent's activation, and its
    # activity a child of one of them.
    child_activations = of(found, child_id)
    assert child_activations
    for span in child_activations:
        assert parent_of(span) in activation_ids
        assert span.attributes is not None
        assert span.attributes["workflows.function"] == app.child_flow.path
        assert span.attributes["workflows.parent_id"] == wf
    (grandchild,) = of(found, child_lookup_id)
    assert parent_of(grandchild) in {s.context.span_id for s in child_activations}

    # Every span hangs from another of the trace: nothing detached.
    known = {s.context.span_id for s in found} | {request.get_span_context().span_id}
    assert all(parent_of(s) in known for s in found)


async def test_a_job_queued_sync_and_in_a_batch_and_a_signal_get_their_spans(
    store: PostgresStore, start_worker: StartWorker, spans: InMemorySpanExporter
) -> None:
    await start_worker("traced")
    # queue_sync blocks: from a thread, as a synchronous caller would.
    job_id = await asyncio.to_thread(app.flaky_job.queue_sync, "sync")
    batch = await app.flaky_job.queue_many([(("a",), {}), (("b",), {})])
    for execution_id in (job_id, *batch):
        await workflows.get_result(execution_id, timeout=30)
    found = await settled(spans)

    (single,) = [
        s
        for s in named(found, app.flaky_job, "PRODUCER")
        if s.attributes and s.attributes.get("workflows.execution_id") == job_id
    ]
    assert single.parent is None  # no span around the call: the enqueue starts the trace
    attempts = sorted(of(found, job_id), key=lambda s: s.start_time or 0)
    assert [s.attributes["workflows.attempt"] for s in attempts] == [1, 2]  # type: ignore[index]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert attempts[0].status.description == "ValueError: sync: first attempt fails"
    for span in attempts:
        assert span.context.trace_id == single.context.trace_id
        assert parent_of(span) == single.context.span_id
        assert span.attributes is not None
        assert span.attributes["workflows.kind"] == "job"

    # One span for the batch; each run's attempts are its children.
    (many,) = [
        s
        for s in named(found, app.flaky_job, "PRODUCER")
        if s.attributes and s.attributes.get("messaging.batch.message_count") == 2
    ]
    for execution_id in batch:
        runs = of(found, execution_id)
        assert len(runs) == 2
        assert {parent_of(s) for s in runs} == {many.context.span_id}
        assert (await trace_context(store, execution_id)) is not None

    # A signal: a producer span of its own, in the caller's trace.
    wf = await app.traced_order.queue(1)
    spans.clear()
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        await workflows.send_signal(wf, "nudge", {"n": 1})
    (signal,) = [s for s in ours(spans) if s.name == "signal nudge"]
    assert signal.kind == SpanKind.PRODUCER
    assert parent_of(signal) == request.get_span_context().span_id
    assert signal.attributes is not None
    assert signal.attributes["workflows.signal"] == "nudge"
    assert signal.attributes["workflows.execution_id"] == wf
    await workflows.get_result(wf, timeout=30)
    await settled(spans)


async def test_a_job_handed_straight_to_an_idle_worker_keeps_its_context(
    store: PostgresStore, start_worker: StartWorker, spans: InMemorySpanExporter
) -> None:
    # The handoff inserts the row through admit(), which writes no context: enqueue() sets it.
    await start_worker("traced")
    offers = f"SELECT count(*) FROM {store.settings.schema}.worker_offers"
    await until(lambda: store.pool.fetchval(offers), "the idle worker's offer")
    job_id = await app.flaky_job.queue("handed")
    handed = await store.pool.fetchval(
        f"SELECT started_at = created_at FROM {store.settings.schema}.executions WHERE id = $1",
        job_id,
    )
    assert handed, "the job was claimed, not handed over: the test proves nothing"
    assert await workflows.get_result(job_id, timeout=30) == "handed"
    found = await settled(spans)
    (enqueue,) = named(found, app.flaky_job, "PRODUCER")
    first, second = sorted(of(found, job_id), key=lambda s: s.start_time or 0)
    assert parent_of(first) == parent_of(second) == enqueue.context.span_id


async def test_tracing_off_writes_no_context_and_makes_no_span(
    store: PostgresStore,
    start_worker: StartWorker,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWS_TRACING", "off")
    await start_worker("traced")
    with trace.get_tracer("tests").start_as_current_span("request"):
        wf = await app.traced_order.queue(2)
        job_id = await asyncio.to_thread(app.flaky_job.queue_sync, "off")
    assert (await workflows.get_result(wf, timeout=30))["child"] == 31
    assert await workflows.get_result(job_id, timeout=30) == "off"
    await settled(spans)
    assert ours(spans) == []
    ids = [wf, job_id, *(str(s["execution_id"]) for s in await store.steps_of(wf))]
    assert len(ids) == 5
    for execution_id in ids:
        assert await trace_context(store, execution_id) is None


# Run in a fresh interpreter: the one running the tests has opentelemetry imported.
_WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import workflows
from tests.integration import tracing_app as app
try:
    print(app.flaky_job.queue_sync("absent"))
except workflows.ConfigurationError as exc:
    print("error:", exc)
"""


def _run_without_otel(tracing: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("WORKFLOWS_TRACING", None)
    if tracing is not None:
        env["WORKFLOWS_TRACING"] = tracing
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_without_opentelemetry_enqueue_works_and_writes_no_context(
    store: PostgresStore,
) -> None:
    for mode in (None, "auto", "off"):
        done = await asyncio.to_thread(_run_without_otel, mode)
        execution_id = done.stdout.strip()
        assert (await store.get_status(execution_id))["status"] == "pending"
        assert await trace_context(store, execution_id) is None
    # Asked for explicitly, its absence is a clear error, and nothing is enqueued.
    done = await asyncio.to_thread(_run_without_otel, "on")
    assert done.stdout.strip() == (
        "error: WORKFLOWS_TRACING=on needs opentelemetry-api: pip install "
        "'workflows-core[otel]' (or set WORKFLOWS_TRACING=auto or off)"
    )
    count = await store.pool.fetchval(f"SELECT count(*) FROM {store.settings.schema}.executions")
    assert count == 3


def test_importing_workflows_imports_no_opentelemetry() -> None:
    # Installed, it is still imported only when a call site asks for the tracer.
    code = (
        "import sys, workflows, workflows.api, workflows.tracing, workflows_postgres.store; "
        "print('opentelemetry' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_nothing_is_traced_until_the_application_sets_a_provider() -> None:
    # The API alone installed: every span would be its no-op; none is made.
    code = (
        "from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider\n"
        "from workflows import tracing; from workflows.config import Settings\n"
        "before = tracing.tracer(Settings())\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "print(before is None, tracing.tracer(Settings()) is not None)"
    )
    env = {k: v for k, v in os.environ.items() if k != "WORKFLOWS_TRACING"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["True", "True"]


def test_tracing_setting_refuses_an_unknown_mode() -> None:
    assert Settings.from_env({}).tracing == "auto"
    assert Settings.from_env({"WORKFLOWS_TRACING": " OFF "}).tracing == "off"
    with pytest.raises(ConfigurationError, match=r"^WORKFLOWS_TRACING='sometimes': must be auto"):
        Settings.from_env({"WORKFLOWS_TRACING": "sometimes"})


async def test_a_context_written_by_hand_starts_a_new_trace_and_never_fails_the_attempt(
    store: PostgresStore, start_worker: StartWorker, spans: InMemorySpanExporter
) -> None:
    # The column is another role's to write: whatever it holds, the attempt runs (traced as a
    # root). A deeply nested array made json.loads raise RecursionError, which escaped.
    hostile = [
        "[" * 5000 + "]" * 5000,
        '"just a string"',
        '{"traceparent": "00-not-a-trace-01"}',
        '{"traceparent": 12, "tracestate": [1, 2]}',
        "[1, 2, 3]",
    ]
    ids = [await app.flaky_job.queue(f"hand-{n}") for n in range(len(hostile))]
    for execution_id, text in zip(ids, hostile, strict=True):
        await store.pool.execute(
            f"UPDATE {store.settings.schema}.executions SET trace_context = $2::jsonb "
            "WHERE id = $1",
            execution_id,
            text,
        )
    await start_worker("traced")
    for n, execution_id in enumerate(ids):
        assert await workflows.get_result(execution_id, timeout=30) == f"hand-{n}"
    found = await settled(spans)
    for execution_id in ids:
        attempts = of(found, execution_id)
        assert len(attempts) == 2  # the first fails, the retry completes
        assert all(parent_of(s) is None for s in attempts)
