"""What every system module and scenario shares: marks, worker processes, statistics.

Imported by worker processes too, so it imports the standard library only.

Marks: a worker process tells the benchmark what happened inside it (it is ready; a job's first
line ran, and how long after its enqueue) with one UDP datagram to 127.0.0.1 on
``BENCH_MARK_PORT``. Sending one costs a few microseconds and never blocks the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: worker processes start here so ``benchmarks.*`` imports."""

QUEUE = "bench"
NAP_SECONDS = 0.05
"""How long a ``nap`` job sleeps: long enough that a worker fills all its slots."""

MARK_PORT_ENV = "BENCH_MARK_PORT"
GO_FILE_ENV = "BENCH_GO_FILE"

# Ours also drains with claims made ahead of free slots: WORKFLOWS_WORKER_PREFETCH (opt-in).
PREFETCH = 100


class NotSupported(Exception):
    """The system has no equivalent of what a scenario measures (shown as n/a)."""


def with_dbname(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


# ---- inside worker processes ------------------------------------------------------------

_mark_socket: socket.socket | None = None
_first_sent = False


def mark(*fields: object) -> None:
    """Send one mark to the benchmark; a no-op when no benchmark listens."""
    global _mark_socket
    port = os.environ.get(MARK_PORT_ENV)
    if not port:
        return
    if _mark_socket is None:
        _mark_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _mark_socket.setblocking(False)
    with contextlib.suppress(OSError):
        _mark_socket.sendto(" ".join(str(f) for f in fields).encode(), ("127.0.0.1", int(port)))


def mark_first() -> None:
    """Called on a job's first line: the first call in this process sends its time."""
    global _first_sent
    if not _first_sent:
        _first_sent = True
        mark("first", os.getpid(), repr(time.time()))


def mark_latency(enqueued_at: float) -> None:
    """Called on a job's first line with the time its client took just before enqueueing."""
    mark("latency", repr(time.time() - float(enqueued_at)))


def ready_then_wait_for_go() -> None:
    """Worker processes call this once set up: all start consuming at the same moment."""
    mark("ready", os.getpid())
    go = os.environ.get(GO_FILE_ENV)
    if not go:
        return
    deadline = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("no go signal from the benchmark within 120 s")
        time.sleep(0.002)


def install_stop_handlers(stop: Any) -> None:
    """SIGTERM/SIGINT call ``stop()`` on the running loop (the benchmark ends workers so)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


# ---- in the benchmark process ---------------------------------------------------------------

_T0 = time.monotonic()


def trace(message: str) -> None:
    """A timestamped line in the runner's log (benchmarks/results/logs/)."""
    print(f"{time.monotonic() - _T0:8.3f} {message}", flush=True)


class _MarkProtocol(asyncio.DatagramProtocol):
    def __init__(self, sink: Marks) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: Any) -> None:
        kind, _, rest = data.decode(errors="replace").partition(" ")
        self.sink.received(kind, rest.split(), time.time())


class Marks:
    """Receives the marks worker processes send."""

    def __init__(self) -> None:
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._queues: dict[str, asyncio.Queue[tuple[list[str], float]]] = {}

    async def open(self) -> Marks:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _MarkProtocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.port = sock.getsockname()[1]
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _queue(self, kind: str) -> asyncio.Queue[tuple[list[str], float]]:
        return self._queues.setdefault(kind, asyncio.Queue())

    def received(self, kind: str, values: list[str], at: float) -> None:
        self._queue(kind).put_nowait((values, at))

    async def next(self, kind: str, timeout: float) -> tuple[list[str], float]:
        return await asyncio.wait_for(self._queue(kind).get(), timeout)

    def drain(self, kind: str) -> list[tuple[list[str], float]]:
        q = self._queue(kind)
        out = []
        while not q.empty():
            out.append(q.get_nowait())
        return out


@dataclass
class WorkerProcess:
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log: Path
    maxrss_kb: int | None = None
    returncode: int | None = None


