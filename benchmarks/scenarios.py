"""The measurements, written once against ``common.System``.

Each scenario function runs ``ctx.runs`` runs and returns one dict of figures per run (a
figure the system cannot produce is absent: the report shows n/a). Every measurement gets a
fresh database, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.client
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from benchmarks.common import (
    PREFETCH,
    Marks,
    NotSupported,
    System,
    Workers,
    drop_database,
    fresh_database,
    percentile,
    trace,
    wait_until_zero,
)

CONCURRENCY = 10

FULL: dict[str, Any] = {
    "enqueue_one": 10_000,  # jobs queued one at a time (and the calls the CPU is taken over)
    "producers": 50,  # concurrent producers (issue 16)
    "producer_jobs": 200,  # jobs each enqueues, one at a time
    "producers_cap": 120.0,
    "drain_scale_sizes": [5_000, 50_000],  # backlogs drained by one process (issue 16)
    "drain_scale_cap": 60.0,
    "floor_samples": 200,  # 10 sequential autocommit INSERTs, timed (ceiling.py)
    "enqueue_bulk_batches": 20,
    "enqueue_bulk_batch": 1000,  # jobs per bulk call
    "drain_jobs": 10_000,
    "drain_cap": 10.0,  # seconds: a slower system is measured on what it finished by then
    "pickup_jobs": 200,
    "pickup_cap": 15.0,
    "wf10": 200,
    "wf100": 20,
    "wf_cap": 15.0,
    "wf_single": 10,  # single 10-step workflows timed end to end, one after the other
    "wf_single_cap": 15.0,
    "claim_sizes": [1_000, 1_000_000],
    "claim_calls": 30,
    "claim_budget": 20.0,  # seconds per run
    "memory_concurrency": [10, 100],
    "memory_jobs_per_slot": 30,
    "memory_cap": 10.0,
    # flow control (issue 12), ours only
    "limited_jobs": 10_000,
    "limited_concurrency": 1_000,  # far above what 2 processes x concurrency 10 run
    "limited_cap": 10.0,
    "keys_jobs": 10_000,
    "keys": 1_000,
    "rate_limit": 500,  # starts per second
    "rate_hold": 20,  # seconds the backlog keeps the rate busy
    "claim_blocked_rows": 100_000,
    "claim_free_rows": 1_000,
    # waiting for results (issue 13), ours only
    "waiters": 1_000,
    "waiters_enqueues": 1_000,
    "waiters_block_cap": 5.0,  # seconds one enqueue may take before it counts as blocked
    "waiters_cap": 60.0,  # seconds for every waiter's result once workers run
    # retention (issue 13), ours only; BENCH_RETENTION_ROWS, _RATE and _PHASE override these
    "retention_rows": 5_000_000,
    "retention_rate": 2_000,  # executions enqueued (and finished) per second meanwhile
    "retention_keep": 60,  # seconds: WORKFLOWS_RETENTION while pruning
    "retention_phase": 30,  # seconds without pruning, then of steady state after the backlog
    "retention_cap": 1_800,  # seconds the backlog may take
    # dashboard (issue 14), ours only; BENCH_DASHBOARD_ROWS and _DAYS override these
    "dashboard_rows": 1_000_000,
    "dashboard_days": 7.0,  # the span the rows were created over, up to 20 s ago
    "dashboard_requests": 30,  # per page, after 3 warm-up rounds
}

QUICK: dict[str, Any] = {
    "enqueue_one": 1_000,
    "producers": 50,
    "producer_jobs": 20,
    "producers_cap": 60.0,
    "drain_scale_sizes": [5_000],  # BENCH_DRAIN_SIZES=5000,50000 adds the large one
    "drain_scale_cap": 20.0,
    "floor_samples": 50,
    "enqueue_bulk_batches": 3,
    "enqueue_bulk_batch": 1000,
    "drain_jobs": 1_000,
    "drain_cap": 2.0,
    "pickup_jobs": 30,
    "pickup_cap": 3.0,
    "wf10": 20,
    "wf100": 2,
    "wf_cap": 2.0,
    "wf_single": 3,
    "wf_single_cap": 3.0,
    "claim_sizes": [1_000, 100_000],
    "claim_calls": 20,
    "claim_budget": 5.0,
    "memory_concurrency": [10, 100],
    "memory_jobs_per_slot": 10,
    "memory_cap": 3.0,
    "limited_jobs": 2_000,
    "limited_concurrency": 1_000,
    "limited_cap": 3.0,
    "keys_jobs": 2_000,
    "keys": 1_000,
    "rate_limit": 500,
    "rate_hold": 4,
    "claim_blocked_rows": 100_000,
    "claim_free_rows": 1_000,
    # waiting for results (issue 13), ours only
    "waiters": 1_000,
    "waiters_enqueues": 200,
    "waiters_block_cap": 5.0,
    "waiters_cap": 60.0,
    "retention_rows": 200_000,
    "retention_rate": 1_000,
    "retention_keep": 20,
    "retention_phase": 10,
    "retention_cap": 300,
    "dashboard_rows": 100_000,
    "dashboard_days": 7.0,
    "dashboard_requests": 10,
}


@dataclass
class Context:
    system: str
    scenario: str
    system_cls: type[System]
    options: dict[str, Any]
    admin_dsn: str
    runs: int
    sizes: dict[str, Any]
    marks: Marks
    notes: dict[str, Any] = field(default_factory=dict)
    _counter: int = 0
    _template: str | None = None

    def _name(self, suffix: str) -> str:
        return f"bench_{self.system}_{self.scenario}_{suffix}".replace("-", "_")

    async def fresh(self) -> tuple[System, str]:
        """A new database with the system's schema, and the system connected to it.

        The schema is installed once, in a template database that each new one copies.
        """
        if self._template is None:
            name = self._name("template")
            dsn = await fresh_database(self.admin_dsn, name)
            await self.system_cls(dsn, self.options).setup()
            self._template = name
        self._counter += 1
        name = self._name(str(self._counter))
        dsn = await fresh_database(self.admin_dsn, name, template=self._template)
        system = self.system_cls(dsn, self.options)
        await system.open()
        trace(f"database {name} ready")
        return system, name

    async def close(self) -> None:
        if self._template is not None:
            await drop_database(self.admin_dsn, self._template)

    async def done_with(self, system: System, name: str) -> None:
        await system.close()
        await drop_database(self.admin_dsn, name)

    def workers(self, system: System) -> Workers:
        return Workers(self.marks, system.worker_env())

    def note(self, key: str, value: Any) -> None:
        self.notes.setdefault(key, []).append(value)


async def _first_mark(ctx: Context, workers: Workers, timeout: float = 120) -> float:
    """When the first job or workflow of this measurement started (the worker's clock)."""
    deadline = time.monotonic() + timeout
    while True:
        workers.check_alive()
        try:
            values, _ = await ctx.marks.next("first", 0.2)
            return float(values[1])
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no job started within {timeout} s{workers.tails()}") from None


async def _check_failures(system: System) -> None:
    failures = getattr(system, "failures", None)
    if failures is not None and await failures():
        raise RuntimeError(f"{await failures()} executions failed during the measurement")


async def _throughput(
    ctx: Context,
    system: System,
    procs: int,
    cap: float,
    total: int,
    env: dict[str, str] | None = None,
) -> tuple[float, int, bool]:
    """Start ``procs`` workers on a loaded queue; (items finished per second, finished, capped).

    From the first job's first line to the moment the benchmark sees nothing left (polled
    every 50 ms), or to ``cap`` seconds when the system is slower than that. ``env``: more
    of the workers' environment.
    """
    ctx.marks.drain("first")
    async with Workers(ctx.marks, {**system.worker_env(), **(env or {})}) as workers:
        workers.start([system.worker_argv(CONCURRENCY, i) for i in range(procs)])
        await workers.wait_ready()
        trace(f"{procs} workers ready")
        workers.go()
        t0 = await _first_mark(ctx, workers)
        trace(f"first started {time.time() - t0:.3f} s ago")
        t1, left = await wait_until_zero(
            system.remaining, timeout=cap - (time.time() - t0), workers=workers
        )
        trace(f"{total - left} of {total} finished in {t1 - t0:.3f} s")
        await workers.stop()
        trace("workers stopped")
    done = total - left
    return done / (t1 - t0), done, left > 0


# ---- scenarios ----------------------------------------------------------------------------


async def enqueue(ctx: Context) -> list[dict[str, float]]:
    n = ctx.sizes["enqueue_one"]
    batches, batch = ctx.sizes["enqueue_bulk_batches"], ctx.sizes["enqueue_bulk_batch"]
    results = []
    for _ in range(ctx.runs):
        system, db = await ctx.fresh()
        try:
            figures: dict[str, float] = {}
            for i in range(20):  # connections, prepared statements
                await system.enqueue("noop", float(i))
            # The producer's CPU per call (issue 16): the process's CPU time (every thread),
            # over the same calls as the wall-clock rate.
            cpu, start = time.process_time(), time.perf_counter()
            for i in range(n):
                await system.enqueue("noop", float(i))
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            figures["enqueue_one_per_s"] = n / wall
            figures["enqueue_one_cpu_us"] = cpu / n * 1e6
            try:
                for i in range(20):
                    system.enqueue_sync("noop", float(i))
                cpu, start = time.process_time(), time.perf_counter()
                for i in range(n):
                    system.enqueue_sync("noop", float(i))
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                figures["enqueue_sync_per_s"] = n / wall
                figures["enqueue_sync_cpu_us"] = cpu / n * 1e6
            except NotSupported as exc:
                ctx.notes["enqueue_sync_per_s"] = f"n/a: {exc}"
            try:
                await system.enqueue_many("noop", [0.0] * 10)
                args = [float(i) for i in range(batch)]
                start = time.perf_counter()
                for _ in range(batches):
                    await system.enqueue_many("noop", args)
                figures["enqueue_bulk_per_s"] = batches * batch / (time.perf_counter() - start)
            except NotSupported as exc:
                ctx.notes["enqueue_bulk_per_s"] = f"n/a: {exc}"
            results.append(figures)
        finally:
            await ctx.done_with(system, db)
    return results


PRODUCER_PROCS = 4


async def producers(ctx: Context) -> list[dict[str, float]]:
    """``producers`` concurrent producers enqueueing one at a time (issue 16): as asyncio tasks
    in the benchmark's process, then spread over ``PRODUCER_PROCS`` processes."""
    from benchmarks import producer

    tasks, jobs = ctx.sizes["producers"], ctx.sizes["producer_jobs"]
    results = []
    for run in range(ctx.runs):
        figures: dict[str, float] = {}
        for mode in ("tasks", "procs") if run % 2 == 0 else ("procs", "tasks"):
            system, db = await ctx.fresh()
            try:
                if mode == "tasks":
                    await producer.warm_up(system, tasks)
                    got = await producer.produce(system, tasks, jobs)
                    spans = [(got["start"], got["end"])]
                    latencies = got["latencies"]
                else:
                    spans, latencies = await _producer_processes(ctx, system, tasks, jobs)
            finally:
                await ctx.done_with(system, db)
            total = len(latencies)
            if total != tasks * jobs:
                raise RuntimeError(f"{total} of {tasks * jobs} enqueues reported")
            elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
            figures[f"producers_{mode}_per_s"] = total / elapsed
            figures[f"producers_{mode}_p50_ms"] = percentile(latencies, 50) * 1000
            figures[f"producers_{mode}_p99_ms"] = percentile(latencies, 99) * 1000
            trace(f"{tasks} producers ({mode}): {total} jobs in {elapsed:.3f} s")
        results.append(figures)
    return results


async def _producer_processes(
    ctx: Context, system: System, tasks: int, jobs: int
) -> tuple[list[tuple[float, float]], list[float]]:
    """The producers spread over processes started together; their spans and latencies."""
    import json
    import sys

    shares = [tasks // PRODUCER_PROCS + (i < tasks % PRODUCER_PROCS) for i in range(PRODUCER_PROCS)]
    spans: list[tuple[float, float]] = []
    latencies: list[float] = []
    async with ctx.workers(system) as workers:
        outs = [workers.tmp / f"producer-{i}.json" for i in range(PRODUCER_PROCS)]
        workers.start(
            [
                [
                    sys.executable,
                    "-m",
                    "benchmarks.producer",
                    ctx.system,
                    system.dsn,
                    str(share),
                    str(jobs),
                    json.dumps(ctx.options),
                    str(out),
                ]
                for share, out in zip(shares, outs, strict=True)
            ]
        )
        await workers.wait_ready()
        workers.go()
        if not await workers.wait_exit(ctx.sizes["producers_cap"]):
            raise RuntimeError(f"producers still running after the cap{workers.tails()}")
        workers.check_alive()
        for out in outs:
            got = json.loads(await asyncio.to_thread(out.read_text))
            spans.append((got["start"], got["end"]))
            latencies += got["latencies"]
    return spans, latencies


async def drain(ctx: Context) -> list[dict[str, float]]:
    total, cap = ctx.sizes["drain_jobs"], ctx.sizes["drain_cap"]
    results = []
    for _ in range(ctx.runs):
        figures = {}
        for procs in (1, 2):
            system, db = await ctx.fresh()
            try:
                await system.preload("noop", total)
                await system.settle()
                trace(f"{total} jobs enqueued")
                rate, done, capped = await _throughput(ctx, system, procs, cap, total)
                await _check_failures(system)
            finally:
                await ctx.done_with(system, db)
            figures[f"drain_{procs}proc_per_s"] = rate
            ctx.note(
                f"drain_{procs}proc_finished", f"{done}/{total}" + (" (capped)" if capped else "")
            )
        results.append(figures)
    return results


def drain_sizes(ctx: Context) -> list[int]:
    """The backlogs of ``drain_scale``; BENCH_DRAIN_SIZES (comma-separated) overrides them."""
    import os

    env = os.environ.get("BENCH_DRAIN_SIZES", "").strip()
    sizes: list[int] = [int(x) for x in env.split(",") if x.strip()] if env else []
    return sizes or list(ctx.sizes["drain_scale_sizes"])


async def drain_scale(ctx: Context) -> list[dict[str, float]]:
    """Drain of one worker process (concurrency 10) at each backlog size (issue 16)."""
    cap = ctx.sizes["drain_scale_cap"]
    results = []
    for _ in range(ctx.runs):
        figures = {}
        for total in drain_sizes(ctx):
            variants: list[tuple[str, dict[str, str]]] = [("", {})]
            if ctx.system == "ours":
                variants.append(("_prefetch", {"WORKFLOWS_WORKER_PREFETCH": str(PREFETCH)}))
            for suffix, env in variants:
                system, db = await ctx.fresh()
                try:
                    await system.preload("noop", total)
                    await system.settle()
                    trace(f"{total} jobs enqueued")
                    rate, done, capped = await _throughput(ctx, system, 1, cap, total, env)
                    await _check_failures(system)
                finally:
                    await ctx.done_with(system, db)
                figures[f"drain_{_label(total)}{suffix}_per_s"] = rate
                ctx.note(
                    f"drain_{_label(total)}{suffix}_finished",
                    f"{done}/{total}" + (" (capped)" if capped else ""),
                )
        results.append(figures)
    return results


async def pickup(ctx: Context) -> list[dict[str, float]]:
    n, cap = ctx.sizes["pickup_jobs"], ctx.sizes["pickup_cap"]
    results = []
    for _ in range(ctx.runs):
        system, db = await ctx.fresh()
        try:
            async with ctx.workers(system) as workers:
                workers.start([system.worker_argv(CONCURRENCY, 0)])
                await workers.wait_ready()
                workers.go()
                ctx.marks.drain("latency")
                # Warm up: the worker is running and has picked up jobs before we measure.
                for _ in range(3):
                    await system.enqueue("ping", time.time())
                    await _latency(ctx, workers, 120)
                await asyncio.sleep(0.2)
                samples: list[float] = []
                deadline = time.monotonic() + cap
                while len(samples) < n and time.monotonic() < deadline:
                    await system.enqueue("ping", time.time())
                    samples.append(await _latency(ctx, workers, 60))
                    # The worker goes back to idle (records the outcome) before the next one;
                    # against a polling worker, a random pause spreads the enqueues over its
                    # polling period instead of always landing just after a poll.
                    await asyncio.sleep(0.01 + random.uniform(0, system.poll_interval or 0))
                await workers.stop()
            await _check_failures(system)
        finally:
            await ctx.done_with(system, db)
        ctx.note("pickup_samples", len(samples))
        results.append(
            {
                "pickup_p50_ms": percentile(samples, 50) * 1000,
                "pickup_p95_ms": percentile(samples, 95) * 1000,
                "pickup_p99_ms": percentile(samples, 99) * 1000,
            }
        )
    return results


async def _latency(ctx: Context, workers: Workers, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        workers.check_alive()
        try:
            values, _ = await ctx.marks.next("latency", 0.5)
            return float(values[0])
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a job was not picked up within {timeout} s{workers.tails()}"
                ) from None


async def workflows(ctx: Context) -> list[dict[str, float]]:
    if not ctx.system_cls.has_workflows:
        raise NotSupported("no workflows")
    cap = ctx.sizes["wf_cap"]
    results = []
    for _ in range(ctx.runs):
        figures: dict[str, float] = {}
        for steps, count in ((10, ctx.sizes["wf10"]), (100, ctx.sizes["wf100"])):
            system, db = await ctx.fresh()
            try:
                await system.preload_workflows(steps, count)
                await system.settle()
                rate, done, capped = await _throughput(ctx, system, 1, cap, count)
                await _check_failures(system)
            finally:
                await ctx.done_with(system, db)
            figures[f"wf{steps}_per_s"] = rate
            figures[f"wf{steps}_steps_per_s"] = rate * steps
            ctx.note(f"wf{steps}_finished", f"{done}/{count}" + (" (capped)" if capped else ""))
        figures["per_step_ratio"] = figures["wf10_steps_per_s"] / figures["wf100_steps_per_s"]
        figures.update(await _single_workflows(ctx))
        results.append(figures)
    return results


async def _single_workflows(ctx: Context) -> dict[str, float]:
    """One 10-step workflow at a time on an idle worker: enqueue to completion seen.

    For a polling worker, a random pause of up to one polling period before each enqueue
    spreads them over its period (as in ``pickup``): its latency is bimodal (the poll came
    just after the enqueue, or a period later), and the median is then that of a uniform
    phase. Where the system records when a worker took the workflow, the time splits into
    the wait for a worker (enqueue to claim) and the run (claim to completion).
    """
    system, db = await ctx.fresh()
    times: list[float] = []
    waits: list[float] = []
    try:
        async with ctx.workers(system) as workers:
            workers.start([system.worker_argv(CONCURRENCY, 0)])
            await workers.wait_ready()
            workers.go()
            await _one_workflow(system, workers, 120)  # warm-up, and the worker is up
            deadline = time.monotonic() + ctx.sizes["wf_single_cap"]
            while len(times) < ctx.sizes["wf_single"] and (
                not times or time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05 + random.uniform(0, system.poll_interval or 0))
                total, wait = await _one_workflow(system, workers, 60)
                times.append(total)
                if wait is not None:
                    waits.append(wait)
            await workers.stop()
    finally:
        await ctx.done_with(system, db)
    ctx.note("wf_single_samples", len(times))
    figures = {"wf_single10_ms": percentile(times, 50) * 1000}
    if len(waits) == len(times):
        runs = [t - w for t, w in zip(times, waits, strict=True)]
        figures["wf_single10_wait_ms"] = percentile(waits, 50) * 1000
        figures["wf_single10_run_ms"] = percentile(runs, 50) * 1000
    return figures


async def _one_workflow(
    system: System, workers: Workers, timeout: float
) -> tuple[float, float | None]:
    """Seconds from just before the enqueue call to the completion the database recorded, and
    to when a worker took it (None if the system does not record that).

    The end is the timestamp the system wrote with the outcome (its transaction's time), so
    polling for it every 5 ms neither adds its period to the figure nor loads the machine.
    """
    start = time.time()
    workflow_id = await system.start_workflow(10)
    while (finished := await system.workflow_finished_at(workflow_id)) is None:
        if time.time() - start > timeout:
            raise RuntimeError(f"a 10-step workflow did not finish in {timeout} s{workers.tails()}")
        workers.check_alive()
        await asyncio.sleep(0.005)
    try:
        started = await system.workflow_started_at(workflow_id)
    except NotSupported:
        started = None
    return finished - start, None if started is None else started - start


async def _claim_medians(ctx: Context, system: System, label: str) -> list[float]:
    """Per run, the median latency of ``claim_calls`` claims (ms), after a warm-up claim."""
    calls = ctx.sizes["claim_calls"]
    medians = []
    got = 0
    for _ in range(ctx.runs):
        await system.claim_once()  # connections, prepared statements
        latencies: list[float] = []
        # A pathologically slow claim must not stall the benchmark for an hour: past the
        # budget a run stops at 3 calls (the count is in the notes).
        budget = time.monotonic() + ctx.sizes["claim_budget"]
        while len(latencies) < calls and (len(latencies) < 3 or time.monotonic() < budget):
            start = time.perf_counter()
            got = await system.claim_once()
            latencies.append(time.perf_counter() - start)
            if got == 0:
                raise RuntimeError("a claim found nothing with rows pending")
        medians.append(percentile(latencies, 50) * 1000)
        ctx.note(f"{label}_calls", len(latencies))
    ctx.notes["claim_batch"] = got
    return medians


def _claim_extra(ctx: Context) -> int:
    """Rows claimed by every call of every run, so that the backlog stays what it says."""
    return (ctx.sizes["claim_calls"] + 1) * ctx.runs * 10


async def claim(ctx: Context) -> list[dict[str, float]]:
    per_size: dict[int, list[float]] = {}
    for size in ctx.sizes["claim_sizes"]:
        system, db = await ctx.fresh()
        try:
            started = time.perf_counter()
            await system.claim_load(size + _claim_extra(ctx))
            ctx.note(f"claim_load_{size}_s", round(time.perf_counter() - started, 1))
            per_size[size] = await _claim_medians(ctx, system, f"claim_{_label(size)}")
        finally:
            await ctx.done_with(system, db)
    small, large = ctx.sizes["claim_sizes"]
    return [
        {
            f"claim_{_label(small)}_ms": per_size[small][i],
            f"claim_{_label(large)}_ms": per_size[large][i],
            "claim_ratio": per_size[large][i] / per_size[small][i],
        }
        for i in range(ctx.runs)
    ]


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


async def memory(ctx: Context) -> list[dict[str, float]]:
    results = []
    for _ in range(ctx.runs):
        figures = {}
        for concurrency in ctx.sizes["memory_concurrency"]:
            system, db = await ctx.fresh()
            try:
                await system.preload("nap", concurrency * ctx.sizes["memory_jobs_per_slot"])
                await system.settle()
                argv, barrier = system.memory_argv(concurrency)
                async with ctx.workers(system) as workers:
                    workers.start([argv], barrier=barrier)
                    if barrier:
                        await workers.wait_ready()
                        workers.go()
                    await wait_until_zero(
                        system.remaining, ctx.sizes["memory_cap"], workers=workers
                    )
                    # A --burst worker exits by itself once the queue is empty.
                    if barrier or not await workers.wait_exit(5):
                        await workers.stop()
                    rss = workers.procs[0].maxrss_kb
                await _check_failures(system)
            finally:
                await ctx.done_with(system, db)
            if rss is None:
                raise RuntimeError("could not read the worker's peak RSS")
            figures[f"rss_c{concurrency}_mb"] = rss / 1024
        results.append(figures)
    return results


# ---- flow control (issue 12; ours only) ---------------------------------------------------

FLOW_PROCS = 2


async def _drain_pair(
    ctx: Context,
    total: int,
    modes: tuple[str, str],
    load: Callable[[System, str], Awaitable[None]],
) -> list[dict[str, float]]:
    """Drain throughput of two setups of a backlog of ``total``, alternating which goes first."""
    cap = ctx.sizes["limited_cap"]
    results = []
    for run in range(ctx.runs):
        figures = {}
        for mode in modes if run % 2 == 0 else modes[::-1]:
            system, db = await ctx.fresh()
            try:
                await load(system, mode)
                await system.settle()
                trace(f"{total} jobs enqueued ({mode})")
                rate, done, capped = await _throughput(ctx, system, FLOW_PROCS, cap, total)
                await _check_failures(system)
            finally:
                await ctx.done_with(system, db)
            figures[f"drain_{mode}_per_s"] = rate
            ctx.note(f"drain_{mode}_finished", f"{done}/{total}" + (" (capped)" if capped else ""))
        results.append(figures)
    return results


async def drain_limited(ctx: Context) -> list[dict[str, float]]:
    """Drain with a fleet-wide concurrency limit far above what runs, against no limit."""
    total, limit = ctx.sizes["limited_jobs"], ctx.sizes["limited_concurrency"]

    async def load(system: System, mode: str) -> None:
        if mode == "limited":
            await system.limit_queue(concurrency=limit)
        await system.preload("noop", total)

    results = await _drain_pair(ctx, total, ("unlimited", "limited"), load)
    for figures in results:
        figures["drain_limited_ratio"] = (
            figures["drain_limited_per_s"] / figures["drain_unlimited_per_s"]
        )
    return results


async def drain_keys(ctx: Context) -> list[dict[str, float]]:
    """Drain of jobs spread over distinct concurrency keys of limit 1, against no keys."""
    total, keys = ctx.sizes["keys_jobs"], ctx.sizes["keys"]

    async def load(system: System, mode: str) -> None:
        if mode == "keys":
            await system.preload_keyed(total, keys)
        else:
            await system.preload("noop", total)

    results = await _drain_pair(ctx, total, ("nokeys", "keys"), load)
    for figures in results:
        figures["drain_keys_ratio"] = figures["drain_keys_per_s"] / figures["drain_nokeys_per_s"]
    return results


def max_in_window(times_us: list[int], width_us: int) -> int:
    """The most of the (sorted) times in any half-open window [t, t + width)."""
    most = j = 0
    for i, t in enumerate(times_us):
        j = max(j, i)
        while j < len(times_us) and times_us[j] < t + width_us:
            j += 1
        most = max(most, j - i)
    return most


async def rate(ctx: Context) -> list[dict[str, float]]:
    """A queue rate held busy by a backlog: starts in the first ``rate_hold`` seconds.

    The backlog is the rate for one second more than the hold, so that it never runs dry
    within the hold. Admission times are ``started_at`` (set under the rate's lock).
    """
    limit, hold = ctx.sizes["rate_limit"], ctx.sizes["rate_hold"]
    total = limit * (hold + 1)
    second = 1_000_000
    results = []
    for _ in range(ctx.runs):
        system, db = await ctx.fresh()
        try:
            await system.limit_queue(rate=f"{limit}/s")
            await system.preload("noop", total)
            await system.settle()
            trace(f"{total} jobs enqueued, rate {limit}/s")
            _, done, capped = await _throughput(ctx, system, FLOW_PROCS, hold + 30, total)
            if capped:
                raise RuntimeError(f"only {done} of {total} started within {hold + 30} s")
            await _check_failures(system)
            starts = await system.start_times_us()
        finally:
            await ctx.done_with(system, db)
        if len(starts) != total:
            raise RuntimeError(f"{len(starts)} admission times for {total} jobs")
        t0 = starts[0]
        in_hold = sum(1 for t in starts if t < t0 + hold * second)
        per_second = [
            sum(1 for t in starts if t0 + k * second <= t < t0 + (k + 1) * second)
            for k in range(hold)
        ]
        ctx.note("rate_per_second", per_second)
        results.append(
            {
                "rate_achieved_per_s": in_hold / hold,
                "rate_achieved_ratio": in_hold / hold / limit,
                "rate_max_1s_window": float(max_in_window(starts, second)),
                "rate_min_second": float(min(per_second)),
            }
        )
    return results


async def claim_blocked(ctx: Context) -> list[dict[str, float]]:
    """Claim latency with executions held behind a busy concurrency key, against none."""
    free, blocked = ctx.sizes["claim_free_rows"], ctx.sizes["claim_blocked_rows"]
    per_mode: dict[str, list[float]] = {}
    for mode in ("unblocked", "blocked"):
        system, db = await ctx.fresh()
        try:
            started = time.perf_counter()
            await system.claim_load_blocked(
                free + _claim_extra(ctx), blocked if mode == "blocked" else 0
            )
            ctx.note(f"claim_{mode}_load_s", round(time.perf_counter() - started, 1))
            per_mode[mode] = await _claim_medians(ctx, system, f"claim_{mode}")
        finally:
            await ctx.done_with(system, db)
    return [
        {
            "claim_unblocked_ms": per_mode["unblocked"][i],
            "claim_blocked_ms": per_mode["blocked"][i],
            "claim_blocked_ratio": per_mode["blocked"][i] / per_mode["unblocked"][i],
        }
        for i in range(ctx.runs)
    ]


# ---- waiting for results (issue 13; ours only) -------------------------------------------


async def _enqueue_latencies(
    ctx: Context, system: System, n: int, cap: float
) -> tuple[list[float], int]:
    """``n`` enqueues one at a time (ms each); stops at the first that takes over ``cap`` s
    (then the count done so far is returned with it: the rest would block as well)."""
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        try:
            await asyncio.wait_for(system.enqueue("noop", float(i)), cap)
        except TimeoutError:
            return latencies, i
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies, n


async def waiters(ctx: Context) -> list[dict[str, float]]:
    """Enqueue latency with many ``get_result`` waiters in the same process, against none.

    The waiters wait on pending jobs (no worker runs yet; the jobs are enqueued in both
    modes); the enqueues go through the same default store, one at a time. Then two worker
    processes run everything, and every waiter's result must arrive.
    """
    n, count = ctx.sizes["waiters"], ctx.sizes["waiters_enqueues"]
    block_cap, cap = ctx.sizes["waiters_block_cap"], ctx.sizes["waiters_cap"]
    modes = ("idle", "waiting")
    results = []
    for run in range(ctx.runs):
        figures: dict[str, float] = {}
        for mode in modes if run % 2 == 0 else modes[::-1]:
            system, db = await ctx.fresh()
            tasks: list[asyncio.Task[Any]] = []
            try:
                await _enqueue_latencies(ctx, system, 20, block_cap)  # connections, statements
                # The same pending jobs in both modes: only the waiters differ.
                ids = await system.enqueue_ids("noop", n)
                if mode == "waiting":
                    tasks = [asyncio.create_task(system.wait_result(i, 600)) for i in ids]
                    await system.waiters_settled(n)
                    trace(f"{n} waiters waiting")
                latencies, done = await _enqueue_latencies(ctx, system, count, block_cap)
                trace(f"{done} of {count} enqueues ({mode})")
                if done < count:
                    ctx.note(
                        f"enqueue_{mode}_blocked",
                        f"enqueue {done + 1} of {count} still waiting after {block_cap} s",
                    )
                    figures[f"enqueue_{mode}_p50_ms"] = block_cap * 1000
                    figures[f"enqueue_{mode}_p99_ms"] = block_cap * 1000
                else:
                    figures[f"enqueue_{mode}_p50_ms"] = percentile(latencies, 50)
                    figures[f"enqueue_{mode}_p99_ms"] = percentile(latencies, 99)
                if tasks:
                    arrived, seconds = await _results_arrive(ctx, system, tasks, cap)
                    figures["waiters_results"] = float(arrived)
                    figures["waiters_results_s"] = seconds
                    ctx.note("waiters_results", f"{arrived}/{n} in {seconds:.1f} s")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await ctx.done_with(system, db)
        for q in ("p50", "p99"):
            figures[f"waiters_{q}_ratio"] = (
                figures[f"enqueue_waiting_{q}_ms"] / figures[f"enqueue_idle_{q}_ms"]
            )
        results.append(figures)
    return results


async def _results_arrive(
    ctx: Context, system: System, tasks: list[asyncio.Task[Any]], cap: float
) -> tuple[int, float]:
    """Run two workers until every waiter has its result (or ``cap`` s); (arrived, seconds)."""
    ctx.marks.drain("first")
    async with ctx.workers(system) as workers:
        workers.start([system.worker_argv(CONCURRENCY, i) for i in range(FLOW_PROCS)])
        await workers.wait_ready()
        start = time.perf_counter()
        workers.go()
        await asyncio.wait(tasks, timeout=cap)
        seconds = time.perf_counter() - start
        await workers.stop()
    arrived = sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception() is None)
    return arrived, seconds


class _Probe:
    """Claims of 10 on a queue of its own, timed, every 20 ms while it runs."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.latencies: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            got = await self.system.probe_claim()
            self.latencies.append((time.perf_counter() - start) * 1000)
            if got == 0:
                raise RuntimeError("the claim probe ran out of rows")
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.latencies = []
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> list[float]:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.latencies


async def _produce(system: System, rate: int, counter: list[int]) -> None:
    """Enqueue ``rate`` no-op jobs a second, in tenths."""
    tick = time.monotonic()
    while True:
        await system.enqueue_many("noop", [0.0] * (rate // 10))
        counter[0] += rate // 10
        tick += 0.1
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


async def retention(ctx: Context) -> list[dict[str, float]]:
    """Pruning a backlog of finished rows under a steady load, against the same load without.

    One run whatever ``--runs`` says: loading millions of rows takes minutes.
    """
    import os

    rows = int(os.environ.get("BENCH_RETENTION_ROWS", ctx.sizes["retention_rows"]))
    rate = int(os.environ.get("BENCH_RETENTION_RATE", ctx.sizes["retention_rate"]))
    keep, cap = ctx.sizes["retention_keep"], ctx.sizes["retention_cap"]
    phase = int(os.environ.get("BENCH_RETENTION_PHASE", ctx.sizes["retention_phase"]))
    system, db = await ctx.fresh()
    s: Any = system
    figures: dict[str, float] = {"retention_rows": float(rows), "retention_rate": float(rate)}
    try:
        started = time.perf_counter()
        await s.retention_load(rows)
        ctx.notes["retention_load_s"] = round(time.perf_counter() - started, 1)
        # Claims of the probe at 50/s for every phase, 10 rows each.
        await s.retention_probe(int((2 * phase + cap) * 50 * 10 * 1.2))
        before = await s.retention_stats(keep)
        trace(f"loaded: {before}")
        figures["executions_mb_loaded"] = before["executions_bytes"] / 2**20
        figures["steps_mb_loaded"] = before["steps_bytes"] / 2**20
        probe = _Probe(system)
        produced = [0]
        producer = asyncio.create_task(_produce(system, rate, produced))
        samples: list[dict[str, float]] = []
        try:
            # Without pruning: the same load and the same claims.
            forever = {"WORKFLOWS_RETENTION": "forever", "WORKFLOWS_RETENTION_FAILED": "forever"}
            async with Workers(ctx.marks, {**system.worker_env(), **forever}) as workers:
                workers.start([system.worker_argv(CONCURRENCY, i) for i in range(2)])
                await workers.wait_ready()
                workers.go()
                await asyncio.sleep(5)  # past the start
                n0, t0 = produced[0], time.monotonic()
                probe.start()
                await asyncio.sleep(phase)
                without = await probe.stop()
                figures["load_enqueued_per_s"] = (produced[0] - n0) / (time.monotonic() - t0)
                workers.check_alive()
                await workers.stop()
            pruning = {
                "WORKFLOWS_RETENTION": f"{keep}s",
                "WORKFLOWS_RETENTION_FAILED": f"{keep}s",
            }
            async with Workers(ctx.marks, {**system.worker_env(), **pruning}) as workers:
                workers.start([system.worker_argv(CONCURRENCY, i) for i in range(2)])
                await workers.wait_ready()
                first = await s.retention_stats(keep)
                workers.go()
                t0 = time.monotonic()
                probe.start()
                # The backlog: until what is past the retention is about what the load adds in
                # one heartbeat interval (the leader's pace) and a half.
                while True:
                    await asyncio.sleep(5)
                    workers.check_alive()
                    now = await s.retention_stats(keep)
                    samples.append({"t": time.monotonic() - t0, **now})
                    trace(f"pruning: {now}")
                    if now["eligible"] <= rate * 7.5 or time.monotonic() - t0 > cap:
                        break
                during = await probe.stop()
                drained = time.monotonic() - t0
                last = samples[-1]
                figures["prune_backlog_s"] = drained
                # From the first sample that saw deletes (the leader takes the lead, and the
                # statistics lag, in the first seconds) to the last of the backlog.
                going = next(x for x in samples if x["deleted"] > first["deleted"])
                figures["prune_rows_per_s"] = (
                    (last["deleted"] - going["deleted"]) / (last["t"] - going["t"])
                    if last is not going
                    else (last["deleted"] - first["deleted"]) / drained
                )
                ctx.notes["retention_backlog_left"] = last["eligible"]
                # The steady state: pruning keeps up with the load; sizes should stay flat.
                steady_from = last
                for _ in range(max(1, (2 * phase) // 5)):
                    await asyncio.sleep(5)
                    now = await s.retention_stats(keep)
                    samples.append({"t": time.monotonic() - t0, **now})
                    trace(f"steady: {now}")
                workers.check_alive()
                steady_to = samples[-1]
                await workers.stop()
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        figures["executions_mb_after_backlog"] = steady_from["executions_bytes"] / 2**20
        figures["executions_mb_end"] = steady_to["executions_bytes"] / 2**20
        figures["steps_mb_end"] = steady_to["steps_bytes"] / 2**20
        figures["steady_growth_ratio"] = (
            steady_to["executions_bytes"] / steady_from["executions_bytes"]
        )
        figures["steady_pending_end"] = steady_to["backlog"]
        # Whether the workers kept up with the load: pending jobs added per second.
        figures["pending_growth_per_s"] = (steady_to["backlog"] - samples[0]["backlog"]) / (
            steady_to["t"] - samples[0]["t"]
        )
        for label, values in (("without", without), ("during", during)):
            figures[f"claim_p50_ms_{label}"] = percentile(values, 50)
            figures[f"claim_p99_ms_{label}"] = percentile(values, 99)
        for q in ("p50", "p99"):
            figures[f"claim_{q}_ratio"] = (
                figures[f"claim_{q}_ms_during"] / figures[f"claim_{q}_ms_without"]
            )
        ctx.notes["retention_samples"] = [
            {k: round(v, 1) for k, v in sample.items()} for sample in samples
        ]
    finally:
        await ctx.done_with(system, db)
    return [figures]


# ---- dashboard (issue 14; ours only) --------------------------------------------------------

DASHBOARD_BUDGET_MS = 300.0
DASHBOARD_WARMUP = 3
DEEP_PAGE = 20


@dataclass
class _Timed:
    status: int
    location: str | None
    body: str
    server_ms: float
    client_ms: float


class _Browser:
    """One keep-alive HTTP/1.1 connection to the dashboard, as a browser tab holds one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> _Timed:
        start = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        client_ms = (time.perf_counter() - start) * 1000
        timing = response.getheader("Server-Timing") or ""
        match = re.search(r"\bapp;dur=([0-9.]+)", timing)
        if match is None:
            raise RuntimeError(f"GET {path}: no Server-Timing app;dur (got {timing!r})")
        return _Timed(
            response.status,
            response.getheader("Location"),
            body.decode(errors="replace"),
            float(match[1]),
            client_ms,
        )

    def close(self) -> None:
        self.conn.close()


def _next_link(html_text: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next">', html_text)
    return html.unescape(match[1]) if match else None


def _dashboard_pages(
    targets: dict[str, Any], deep: str
) -> dict[str, tuple[str, list[tuple[str, int, str | None]]]]:
    """page -> (what it is, the requests it cycles through: (path, status, Location))."""
    from benchmarks.ours import BIG_WORKFLOW, RARE_NAME

    def one(path: str) -> list[tuple[str, int, str | None]]:
        return [(path, 200, None)]

    return {
        "overview": ("`/`: queue figures, 15-minute charts, workers, running", one("/")),
        "list": ("`/executions`: the newest page (50 rows)", one("/executions")),
        "list_queue": ("`/executions?queue=emails` (35% of jobs)", one("/executions?queue=emails")),
        "list_failed": ("`/executions?status=failed` (5%)", one("/executions?status=failed")),
        "list_running": (
            "`/executions?status=running` (51 rows: 31 jobs, 20 activities of workflows "
            "started over the last day)",
            one("/executions?status=running"),
        ),
        "list_workflows": (
            "`/executions?kind=workflow` (10% of roots)",
            one("/executions?kind=workflow"),
        ),
        "list_name": (
            "`/executions?name=app.webhooks:deliver` (25% of jobs)",
            one("/executions?" + urlencode({"name": "app.webhooks:deliver"})),
        ),
        "list_rare_name": (
            f"`/executions?name={RARE_NAME}` (0.1% of jobs: a long walk for 50 rows)",
            one("/executions?" + urlencode({"name": RARE_NAME})),
        ),
        "list_since": ("`/executions?since=1h`", one("/executions?since=1h")),
        "list_failed_reports": (
            "`/executions?queue=reports&status=cancelled` (0.1% of rows: two rare filters)",
            one("/executions?queue=reports&status=cancelled"),
        ),
        "list_no_match": (
            "`/executions?queue=nosuch` (a name no row has: the whole walk)",
            one("/executions?queue=nosuch"),
        ),
        "list_deep": (f"page {DEEP_PAGE} of `/executions`, by its `Older` links", one(deep)),
        "search_id": (
            "`/executions?q=<16 hex digits>`: id prefix -> 303",
            [
                ("/executions?" + urlencode({"q": prefix}), 303, f"/executions/{full}")
                for prefix, full in targets["prefixes"]
            ],
        ),
        "search_key": (
            "`/executions?q=<idempotency key>` -> 303",
            [
                ("/executions?" + urlencode({"q": key}), 303, f"/executions/{full}")
                for key, full in targets["keys"]
            ],
        ),
        "job": (
            "`/executions/<id>`: a job (a different one each time)",
            [(f"/executions/{i}", 200, None) for i in targets["jobs"]],
        ),
        "workflow": (
            f"`/executions/<id>`: a {targets['workflow_steps']}-step workflow "
            f"({BIG_WORKFLOW}) with its timeline and signals",
            [(f"/executions/{i}", 200, None) for i in targets["workflows"]],
        ),
        "history_json": (
            "`/executions/<id>/history.json` of that workflow",
            [(f"/executions/{i}/history.json", 200, None) for i in targets["workflows"]],
        ),
        "schedules": ("`/schedules`", one("/schedules")),
    }


def _measure_pages(
    port: int,
    pages: dict[str, tuple[str, list[tuple[str, int, str | None]]]],
    rounds: int,
    beat: Callable[[], None],
) -> dict[str, tuple[list[float], list[float]]]:
    """Round-robin over the pages (so each page meets the caches as the others left them):
    warm-up rounds, then ``rounds`` timed ones; (server ms, client ms) per page."""
    browser = _Browser(port)
    timed: dict[str, tuple[list[float], list[float]]] = {p: ([], []) for p in pages}
    try:
        for n in range(DASHBOARD_WARMUP + rounds):
            beat()
            for page, (_, requests) in pages.items():
                path, status, location = requests[n % len(requests)]
                got = browser.get(path)
                if got.status != status or (location is not None and got.location != location):
                    raise RuntimeError(
                        f"GET {path}: {got.status} {got.location or ''} (expected {status} "
                        f"{location or ''}): {got.body[:300]}"
                    )
                if n >= DASHBOARD_WARMUP:
                    timed[page][0].append(got.server_ms)
                    timed[page][1].append(got.client_ms)
    finally:
        browser.close()
    return timed


async def dashboard(ctx: Context) -> list[dict[str, float]]:
    """Every page of a real `workflows dashboard` process on a table of a million executions:
    server time (its Server-Timing header) and round trip, per page.

    One run whatever ``--runs`` says: loading the table takes minutes.
    """
    import os

    from workflows_postgres.cluster import free_port

    rows = int(os.environ.get("BENCH_DASHBOARD_ROWS", ctx.sizes["dashboard_rows"]))
    days = float(os.environ.get("BENCH_DASHBOARD_DAYS", ctx.sizes["dashboard_days"]))
    rounds = ctx.sizes["dashboard_requests"]
    system, db = await ctx.fresh()
    s: Any = system
    figures: dict[str, float] = {}
    try:
        started = time.perf_counter()
        loaded = await s.dashboard_load(rows, days)
        ctx.notes["dashboard_days"] = days
        ctx.notes["dashboard_seed_s"] = round(time.perf_counter() - started, 1)
        trace(f"dashboard: loaded {loaded}")
        figures.update({f"dashboard_{k}": v for k, v in loaded.items()})
        targets = await s.dashboard_targets(DASHBOARD_WARMUP + rounds)
        ctx.notes["dashboard_ids_per_short_id"] = round(targets["ids_per_short_id"], 1)
        port = free_port()
        async with Workers(ctx.marks, system.worker_env()) as procs:
            procs.start([s.dashboard_argv(port)], barrier=False)
            browser = _Browser(port)
            deadline = time.monotonic() + 60
            while True:
                procs.check_alive()
                try:
                    if (await asyncio.to_thread(browser.get, "/healthz")).status == 200:
                        break
                except OSError:
                    browser.close()
                    browser = _Browser(port)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not answer in 60 s{procs.tails()}")
                await asyncio.sleep(0.2)
            # Page DEEP_PAGE of the list, by the links a reader follows.
            deep = "/executions"
            for _ in range(DEEP_PAGE - 1):
                following = _next_link((await asyncio.to_thread(browser.get, deep)).body)
                if following is None:
                    raise RuntimeError(f"no page after {deep}")
                deep = following
            browser.close()
            pages = _dashboard_pages(targets, deep)
            ctx.notes["dashboard_pages"] = {page: what for page, (what, _) in pages.items()}
            loop = asyncio.get_running_loop()

            def beat() -> None:
                # The seeded workers stay alive on the overview, as running ones would.
                asyncio.run_coroutine_threadsafe(s.dashboard_heartbeat(), loop).result(30)

            started = time.perf_counter()
            try:
                timed = await asyncio.to_thread(_measure_pages, port, pages, rounds, beat)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}{procs.tails(40)}") from None
            ctx.notes["dashboard_measure_s"] = round(time.perf_counter() - started, 1)
            procs.check_alive()
        over = 0
        for page, (server, client) in timed.items():
            figures[f"{page}_server_p50_ms"] = percentile(server, 50)
            figures[f"{page}_server_p95_ms"] = percentile(server, 95)
            figures[f"{page}_server_max_ms"] = max(server)
            figures[f"{page}_client_p50_ms"] = percentile(client, 50)
            figures[f"{page}_client_p95_ms"] = percentile(client, 95)
            over += figures[f"{page}_server_p95_ms"] >= DASHBOARD_BUDGET_MS
            trace(
                f"{page}: server p50 {percentile(server, 50):.1f} p95 "
                f"{percentile(server, 95):.1f} max {max(server):.1f} ms"
            )
        figures["dashboard_pages_over_budget"] = float(over)
    finally:
        await ctx.done_with(system, db)
    return [figures]


SCENARIOS: dict[str, Callable[[Context], Awaitable[list[dict[str, float]]]]] = {
    "enqueue": enqueue,
    "producers": producers,
    "drain": drain,
    "drain_scale": drain_scale,
    "pickup": pickup,
    "workflows": workflows,
    "claim": claim,
    "memory": memory,
    "drain_limited": drain_limited,
    "drain_keys": drain_keys,
    "rate": rate,
    "claim_blocked": claim_blocked,
    "waiters": waiters,
    "retention": retention,
    "dashboard": dashboard,
}
