"""Prometheus metrics of a worker and the HTTP server that exposes them.

Every ``WorkerMetrics`` owns its own ``CollectorRegistry``: several workers in one process (the
tests start many) would otherwise collide on the global registry with "Duplicated timeseries".
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import platform
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from workflows_worker import __version__

__all__ = [
    "ATTEMPT_OUTCOMES",
    "DEPTH_STATUSES",
    "FINAL_STATUSES",
    "METRIC_NAMES",
    "MetricsServer",
    "WorkerMetrics",
    "attempt_outcome",
]

# Names as PromQL sees them (counters keep their `_total`), which is what alerts and dashboards use.
METRIC_NAMES: frozenset[str] = frozenset(
    {
        "workflows_attempts_total",
        "workflows_executions_finished_total",
        "workflows_execution_duration_seconds",
        "workflows_pickup_latency_seconds",
        "workflows_executions_in_progress",
        "workflows_queue_depth",
        "workflows_queue_depth_estimated",
        "workflows_queue_oldest_pending_age_seconds",
        "workflows_workers_alive",
        "workflows_pruned_executions_total",
        "workflows_worker_recoveries_total",
        "workflows_event_loop_lag_seconds",
        "workflows_event_loop_blocked_total",
        "workflows_sync_threads_stuck",
        "workflows_claims_waiting",
        "workflows_build_info",
    }
)

# How one attempt (a run of a job or activity, an activation of a workflow) ended:
# completed, failed (the code raised; retried or not), timed_out (past its timeout; retried or
# not), cancelled (on request), suspended (a workflow now waits: a step, a timer, a signal),
# released (given back unfinished: the shutdown's grace over, a database error, code too old),
# discarded (its claim was taken over, its outcome dropped), lost (its worker died; counted by
# the worker that recovered it).
ATTEMPT_OUTCOMES: frozenset[str] = frozenset(
    {
        "completed",
        "failed",
        "timed_out",
        "cancelled",
        "suspended",
        "released",
        "discarded",
        "lost",
    }
)
# How an execution ended for good (counted once, by the worker that recorded it).
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# The status a run ended in (see executor.py) -> how the attempt ended, and the final
# status when the run ended the execution. "retried": failed, and to run again.
_OF_RUN_STATUS: dict[str, tuple[str, str | None]] = {
    "completed": ("completed", "completed"),
    "failed": ("failed", "failed"),
    "retried": ("failed", None),
    "cancelled": ("cancelled", "cancelled"),
    "waiting": ("suspended", None),
    "pending": ("suspended", None),
    "released": ("released", None),
    "stale": ("discarded", None),
}
# held: waiting for a concurrency key's slot; throttled: due but held back by a limit.
DEPTH_STATUSES: frozenset[str] = frozenset({"pending", "waiting", "held", "throttled"})

# A claim normally follows a NOTIFY within milliseconds, so the low end needs resolution; the
# top bucket is where a backlog or a long poll interval shows.
_PICKUP_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Runs go from a millisecond job to a workflow activation bounded by the one-hour default timeout.
_DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


class WorkerMetrics:
    """The metric families of one worker, on a registry of its own.

    ``queues`` creates the per-queue series at 0 up front, so a dashboard shows an idle queue
    as 0 rather than as no data.
    """

    def __init__(self, queues: Iterable[str] = ()) -> None:
        # A `_created` series per counter and histogram series doubles what Prometheus stores
        # for a value no dashboard here reads. The switch is process-wide (prometheus_client
        # has no other), and takes effect for the series created after it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        # Series by (family, label values): labels() takes a lock and builds a key on every
        # call, a cost paid several times per workflow step. Label values here are bounded
        # (the worker's queues, kinds, statuses).
        self._series_cache: dict[tuple[int, tuple[str, ...]], Any] = {}
        # The series of the runs of each (queue, kind), moved once or more per execution.
        self._runs: dict[tuple[str, str], _Runs] = {}
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # The four families moved on every run: counted in plain Python (see _Counts).
        self._attempts = _Counts(
            "workflows_attempts_total",
            "Attempts that ended on this worker (a workflow's: its activations), by outcome: "
            "completed, failed, timed_out, cancelled, suspended, released, discarded, lost.",
            ("queue", "kind", "outcome"),
            registry=self.registry,
        )
        self._finished = _Counts(
            "workflows_executions_finished_total",
            "Executions this worker ended for good, by final status (each counted once "
            "across the fleet).",
            ("queue", "kind", "status"),
            registry=self.registry,
        )
        self._duration = _Observations(
            "workflows_execution_duration_seconds",
            "Wall-clock time of one run of an execution on this worker.",
            ("queue", "kind"),
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._pickup = _Observations(
            "workflows_pickup_latency_seconds",
            "Time from an execution becoming runnable to its start on this worker.",
            ("queue",),
            buckets=_PICKUP_BUCKETS,
            registry=self.registry,
        )
        self._in_progress = Gauge(
            "workflows_executions_in_progress",
            "Executions running on this worker now.",
            ("queue",),
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "workflows_queue_depth",
            "Executions waiting in a queue, as last read from the database (status: pending,"
            " waiting, held by a concurrency key, throttled by a queue or rate limit); exact up"
            " to WORKFLOWS_WORKER_QUEUE_DEPTH_EXACT_LIMIT, the planner's estimate past it.",
            ("queue", "status"),
            registry=self.registry,
        )
        self._depth_estimated = Gauge(
            "workflows_queue_depth_estimated",
            "1 when workflows_queue_depth of the same queue and status is an estimate (past "
            "the exact limit), else 0.",
            ("queue", "status"),
            registry=self.registry,
        )
        self._oldest_age = Gauge(
            "workflows_queue_oldest_pending_age_seconds",
            "How long the oldest runnable pending execution of a queue has been due, as last"
            " read from the database; 0 when none is.",
            ("queue",),
            registry=self.registry,
        )
        self._workers_alive = Gauge(
            "workflows_workers_alive",
            "Workers with a fresh heartbeat, as last read from the database.",
            registry=self.registry,
        )
        self._pruned = Counter(
            "workflows_pruned_executions_total",
            "Finished executions (steps and activities included) this worker deleted past "
            "their retention, as the maintenance leader.",
            registry=self.registry,
        )
        self._recoveries = Counter(
            "workflows_worker_recoveries_total",
            "Dead workers whose executions this worker recovered.",
            registry=self.registry,
        )
        self._loop_lag = Gauge(
            "workflows_event_loop_lag_seconds",
            "How late this worker's event loop is now (a blocked loop runs no other execution).",
            registry=self.registry,
        )
        self._loop_blocked = Counter(
            "workflows_event_loop_blocked_total",
            "Times code blocked this worker's event loop past the threshold, by the function "
            "found running (or 'unknown').",
            ("name",),
            registry=self.registry,
        )
        self._claims_waiting = Gauge(
            "workflows_claims_waiting",
            "Executions this worker claimed ahead of its free slots (WORKFLOWS_WORKER_PREFETCH)"
            " that wait for one now: running in the table, none of their code started.",
            registry=self.registry,
        )
        self._stuck_threads = Gauge(
            "workflows_sync_threads_stuck",
            "Threads of this worker still running a plain-def call past its timeout.",
            registry=self.registry,
        )
        build = Gauge(
            "workflows_build_info",
            "Always 1: the worker package's version and the Python version running it.",
            ("version", "python"),
            registry=self.registry,
        )
        build.labels(version=__version__, python=platform.python_version()).set(1)
        self._depth_lock = threading.Lock()
        self._depth_keys: set[tuple[str, str]] = set()
        # Executions running now, by queue: counted here and read by the gauge when scraped
        # (two lock-taking updates fewer per execution).
        self._running: dict[str, _Running] = {}
        for queue in queues:
            self._running_of(queue)
            self._oldest_age.labels(queue=queue)

    def _series(self, family: Any, *values: str) -> Any:
        key = (id(family), values)
        series = self._series_cache.get(key)
        if series is None:
            series = self._series_cache[key] = family.labels(*values)
        return series

    def _running_of(self, queue: str) -> _Running:
        running = self._running.get(queue)
        if running is None:
            running = self._running[queue] = _Running()
            self._series(self._in_progress, queue).set_function(running.get)
        return running

    def _runs_of(self, queue: str, kind: str) -> _Runs:
        runs = self._runs.get((queue, kind))
        if runs is None:
            runs = self._runs[(queue, kind)] = _Runs(self, queue, kind)
        return runs

    def execution_started(self, queue: str, kind: str, pickup_latency: float | None) -> None:
        runs = self._runs.get((queue, kind)) or self._runs_of(queue, kind)
        runs.running().n += 1
        if pickup_latency is not None:
            # The latency subtracts a database timestamp from a worker clock: a little skew
            # between the hosts can make it negative, which would corrupt the histogram's sum.
            runs.pickup().observe(pickup_latency if pickup_latency > 0.0 else 0.0)

    def attempt_ended(
        self, queue: str, kind: str, outcome: str, duration: float | None, final: str | None
    ) -> None:
        """A run this worker started ended: how, and ``final``, the execution's final status
        if the run ended it (else None)."""
        runs = self._runs.get((queue, kind)) or self._runs_of(queue, kind)
        runs.attempt(outcome).inc()
        if final is not None:
            runs.final(final).inc()
        if duration is not None:
            runs.duration().observe(duration if duration > 0.0 else 0.0)
        runs.running().n -= 1

    def activation_ran(self, queue: str, duration: float, outcome: str) -> None:
        """A workflow activation run within an activity's run, on its outcome (no claim of
        its own, so nothing in progress): an attempt of the workflow; one whose ``outcome``
        is a final status ended it."""
        runs = self._runs.get((queue, "workflow")) or self._runs_of(queue, "workflow")
        runs.attempt(outcome).inc()
        if outcome in FINAL_STATUSES:
            runs.final(outcome).inc()
        runs.duration().observe(duration if duration > 0.0 else 0.0)

    def execution_finished(self, queue: str, kind: str, status: str) -> None:
        """An execution ended for good by this worker's upkeep rather than by a run of it
        (a dead worker's last attempt, a workflow past its timeout)."""
        _check(status, FINAL_STATUSES, "final status")
        self._series(self._finished, queue, kind, status).inc()

    def pruned(self, n: int) -> None:
        self._pruned.inc(n)

    def execution_recovered(self, queue: str, kind: str, n: int = 1) -> None:
        """``n`` attempts of a dead worker's, given back (or failed) by this one."""
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        self._attempts.labels(queue=queue, kind=kind, outcome="lost").inc(n)

    def set_queue_depth(
        self,
        depths: Mapping[tuple[str, str], int],
        estimated: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Replace every depth with ``depths``, keyed by ``(queue, status)``; ``estimated``:
        the pairs whose depth is an estimate.

        A pair that vanished since the last call is set to 0 rather than removed: a removed
        series goes stale and graphs and ``deriv()`` would miss the drain to 0.
        """
        estimates = set(estimated)
        for _queue, status in depths:
            if status not in DEPTH_STATUSES:
                raise ValueError(
                    f"queue depth status must be one of {sorted(DEPTH_STATUSES)}, got {status!r}"
                )
        with self._depth_lock:
            for queue, status in self._depth_keys - depths.keys():
                self._queue_depth.labels(queue=queue, status=status).set(0)
                self._depth_estimated.labels(queue=queue, status=status).set(0)
            for (queue, status), depth in depths.items():
                self._queue_depth.labels(queue=queue, status=status).set(depth)
                self._depth_estimated.labels(queue=queue, status=status).set(
                    1 if (queue, status) in estimates else 0
                )
            self._depth_keys.update(depths.keys())

    def set_oldest_pending_age(self, ages: Mapping[str, float]) -> None:
        """The age in seconds of each queue's oldest runnable pending execution (0: none)."""
        for queue, age in ages.items():
            self._series(self._oldest_age, queue).set(max(age, 0.0))

    def set_workers_alive(self, n: int) -> None:
        self._workers_alive.set(n)

    def worker_recovered(self) -> None:
        self._recoveries.inc()

    def set_loop_lag(self, seconds: float) -> None:
        self._loop_lag.set(max(seconds, 0.0))

    def loop_blocked(self, name: str) -> None:
        self._loop_blocked.labels(name=name).inc()

    def watch_claims_waiting(self, count: Callable[[], int]) -> None:
        """``count``, read when scraped, as ``workflows_claims_waiting``."""
        self._claims_waiting.set_function(count)

    def set_stuck_threads(self, n: int) -> None:
        self._stuck_threads.set(n)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _Family(Collector):
    """A family of series whose values this worker keeps in plain Python, as a registry's
    collector: prometheus_client's Counter and Histogram take a lock and check their state on
    every update, several times per execution on the event loop, for a scrape every few
    seconds. Updated on the worker's loop only; a scrape (another thread) reads a copy.
    The exposition is the one prometheus_client's own family makes (test_metrics checks)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], Any] = {}
        registry.register(self)

    def labels(self, *values: str, **named: str) -> Any:
        """The series of these label values (``prometheus_client``'s call, positional or
        named), made at its first use."""
        if named:
            values = tuple(named[label] for label in self._labelnames)
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values!r}")
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new()
        return series

    def _new(self) -> Any:
        raise NotImplementedError

    def _family(self) -> Any:
        raise NotImplementedError

    def describe(self) -> list[Any]:
        return [self._family()]


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _Counts(_Family):
    """A counter family (see _Family)."""

    def _new(self) -> _Count:
        return _Count()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = self._family()
        for values, count in list(self._series.items()):
            family.add_metric(values, count.value)
        yield family


class _Observed:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        # Per bucket, not cumulative: the first bound at or above the value, as
        # prometheus_client counts it.
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1


class _Observations(_Family):
    """A histogram family (see _Family)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._bounds = [float(b) for b in buckets] + [math.inf]
        self._le = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> _Observed:
        return _Observed(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = self._family()
        for values, observed in list(self._series.items()):
            counts, total = list(observed.counts), observed.sum
            cumulative = list(itertools.accumulate(counts))
            family.add_metric(values, list(zip(self._le, cumulative, strict=True)), total)
        yield family


class _Running:
    """A count of executions running now, read by a gauge when scraped."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def get(self) -> float:
        return float(self.n)


class _Runs:
    """The series the runs of one (queue, kind) move, each looked up once, and made only
    when first moved (as ``labels()`` would: no series shows what never happened)."""

    __slots__ = (
        "_attempts",
        "_duration",
        "_finished",
        "_metrics",
        "_pickup",
        "_running",
        "kind",
        "queue",
    )

    def __init__(self, metrics: WorkerMetrics, queue: str, kind: str) -> None:
        self._metrics = metrics
        self.queue = queue
        self.kind = kind
        self._running: _Running | None = None
        self._pickup: Any = None
        self._duration: Any = None
        self._attempts: dict[str, Any] = {}
        self._finished: dict[str, Any] = {}

    def running(self) -> _Running:
        if self._running is None:
            self._running = self._metrics._running_of(self.queue)
        return self._running

    def pickup(self) -> Any:
        if self._pickup is None:
            m = self._metrics
            self._pickup = m._series(m._pickup, self.queue)
        return self._pickup

    def duration(self) -> Any:
        if self._duration is None:
            m = self._metrics
            self._duration = m._series(m._duration, self.queue, self.kind)
        return self._duration

    def attempt(self, outcome: str) -> Any:
        series = self._attempts.get(outcome)
        if series is None:
            _check(outcome, ATTEMPT_OUTCOMES, "attempt outcome")
            m = self._metrics
            series = self._attempts[outcome] = m._series(
                m._attempts, self.queue, self.kind, outcome
            )
        return series

    def final(self, status: str) -> Any:
        series = self._finished.get(status)
        if series is None:
            _check(status, FINAL_STATUSES, "final status")
            m = self._metrics
            series = self._finished[status] = m._series(m._finished, self.queue, self.kind, status)
        return series


def attempt_outcome(status: str, timed_out: bool = False) -> tuple[str, str | None]:
    """How a run that ended in ``status`` (see executor.py) ended as an attempt, and the
    execution's final status if it ended it; ``timed_out``: its code ran past its timeout."""
    try:
        outcome, final = _OF_RUN_STATUS[status]
    except KeyError:
        raise ValueError(f"no attempt outcome for a run ending {status!r}") from None
    if timed_out and outcome == "failed":
        outcome = "timed_out"
    return outcome, final


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    # An unchecked value would silently create a series no alert or dashboard looks at.
    if value not in allowed:
        raise ValueError(f"{what} must be one of {sorted(allowed)}, got {value!r}")


class _QuietHandler(WSGIRequestHandler):
    # Prometheus and the liveness probe call every few seconds: one stderr line each is noise.
    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        # The server read the request head before it gave the request a thread, and hands it
        # over with the connection (see _BoundedWSGIServer).
        head, conn = self.request
        self.connection = conn
        self.rfile = io.BytesIO(head)
        self.wfile = conn.makefile("wb")


@dataclass
class _Reading:
    """A connection whose request head has not all arrived yet."""

    conn: socket.socket
    address: Any
    deadline: float  # time.monotonic() past which it is dropped
    head: bytearray = field(default_factory=bytearray)


class _BoundedWSGIServer(WSGIServer):
    """A WSGI server that gives a thread only to a whole request, and to few at once.

    Its one serving thread accepts connections and reads their request heads without
    blocking, so an idle or trickling client holds a file descriptor for at most
    ``head_timeout`` and never a thread; past ``max_reading`` such connections the oldest is
    dropped (a probe sends its request at once). A whole request gets a daemon thread, at
    most ``max_handlers`` at once; one more is answered 503 on the spot. A handler can then
    block only writing its answer to a client that does not read, ``send_timeout`` per write.
    """

    max_handlers = 8
    max_reading = 64
    head_timeout = 10.0
    send_timeout = 5.0
    max_head_bytes = 16384
    # The listen backlog: a burst of connects waits there for the accept loop.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _QuietHandler)
        self.socket.setblocking(False)
        self._slots = threading.BoundedSemaphore(self.max_handlers)
        self._reading: dict[socket.socket, _Reading] = {}
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(poll_interval):
                        if key.data is None:
                            self._accept(selector)
                        else:
                            self._read(selector, key.data)
                    self._expire(selector)
            finally:
                for reading in list(self._reading.values()):
                    self._drop(selector, reading)
                self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running on another thread) and wait until it returned."""
        self._stopping.set()
        self._stopped.wait()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        # Every connection waiting in the backlog, not one per wake-up.
        for _ in range(self.request_queue_size):
            try:
                conn, address = self.socket.accept()
            except OSError:
                # None left (BlockingIOError), or none to be had now (out of descriptors):
                # the next wake-up tries again.
                return
            conn.setblocking(False)
            if len(self._reading) >= self.max_reading:
                self._drop(selector, next(iter(self._reading.values())))
            reading = _Reading(conn, address, time.monotonic() + self.head_timeout)
            self._reading[conn] = reading
            selector.register(conn, selectors.EVENT_READ, reading)

    def _read(self, selector: selectors.BaseSelector, reading: _Reading) -> None:
        try:
            chunk = reading.conn.recv(self.max_head_bytes)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            # Closed or reset before a whole request: no one to answer.
            self._drop(selector, reading)
            return
        reading.head += chunk
        if b"\r\n\r\n" not in reading.head and b"\n\n" not in reading.head:
            if len(reading.head) >= self.max_head_bytes:
                self._forget(selector, reading)
                _answer_now(reading.conn, "431 Request Header Fields Too Large")
            return
        self._forget(selector, reading)
        if not self._slots.acquire(blocking=False):
            _answer_now(reading.conn, "503 Service Unavailable")
            return
        reading.conn.settimeout(self.send_timeout)
        thread = threading.Thread(
            target=self._handle,
            args=(reading.conn, reading.address, bytes(reading.head)),
            name=f"workflows-metrics-{self.server_address[1]}-request",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:
            # The process is out of threads: a busy answer beats none.
            self._slots.release()
            _answer_now(reading.conn, "503 Service Unavailable")

    def _handle(self, conn: socket.socket, address: Any, head: bytes) -> None:
        try:
            self.finish_request((head, conn), address)
        except OSError:
            pass  # the client went away or stopped reading: no one left to answer
        except Exception:
            self.handle_error(conn, address)
        finally:
            self.shutdown_request(conn)
            self._slots.release()

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        # In accept order, so the first one not yet due ends the search.
        while self._reading:
            oldest = next(iter(self._reading.values()))
            if oldest.deadline > now:
                return
            self._drop(selector, oldest)

    def _forget(self, selector: selectors.BaseSelector, reading: _Reading) -> None:
        selector.unregister(reading.conn)
        del self._reading[reading.conn]

    def _drop(self, selector: selectors.BaseSelector, reading: _Reading) -> None:
        self._forget(selector, reading)
        reading.conn.close()


def _answer_now(conn: socket.socket, status: str) -> None:
    """Answer ``status`` and close, from the serving thread: a few bytes into a send buffer
    that holds nothing yet never block."""
    body = status.encode()
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        conn.setblocking(False)
        conn.send(head.encode() + body)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


class MetricsServer:
    """Serves ``/metrics`` (the registry) and ``/healthz`` over HTTP from a daemon thread.

    The server never runs on the worker's event loop, so a busy or blocked loop still answers
    scrapes. ``health`` is therefore called on a server thread: it must only read state
    (a flag, a timestamp), never touch the loop. ``stop()`` blocks briefly; from a coroutine
    call it through ``asyncio.to_thread``. Its threads are bounded: see ``_BoundedWSGIServer``.
    """

    _POLL_INTERVAL = 0.1

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], bool],
        host: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self._metrics_app: WSGIApplication = make_wsgi_app(registry)
        self._health = health
        self._host = host
        self._requested_port = port
        self._server: _BoundedWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the one picked when asked for 0), else the requested one."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """The bound address once started (``0.0.0.0``: every IPv4 interface), else the
        requested host."""
        if self._server is None:
            return self._host
        return str(self._server.server_address[0])

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` at once if the port is taken."""
        if self._server is not None:
            raise RuntimeError("MetricsServer already started")
        family, _, _, _, address = socket.getaddrinfo(
            self._host, self._requested_port, type=socket.SOCK_STREAM
        )[0]
        server = _BoundedWSGIServer((str(address[0]), int(address[1])), family)
        server.set_app(self._app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._POLL_INTERVAL},
            name=f"workflows-metrics-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server = server
        self._thread = thread

    def stop(self) -> None:
        """Stop serving and release the port; a no-op if not started."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = None
        self._thread = None
        server.shutdown()
        server.server_close()
        thread.join()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            try:
                healthy = bool(self._health())
            except Exception:
                # A probe that raises means the worker cannot vouch for itself: unhealthy,
                # and the server thread must survive it.
                healthy = False
            status, body = (
                ("200 OK", b"ok") if healthy else ("503 Service Unavailable", b"unhealthy")
            )
            start_response(
                status,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [body]
        body = b"not found; try /metrics or /healthz"
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]