@dataclass
class Workers:
    """Worker processes of one measurement: started together, ended together."""

    marks: Marks
    env: dict[str, str]
    procs: list[WorkerProcess] = field(default_factory=list)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-workers-")))

    @property
    def go_file(self) -> Path:
        return self.tmp / "go"

    def start(self, argvs: Sequence[list[str]], *, barrier: bool = True) -> None:
        env = dict(os.environ)
        env.update(self.env)
        env[MARK_PORT_ENV] = str(self.marks.port)
        if barrier:
            env[GO_FILE_ENV] = str(self.go_file)
        else:
            env.pop(GO_FILE_ENV, None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        for i, argv in enumerate(argvs):
            log = self.tmp / f"worker-{i}.log"
            with open(log, "wb") as out:
                popen = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.procs.append(WorkerProcess(list(argv), popen, log))

    async def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while len(seen) < len(self.procs):
            self.check_alive()
            try:
                values, _ = await self.marks.next("ready", 0.2)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"workers not ready within {timeout} s{self.tails()}"
                    ) from None
                continue
            seen.add(values[0])

    def go(self) -> None:
        self.go_file.touch()

    def check_alive(self) -> None:
        self._reap()
        for p in self.procs:
            if p.returncode is not None and p.returncode != 0:
                raise RuntimeError(f"a worker exited with {p.returncode}{self.tails()}")

    async def wait_exit(self, timeout: float) -> bool:
        """Wait for every process to exit by itself; False if some still run at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if all(p.returncode is not None for p in self.procs):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)

    async def stop(self, grace: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps each with its peak RSS."""
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        if not await self.wait_exit(grace):
            for p in self.procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.popen.pid, signal.SIGKILL)
            await self.wait_exit(10)

    def _reap(self) -> None:
        for p in self.procs:
            if p.returncode is not None:
                continue
            try:
                pid, status, rusage = os.wait4(p.popen.pid, os.WNOHANG)
            except ChildProcessError:
                p.returncode = p.popen.returncode if p.popen.returncode is not None else -1
                continue
            if pid == 0:
                continue
            # ru_maxrss is in kilobytes on Linux: the peak resident set of that process.
            p.maxrss_kb = rusage.ru_maxrss
            p.returncode = os.waitstatus_to_exitcode(status)
            p.popen.returncode = p.returncode

    def tails(self, lines: int = 15) -> str:
        out = []
        for p in self.procs:
            try:
                text = p.log.read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                text = []
            if text:
                out.append(
                    f"\n--- {' '.join(p.argv[:4])} ... (pid {p.popen.pid}) ---\n" + "\n".join(text)
                )
        return "".join(out)

    async def __aenter__(self) -> Workers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def wait_until_zero(
    count: Any, timeout: float, interval: float = 0.05, workers: Workers | None = None
) -> tuple[float, int]:
    """Poll ``await count()`` until it is 0 or ``timeout`` passes; (the time, the last count)."""
    deadline = time.time() + timeout
    while True:
        left = await count()
        now = time.time()
        if left == 0 or now >= deadline:
            return now, left
        if workers is not None:
            workers.check_alive()
        await asyncio.sleep(interval)


def python_module(module: str, *args: object) -> list[str]:
    return [sys.executable, "-m", module, *(str(a) for a in args)]


# ---- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": percentile(values, 50),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


# ---- the interface each system implements ------------------------------------------------


