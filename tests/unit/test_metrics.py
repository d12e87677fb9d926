"""WorkerMetrics and MetricsServer, scraped over real HTTP and parsed like Prometheus does."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from workflows_worker import __version__
from workflows_worker.metrics import METRIC_NAMES, MetricsServer, WorkerMetrics, attempt_outcome


def _get(server: MetricsServer, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _samples(text: str) -> dict[str, list[Sample]]:
    """Samples by family name as PromQL spells it (the parser drops a counter's `_total`)."""
    families: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = list(family.samples)
    return families


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples in {samples}"
    return matches[0]


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def serve(metrics: WorkerMetrics) -> Iterator[Callable[[Callable[[], bool]], MetricsServer]]:
    started: list[MetricsServer] = []

    def start(health: Callable[[], bool]) -> MetricsServer:
        server = MetricsServer(metrics.registry, health, host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _scrape(server: MetricsServer) -> dict[str, list[Sample]]:
    status, body = _get(server, "/metrics")
    assert status == 200
    return _samples(body.decode())


def test_scrape_exposes_every_family_and_the_process_collectors(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    metrics.execution_started("default", "job", 0.01)
    metrics.attempt_ended("default", "job", "completed", 0.2, "completed")
    metrics.execution_recovered("default", "job")
    metrics.set_queue_depth({("default", "pending"): 1})
    metrics.set_oldest_pending_age({"default": 3.0})
    metrics.set_workers_alive(1)
    metrics.worker_recovered()

    families = _scrape(serve(lambda: True))

    assert families.keys() >= METRIC_NAMES
    assert "python_info" in families
    # The process collector reads /proc, which only Linux has; CI and containers are Linux.
    assert "process_cpu_seconds_total" in families


def _end(metrics: WorkerMetrics, queue: str, kind: str, status: str, **kw: bool) -> None:
    """A run started and ended in ``status``, as the executor reports it."""
    metrics.execution_started(queue, kind, 0.003)
    outcome, final = attempt_outcome(status, **kw)
    metrics.attempt_ended(queue, kind, outcome, 1.5, final)


def test_attempts_count_every_end_and_finished_only_final_outcomes(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    # One job: two failed attempts (one past its timeout), then completed.
    _end(metrics, "default", "job", "retried")
    _end(metrics, "default", "job", "retried", timed_out=True)
    _end(metrics, "default", "job", "completed")
    # Another: out of retries after a timeout.
    _end(metrics, "default", "job", "failed", timed_out=True)
    _end(metrics, "default", "job", "cancelled")
    _end(metrics, "default", "job", "released")
    _end(metrics, "default", "job", "stale")
    _end(metrics, "emails", "workflow", "waiting")
    _end(metrics, "emails", "workflow", "completed")
    metrics.execution_recovered("default", "job", n=2)

    families = _scrape(serve(lambda: True))

    attempts, total = families["workflows_attempts_total"], "workflows_attempts_total"
    job = {"queue": "default", "kind": "job"}
    assert _value(attempts, total, **job, outcome="failed") == 1
    assert _value(attempts, total, **job, outcome="timed_out") == 2
    assert _value(attempts, total, **job, outcome="completed") == 1
    assert _value(attempts, total, **job, outcome="cancelled") == 1
    assert _value(attempts, total, **job, outcome="released") == 1
    assert _value(attempts, total, **job, outcome="discarded") == 1
    assert _value(attempts, total, **job, outcome="lost") == 2
    wf = {"queue": "emails", "kind": "workflow"}
    assert _value(attempts, total, **wf, outcome="suspended") == 1
    assert _value(attempts, total, **wf, outcome="completed") == 1

    finished, total = (
        families["workflows_executions_finished_total"],
        ("workflows_executions_finished_total"),
    )
    # Two jobs ended for good, plus the cancelled one: a sum over statuses counts executions.
    assert _value(finished, total, **job, status="completed") == 1
    assert _value(finished, total, **job, status="failed") == 1
    assert _value(finished, total, **job, status="cancelled") == 1
    assert _value(finished, total, **wf, status="completed") == 1
    assert len(finished) == 4


def test_an_inline_activation_is_a_workflow_attempt_and_finishes_it_when_it_ends(
    metrics: WorkerMetrics,
) -> None:
    metrics.activation_ran("emails", 0.01, "suspended")
    metrics.activation_ran("emails", 0.01, "failed")
    metrics.activation_ran("emails", 0.01, "discarded")

    families = _samples(metrics.render().decode())

    attempts, total = families["workflows_attempts_total"], "workflows_attempts_total"
    wf = {"queue": "emails", "kind": "workflow"}
    assert _value(attempts, total, **wf, outcome="suspended") == 1
    assert _value(attempts, total, **wf, outcome="failed") == 1
    assert _value(attempts, total, **wf, outcome="discarded") == 1
    finished = families["workflows_executions_finished_total"]
    assert [(s.labels["status"], s.value) for s in finished] == [("failed", 1.0)]
    # No claim of its own: nothing was in progress for it.
    assert families["workflows_executions_in_progress"] == []


def test_no_created_series_are_exposed(metrics: WorkerMetrics) -> None:
    _end(metrics, "default", "job", "completed")
    metrics.execution_recovered("default", "job")

    text = metrics.render().decode()

    assert "workflows_attempts_total" in text
    assert "_created" not in text


def test_build_info_names_the_worker_version(metrics: WorkerMetrics) -> None:
    families = _samples(metrics.render().decode())

    (sample,) = families["workflows_build_info"]
    assert sample.value == 1
    assert sample.labels["version"] == __version__
    assert sample.labels["python"].count(".") == 2


def test_oldest_pending_age_per_queue_starts_at_zero_and_clamps_negatives() -> None:
    metrics = WorkerMetrics(queues=["default", "emails"])
    before = _samples(metrics.render().decode())["workflows_queue_oldest_pending_age_seconds"]
    assert {s.labels["queue"]: s.value for s in before} == {"default": 0, "emails": 0}

    metrics.set_oldest_pending_age({"default": 12.5, "emails": -0.2})

    after = _samples(metrics.render().decode())["workflows_queue_oldest_pending_age_seconds"]
    assert {s.labels["queue"]: s.value for s in after} == {"default": 12.5, "emails": 0}


def test_estimated_depths_are_marked_and_unmarked_when_counted_again(
    metrics: WorkerMetrics,
) -> None:
    metrics.set_queue_depth(
        {("default", "pending"): 250_000, ("default", "held"): 3}, {("default", "pending")}
    )
    first = _samples(metrics.render().decode())["workflows_queue_depth_estimated"]
    assert {s.labels["status"]: s.value for s in first} == {"pending": 1, "held": 0}

    metrics.set_queue_depth({("default", "pending"): 40})

    second = _samples(metrics.render().decode())["workflows_queue_depth_estimated"]
    assert {s.labels["status"]: s.value for s in second} == {"pending": 0, "held": 0}


def test_histograms_observe_durations_and_pickup_latency_in_their_buckets(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    metrics.execution_started("default", "job", 0.0004)
    metrics.attempt_ended("default", "job", "completed", 2.0, "completed")
    metrics.execution_started("default", "job", 0.7)
    metrics.attempt_ended("default", "job", "failed", 0.02, "failed")
    # No pickup latency known (a resumed workflow) and no duration: nothing observed.
    metrics.execution_started("default", "job", None)
    metrics.attempt_ended("default", "job", "cancelled", None, "cancelled")

    families = _scrape(serve(lambda: True))

    pickup = families["workflows_pickup_latency_seconds"]
    name = "workflows_pickup_latency_seconds"
    assert _value(pickup, name + "_count", queue="default") == 2
    assert _value(pickup, name + "_sum", queue="default") == pytest.approx(0.7004)
    assert _value(pickup, name + "_bucket", queue="default", le="0.0005") == 1
    assert _value(pickup, name + "_bucket", queue="default", le="0.5") == 1
    assert _value(pickup, name + "_bucket", queue="default", le="1.0") == 2
    assert _value(pickup, name + "_bucket", queue="default", le="60.0") == 2
    assert _value(pickup, name + "_bucket", queue="default", le="+Inf") == 2
    bounds = {s.labels["le"] for s in pickup if s.name == name + "_bucket"}
    assert {"0.0005", "0.001", "0.005", "0.01", "0.1", "1.0", "10.0", "60.0"} <= bounds

    duration = families["workflows_execution_duration_seconds"]
    name = "workflows_execution_duration_seconds"
    assert _value(duration, name + "_count", queue="default", kind="job") == 2
    assert _value(duration, name + "_sum", queue="default", kind="job") == pytest.approx(2.02)
    assert _value(duration, name + "_bucket", queue="default", kind="job", le="0.025") == 1


def test_negative_pickup_latency_from_clock_skew_is_observed_as_zero(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    metrics.execution_started("default", "job", -0.25)

    pickup = _scrape(serve(lambda: True))["workflows_pickup_latency_seconds"]

    name = "workflows_pickup_latency_seconds"
    assert _value(pickup, name + "_sum", queue="default") == 0
    assert _value(pickup, name + "_bucket", queue="default", le="0.0005") == 1


def test_in_progress_falls_for_every_run_that_ends_and_not_for_recovered_ones(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    for _ in range(9):
        metrics.execution_started("default", "job", 0.01)
    metrics.execution_started("other", "activity", 0.01)
    for status in ("completed", "failed", "retried", "cancelled", "released", "stale", "waiting"):
        outcome, final = attempt_outcome(status)
        metrics.attempt_ended("default", "job", outcome, 0.1, final)
    # Recovery counts another worker's runs: this worker's in-progress gauge must not move.
    metrics.execution_recovered("default", "job", n=3)

    families = _scrape(serve(lambda: True))

    in_progress = families["workflows_executions_in_progress"]
    assert _value(in_progress, "workflows_executions_in_progress", queue="default") == 2
    assert _value(in_progress, "workflows_executions_in_progress", queue="other") == 1
    total = families["workflows_attempts_total"]
    assert (
        _value(total, "workflows_attempts_total", queue="default", kind="job", outcome="lost") == 3
    )


def test_queues_given_up_front_show_zero_in_progress_before_any_run(
    serve: Callable[[Callable[[], bool]], MetricsServer],
) -> None:
    metrics = WorkerMetrics(queues=["default", "emails"])
    server = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=0)
    server.start()
    try:
        in_progress = _scrape(server)["workflows_executions_in_progress"]
    finally:
        server.stop()

    assert _value(in_progress, "workflows_executions_in_progress", queue="default") == 0
    assert _value(in_progress, "workflows_executions_in_progress", queue="emails") == 0


def test_set_queue_depth_replaces_values_and_zeroes_vanished_pairs(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    server = serve(lambda: True)
    metrics.set_queue_depth(
        {("default", "pending"): 7, ("default", "waiting"): 2, ("emails", "pending"): 4}
    )
    first = _scrape(server)["workflows_queue_depth"]
    assert _value(first, "workflows_queue_depth", queue="default", status="pending") == 7
    assert _value(first, "workflows_queue_depth", queue="default", status="waiting") == 2
    assert _value(first, "workflows_queue_depth", queue="emails", status="pending") == 4

    metrics.set_queue_depth({("default", "pending"): 3})
    second = _scrape(server)["workflows_queue_depth"]

    assert _value(second, "workflows_queue_depth", queue="default", status="pending") == 3
    assert _value(second, "workflows_queue_depth", queue="default", status="waiting") == 0
    assert _value(second, "workflows_queue_depth", queue="emails", status="pending") == 0
    assert len(second) == 3


def test_workers_alive_and_recoveries(
    metrics: WorkerMetrics, serve: Callable[[Callable[[], bool]], MetricsServer]
) -> None:
    metrics.set_workers_alive(3)
    metrics.set_workers_alive(2)
    metrics.worker_recovered()
    metrics.worker_recovered()

    families = _scrape(serve(lambda: True))

    assert _value(families["workflows_workers_alive"], "workflows_workers_alive") == 2
    recoveries = families["workflows_worker_recoveries_total"]
    assert _value(recoveries, "workflows_worker_recoveries_total") == 2


def test_unknown_statuses_are_rejected_without_creating_series(metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError, match="attempt outcome"):
        metrics.attempt_ended("default", "job", "succeeded", 1.0, None)
    with pytest.raises(ValueError, match="final status"):
        metrics.attempt_ended("default", "job", "completed", 1.0, "succeeded")
    with pytest.raises(ValueError, match="no attempt outcome"):
        attempt_outcome("succeeded")
    with pytest.raises(ValueError, match="queue depth status"):
        metrics.set_queue_depth({("default", "pending"): 1, ("default", "running"): 2})

    text = metrics.render().decode()

    assert "succeeded" not in text
    # The bad mapping is refused whole, not applied up to the bad pair.
    assert 'workflows_queue_depth{queue="default"' not in text


def test_metric_names_lists_exactly_the_workflows_families_rendered(
    metrics: WorkerMetrics,
) -> None:
    metrics.execution_started("default", "job", 0.01)

    families = _samples(metrics.render().decode())

    workflows_families = {name for name in families if name.startswith("workflows_")}
    assert workflows_families == METRIC_NAMES


def test_two_workers_in_one_process_keep_separate_registries() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.set_workers_alive(5)
    second.set_workers_alive(1)

    alive_first = _samples(first.render().decode())["workflows_workers_alive"]
    alive_second = _samples(second.render().decode())["workflows_workers_alive"]

    assert _value(alive_first, "workflows_workers_alive") == 5
    assert _value(alive_second, "workflows_workers_alive") == 1


def test_healthz_answers_200_when_healthy_and_503_otherwise(
    serve: Callable[[Callable[[], bool]], MetricsServer],
) -> None:
    healthy = [True]
    server = serve(lambda: healthy[0])

    assert _get(server, "/healthz") == (200, b"ok")
    healthy[0] = False
    status, _ = _get(server, "/healthz")
    assert status == 503


def test_healthz_answers_503_when_the_health_check_raises(
    serve: Callable[[Callable[[], bool]], MetricsServer],
) -> None:
    def broken() -> bool:
        raise RuntimeError("heartbeat state unreadable")

    server = serve(broken)

    assert _get(server, "/healthz")[0] == 503
    # The server thread survived the exception.
    assert _get(server, "/metrics")[0] == 200


def test_unknown_paths_are_404(serve: Callable[[Callable[[], bool]], MetricsServer]) -> None:
    server = serve(lambda: True)

    assert _get(server, "/")[0] == 404
    assert _get(server, "/metricsx")[0] == 404


def test_port_zero_picks_a_free_port_and_stop_releases_it(metrics: WorkerMetrics) -> None:
    server = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=0)
    assert server.port == 0
    server.start()
    port = server.port
    assert port != 0
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    server.stop()
    server.stop()

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    # The same port can be bound again right away (a restarted worker keeps its port).
    again = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=port)
    again.start()
    try:
        assert _get(again, "/healthz") == (200, b"ok")
    finally:
        again.stop()


def test_a_port_in_use_fails_at_start(metrics: WorkerMetrics) -> None:
    first = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=0)
    first.start()
    try:
        second = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=first.port)
        with pytest.raises(OSError):
            second.start()
    finally:
        first.stop()


def test_scrapes_are_answered_while_the_event_loop_is_blocked(metrics: WorkerMetrics) -> None:
    async def scenario() -> tuple[int, bytes]:
        server = MetricsServer(metrics.registry, lambda: True, host="127.0.0.1", port=0)
        server.start()
        try:
            # A blocking call on the loop thread, on purpose: were the server served by the
            # event loop, this would deadlock instead of being answered by the server's thread.
            return _get(server, "/healthz")
        finally:
            server.stop()

    assert asyncio.run(scenario()) == (200, b"ok")


def test_the_run_families_expose_what_prometheus_clients_own_would(
    metrics: WorkerMetrics,
) -> None:
    # attempts, finished, duration and pickup are counted in plain Python (the worker moves
    # them several times per execution): scraped, they must read exactly as prometheus_client's
    # Counter and Histogram fed the same updates, in both exposition formats.
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from workflows_worker import metrics as module

    reference = CollectorRegistry()
    attempts = Counter(
        "workflows_attempts_total",
        metrics._attempts._documentation,
        ("queue", "kind", "outcome"),
        registry=reference,
    )
    finished = Counter(
        "workflows_executions_finished_total",
        metrics._finished._documentation,
        ("queue", "kind", "status"),
        registry=reference,
    )
    duration = Histogram(
        "workflows_execution_duration_seconds",
        metrics._duration._documentation,
        ("queue", "kind"),
        buckets=module._DURATION_BUCKETS,
        registry=reference,
    )
    pickup = Histogram(
        "workflows_pickup_latency_seconds",
        metrics._pickup._documentation,
        ("queue",),
        buckets=module._PICKUP_BUCKETS,
        registry=reference,
    )
    # Values on bucket bounds, between them, past the last, and 0 (a negative is clamped).
    runs = [
        ("default", "job", 0.0005, 0.005, "completed"),
        ("default", "job", 0.0007, 0.0049, "retried"),
        ("default", "job", 61.0, 4000.0, "failed"),
        ("emails", "activity", 0.0, 0.01, "completed"),
        ("emails", "workflow", -0.2, 1800.0, "waiting"),
        ("default", "job", 0.3, 0.25, "stale"),
    ]
    for queue, kind, latency, seconds, status in runs:
        metrics.execution_started(queue, kind, latency)
        outcome, final = attempt_outcome(status)
        metrics.attempt_ended(queue, kind, outcome, seconds, final)
        pickup.labels(queue).observe(max(latency, 0.0))
        attempts.labels(queue, kind, outcome).inc()
        if final is not None:
            finished.labels(queue, kind, final).inc()
        duration.labels(queue, kind).observe(seconds)
    metrics.activation_ran("emails", 0.02, "completed")
    attempts.labels("emails", "workflow", "completed").inc()
    finished.labels("emails", "workflow", "completed").inc()
    duration.labels("emails", "workflow").observe(0.02)
    metrics.execution_recovered("default", "job", n=3)
    attempts.labels(queue="default", kind="job", outcome="lost").inc(3)
    metrics.execution_finished("default", "workflow", "failed")
    finished.labels("default", "workflow", "failed").inc()

    def families(text: bytes, names: set[str]) -> list[str]:
        lines = text.decode().splitlines()
        return [line for line in lines if any(n in line for n in names)]

    names = {
        "workflows_attempts",
        "workflows_executions_finished",
        "workflows_execution_duration_seconds",
        "workflows_pickup_latency_seconds",
    }
    ours = families(metrics.render(), names)
    assert ours == families(generate_latest(reference), names)
    assert len(ours) > 60
    assert families(generate_openmetrics(metrics.registry), names) == families(
        generate_openmetrics(reference), names
    )
    with pytest.raises(ValueError, match="attempt outcome"):
        metrics.attempt_ended("default", "job", "exploded", 1.0, None)