class System:
    """One system under test, seen from the benchmark process (the client side).

    A fresh database per measurement: ``setup`` installs the system's schema in it, ``open``
    connects. Task names: ``noop`` (returns at once), ``ping`` (reports its pickup latency:
    its argument is the enqueue time), ``nap`` (sleeps ``NAP_SECONDS``). Workflows: ``flow(n)``
    runs ``n`` no-op steps.
    """

    name = "?"
    has_workflows = False
    bulk_chunk = 5000
    poll_interval: float | None = None
    """Seconds between a worker's polls for systems that poll rather than get notified."""

    def __init__(self, dsn: str, options: dict[str, Any]) -> None:
        self.dsn = dsn
        self.options = options
        self.conn: Any = None  # an asyncpg connection for counting

    async def setup(self) -> None:
        raise NotImplementedError

    async def open(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    # client calls
    async def enqueue(self, task: str, arg: float) -> None:
        raise NotImplementedError

    def enqueue_sync(self, task: str, arg: float) -> None:
        """The same enqueue through the system's blocking (synchronous) client."""
        raise NotSupported("no synchronous enqueue API")

    async def open_producers(self, n: int) -> None:
        """Before ``n`` asyncio tasks call ``enqueue`` at once (a pool, if the client's
        default connection cannot be shared)."""

    async def enqueue_many(self, task: str, args: list[float]) -> None:
        """One round trip for the whole batch."""
        raise NotSupported("no bulk enqueue API")

    async def preload(self, task: str, n: int) -> None:
        """Put ``n`` jobs in the queue, by the fastest means the system offers."""
        try:
            for start in range(0, n, self.bulk_chunk):
                await self.enqueue_many(
                    task, [float(i) for i in range(start, min(n, start + self.bulk_chunk))]
                )
        except NotSupported:
            for i in range(n):
                await self.enqueue(task, float(i))

    async def settle(self) -> None:
        """After loading the queue, before measuring: statistics as a running system has them.

        A freshly loaded table has none until autovacuum (a minute later) gets to it; without
        them a planner may pick a plan that a long-running system would never use.
        """
        await self.conn.execute("ANALYZE")

    async def start_workflow(self, steps: int) -> str:
        raise NotSupported("no workflows")

    async def preload_workflows(self, steps: int, n: int) -> None:
        for _ in range(n):
            await self.start_workflow(steps)

    async def remaining(self) -> int:
        """Jobs or workflows of the bench queue not finished yet."""
        raise NotImplementedError

    async def workflow_finished_at(self, workflow_id: str) -> float | None:
        """When the workflow's completion was written (the database's clock, epoch seconds);
        None while it runs. Raises if it failed."""
        raise NotSupported("no workflows")

    async def workflow_started_at(self, workflow_id: str) -> float | None:
        """When a worker took the workflow (the database's clock, epoch seconds)."""
        raise NotSupported("no start time")

    # worker processes
    def worker_argv(self, concurrency: int, index: int) -> list[str]:
        import json

        return python_module(
            "benchmarks.worker", self.name, self.dsn, concurrency, index, json.dumps(self.options)
        )

    def memory_argv(self, concurrency: int) -> tuple[list[str], bool]:
        """The worker for the memory scenario, and whether it waits for the go signal."""
        return self.worker_argv(concurrency, 0), True

    def worker_env(self) -> dict[str, str]:
        return {}

    # claim at scale
    async def claim_load(self, n: int) -> None:
        raise NotSupported("no public claim/dequeue call")

    async def claim_once(self) -> int:
        """One claim of up to 10 executions (or what the system takes in one call); how many."""
        raise NotSupported("no public claim/dequeue call")

    # flow control (ours only)
    async def limit_queue(self, concurrency: int | None = None, rate: str | None = None) -> None:
        """Set the bench queue's fleet-wide limits (``rate`` as ``"500/s"``)."""
        raise NotSupported("no fleet-wide queue limits")

    async def preload_keyed(self, n: int, keys: int) -> None:
        """``n`` no-op jobs over ``keys`` concurrency keys of limit 1 (job i on key i % keys)."""
        raise NotSupported("no concurrency keys")

    async def start_times_us(self) -> list[int]:
        """When each execution was admitted (epoch microseconds), in order."""
        raise NotSupported("no admission times")

    async def claim_load_blocked(self, n: int, blocked: int) -> None:
        """As ``claim_load(n)``, plus ``blocked`` executions waiting on a busy concurrency key."""
        raise NotSupported("no concurrency keys")

    # waiting for results (ours only)
    async def enqueue_ids(self, task: str, n: int) -> list[str]:
        """``n`` runs of ``task`` enqueued; their ids."""
        raise NotSupported("not measured for this system")

    async def wait_result(self, execution_id: str, timeout: float) -> Any:
        """The execution's result, waited for as an application would."""
        raise NotSupported("not measured for this system")

    async def waiters_settled(self, n: int) -> None:
        """Until ``n`` started ``wait_result`` calls all sleep."""
        raise NotSupported("not measured for this system")


async def fresh_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template is None:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            # A template must have no session: whatever set it up may linger a moment.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                template,
            )
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return with_dbname(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
