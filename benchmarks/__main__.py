"""``python -m benchmarks [--quick] [--only S,...] [--systems A,...] [--runs N] [--out DIR]``.

Starts a PostgreSQL from the local binaries (as the tests do, but with durable defaults), runs
every scenario for every system, each (scenario, system) in a subprocess of its own, then the
pgbench ceiling, and writes results.md, results.json and results.png to the out folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.common import PREFETCH, ROOT, summarize

SCENARIOS = [
    "enqueue",
    "producers",
    "drain",
    "drain_scale",
    "pickup",
    "workflows",
    "claim",
    "memory",
    "drain_limited",
    "drain_keys",
    "rate",
    "claim_blocked",
    "waiters",
    "retention",
    "dashboard",
]
# Flow control (issue 12), operations (issue 13) and the dashboard (issue 14): measured for
# this project alone (the ratios are to itself).
OURS_ONLY = {
    "drain_limited",
    "drain_keys",
    "rate",
    "claim_blocked",
    "waiters",
    "retention",
    "dashboard",
}

# name -> (Python package it needs, options for its module)
SYSTEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "ours": ("workflows_worker", {}),
    "procrastinate": ("procrastinate", {}),
    "pgqueuer": ("pgqueuer", {}),
    "dbos": ("dbos", {"poll": 1.0}),
    "dbos-10ms": ("dbos", {"poll": 0.01}),
    "absurd": ("absurd_sdk", {}),
    "absurd-fast": ("absurd_sdk", {"poll": 0.0}),
}

# Systems measured on some scenarios only (issue 16): Absurd on workflows (the closest peer
# on workflow latency), the new enqueue and drain scenarios against PgQueuer (the target's).
ONLY_FOR: dict[str, set[str]] = {
    "absurd": {"workflows"},
    "absurd-fast": {"workflows"},
}
PEERS_OF: dict[str, set[str]] = {
    "producers": {"ours", "pgqueuer"},
    "drain_scale": {"ours", "pgqueuer"},
}

# --quick without --systems: the reduced set, what the targets of issue 5 compare.
QUICK_SET: dict[str, list[str]] = {
    "enqueue": ["ours", "pgqueuer"],
    "producers": ["ours", "pgqueuer"],
    "drain": ["ours", "procrastinate", "pgqueuer"],
    "drain_scale": ["ours", "pgqueuer"],
    "pickup": ["ours"],
    "workflows": ["ours", "dbos-10ms", "absurd", "absurd-fast"],
    "claim": ["ours"],
    "memory": ["ours"],
    "drain_limited": ["ours"],
    "drain_keys": ["ours"],
    "rate": ["ours"],
    "claim_blocked": ["ours"],
    "waiters": ["ours"],
    "retention": ["ours"],
    "dashboard": ["ours"],
}

SYSTEM_NOTES = {
    "ours": "this project, `currant worker` semantics (embedded `Worker`; the memory scenario "
    "runs the `currant worker` command itself)",
    "procrastinate": "defaults (LISTEN/NOTIFY on), `run_worker_async(concurrency=N)`",
    "pgqueuer": "one asyncpg connection, `PgQueuer.run(max_concurrent_tasks=N, batch_size=N/2)`",
    "dbos": "DBOS Transact, jobs are workflows on a queue (`worker_concurrency=N`), queue polling "
    "at its default 1 s",
    "dbos-10ms": "DBOS Transact, queue `polling_interval_sec=0.01`",
    "absurd": "Absurd (absurd-sdk, schema from absurdctl of the same release), "
    "`AsyncAbsurd.start_worker(concurrency=N)` at its default `poll_interval` (0.25 s); steps are "
    "`ctx.step` checkpoints in the task's own run; workflows only",
    "absurd-fast": "Absurd, `poll_interval=0` (the lowest the SDK takes: an idle worker polls "
    "`claim_task` back to back), its fast mode; workflows only",
}

SCENARIO_NOTES = {
    "enqueue": "One client, a fresh database, no caller transaction. One at a time: "
    "{enqueue_one} no-op jobs, each awaited before the next (ours `await f.queue()`, "
    "Procrastinate `defer_async`, PgQueuer `Queries.enqueue`, DBOS "
    "`DBOSClient.enqueue_async`), then {enqueue_one} through the blocking client (ours "
    "`f.queue_sync()`, PgQueuer `SyncQueries.enqueue` on a psycopg connection); client CPU "
    "per call: the benchmark process's CPU time (`time.process_time()`, every thread) over "
    "those calls, divided by their number. Bulk: {enqueue_bulk_batches} calls of "
    "{enqueue_bulk_batch} jobs, one round trip each (ours `.queue_many()`, Procrastinate "
    "`batch_defer_async`, PgQueuer `Queries.enqueue` with lists).",
    "producers": "{producers} concurrent producers, each enqueueing {producer_jobs} no-op jobs "
    "one at a time (awaited before the next): as asyncio tasks in one process (ours "
    "`await f.queue()` on its default store, a pool of 10; PgQueuer `Queries` on an asyncpg "
    "pool of its default size, 10), and spread over 4 processes (13+13+12+12 tasks) started "
    "together. Jobs/s from the first enqueue to the last; latency of each enqueue call, p50 "
    "and p99 over all of them. The two modes alternate which goes first.",
    "drain": "{drain_jobs} no-op jobs enqueued up front; worker processes (concurrency 10 each) "
    "start together. Measured from the first job's first line to the moment nothing is "
    "left unfinished (polled every 50 ms), capped at {drain_cap} s.",
    "drain_scale": "One worker process (concurrency 10) on a backlog of each size "
    "({drain_scale_sizes}; BENCH_DRAIN_SIZES=5000,50000 sets them), enqueued up front with the "
    "system's bulk API, ANALYZEd; measured as the drain scenario, capped at {drain_scale_cap} "
    "s. Ours runs each size twice: with its defaults, and claiming ahead of free slots "
    "(WORKFLOWS_WORKER_PREFETCH={prefetch}, opt-in: `_prefetch`). Issue 16: at least 1.5x "
    "PgQueuer, and at least the pgbench ceiling of the same run.",
    "pickup": "One idle worker (concurrency 10); {pickup_jobs} jobs enqueued one at a time, the "
    "next 10 ms after the previous one started (plus a random pause of up to one "
    "polling period for a polling worker, so enqueues do not always land just after a "
    "poll), capped at {pickup_cap} s. Latency: from just before the enqueue call to "
    "the job function's first line (`time.time()` on both sides, same machine).",
    "workflows": "{wf10} workflows of 10 no-op steps, then {wf100} of 100, enqueued up front; "
    "one worker process, concurrency 10; from the first workflow's first line to "
    "all finished (capped at {wf_cap} s). Per-step cost ratio: (time per step in "
    "100-step workflows) / (time per step in 10-step workflows). One 10-step "
    "workflow: enqueued on an idle worker, from just before the enqueue call to the "
    "completion time the system wrote (ours `finished_at`, DBOS `completed_at`, Absurd its "
    "run's `completed_at`); median of {wf_single}. A polling worker is bimodal (the poll "
    "comes just after the enqueue, or up to a period later): each enqueue waits 50 ms plus a "
    "random part of one polling period after the previous workflow ended, so they land at a "
    "uniform phase of its polls; where the system records when a worker took the workflow "
    "(ours `started_at`, Absurd the run's `started_at`), the time splits into the wait for a "
    "worker and the run.",
    "claim": "Pending rows bulk-inserted with SQL, then VACUUM ANALYZE; median latency of "
    "{claim_calls} claim calls per run: ours `PostgresStore.claim(..., 10)`, "
    "Procrastinate `JobManager.fetch_job` (its worker's query, one job per call), "
    "PgQueuer `Queries.dequeue(batch_size=10)`. Backlogs: {claim_sizes}.",
    "memory": "Peak RSS (ru_maxrss from wait4) of one worker process that runs "
    "{memory_jobs_per_slot} x concurrency jobs sleeping 50 ms each (so every slot "
    "is used), capped at {memory_cap} s.",
    "drain_limited": "The overhead of the admission check. {limited_jobs} no-op jobs, 2 worker "
    "processes (concurrency 10 each), as the drain scenario, once with no limit and once with "
    "the queue's fleet-wide concurrency set to {limited_concurrency} (far above the 20 that "
    "can run), in alternating order; ratio: limited / unlimited jobs/s, per run.",
    "drain_keys": "{keys_jobs} no-op jobs on {keys} distinct concurrency keys of limit 1 (job i "
    "on key i mod {keys}, so each key's jobs run one after the other), 2 worker processes "
    "(concurrency 10 each), against the same jobs with no key; ratio: keys / no keys.",
    "rate": "The queue's rate set to {rate_limit}/s, then {rate_limit} x ({rate_hold} + 1) no-op "
    "jobs enqueued, 2 worker processes (concurrency 10 each, default polling). From the "
    "admission times (`started_at`, set under the rate's lock): starts in the first "
    "{rate_hold} s after the first one, per second (achieved rate; ratio to the limit), the "
    "most in any sliding 1 s window (the limit: never above it), and the fewest in one of "
    "those {rate_hold} whole seconds.",
    "claim_blocked": "Median latency of {claim_calls} `PostgresStore.claim(..., 10)` calls "
    "with {claim_free_rows} claimable pending rows, alone and with {claim_blocked_rows} more "
    "pending rows on one concurrency key whose slot a running execution holds (held: older "
    "and of a higher priority than the claimable rows, bulk-inserted with SQL); ratio: "
    "blocked / unblocked.",
    "waiters": "{waiters} `get_result` waiters (asyncio tasks) in the benchmark's process on "
    "{waiters} pending jobs, while the same process enqueues {waiters_enqueues} jobs one at a time "
    "through the same default store (pool of 10); against the same enqueues with the same "
    "pending jobs and no waiter, "
    "in alternating order. An enqueue that takes over {waiters_block_cap} s counts as blocked "
    "(its figures show that cap). Then 2 worker processes run the jobs: every waiter's result "
    "must arrive (within {waiters_cap} s). Ratio: waiting / idle latency.",
    "retention": "One run. {retention_rows} finished roots (BENCH_RETENTION_ROWS) over the last "
    "60 days, every 50th a workflow with 2 activities and their steps, bulk-inserted with SQL; "
    "then {retention_rate} no-op jobs/s enqueued and drained by 2 worker processes, first "
    "without retention, then with WORKFLOWS_RETENTION={retention_keep}s (the leader prunes the "
    "backlog, then keeps up). Claim latency: a probe's `PostgresStore.claim(..., 10)` on a queue "
    "of its own every 20 ms, p50/p99 without pruning and while the backlog is pruned; sizes: "
    "pg_total_relation_size after the backlog and {retention_phase}x2 s later.",
    "dashboard": (
        "One run. About {dashboard_rows:,} executions (BENCH_DASHBOARD_ROWS) bulk-inserted with "
        "SQL as a busy system leaves them: created over the last {dashboard_days:g} days "
        "(BENCH_DASHBOARD_DAYS) up to 20 s ago (so the 15-minute charts have every minute), one "
        "root in ten a workflow with three activities (their own rows), a version marker, a timer "
        "and a signal wait, six job queues, 93% completed, 5% failed, 2% cancelled, one job in ten "
        "with an idempotency key; 20 workflows of 50 steps; two schedules and their runs; four "
        "live workers with 30 jobs running; 2,300 pending, 150 held behind a concurrency key, 300 "
        "workflows waiting; VACUUM ANALYZE. Then a real `workflows dashboard` process: each page "
        "requested in turn over one keep-alive connection, 3 warm-up rounds then "
        "{dashboard_requests} timed ones (the pages that take an id cycle through different ones). "
        "Server: the response's Server-Timing (the time spent in the app, rendering included); "
        "client: the round trip. Budget (issue 14): 300 ms at the server."
    ),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[2]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for development, a few minutes: smaller sizes and time caps, "
        "and (unless --systems is given) only the systems each target "
        "compares with",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"scenarios, comma-separated (default: all: {','.join(SCENARIOS)}; "
        "'ceiling' is the pgbench ceiling, always run unless --only omits it)",
    )
    parser.add_argument(
        "--systems", default=None, help=f"systems, comma-separated (default: {','.join(SYSTEMS)})"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (at least 3)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="folder for results.md/json/png (default: benchmarks/results)",
    )
    parser.add_argument(
        "--dsn",
        help="an existing server's admin URL instead of starting one "
        "(a superuser: databases are created and dropped)",
    )
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs: every figure is the median of at least 3 runs")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.only == parser.get_default("only"):
        only.append("ceiling")
    unknown = [s for s in only if s not in [*SCENARIOS, "ceiling"]]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}: choose from {[*SCENARIOS, 'ceiling']}")
    args.matrix = None
    if args.systems is None:
        if args.quick:
            args.matrix = QUICK_SET
            args.systems = ",".join(sorted({s for v in QUICK_SET.values() for s in v}))
        else:
            args.systems = ",".join(SYSTEMS)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}: choose from {list(SYSTEMS)}")
    if "ours" not in systems:
        systems.insert(0, "ours")  # every ratio is to ours
    args.only = only
    args.systems = [s for s in SYSTEMS if s in systems]
    return args


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[tuple[str, Path | None, str]]:
    """An admin DSN, the server's bin folder (for pgbench) and its version."""
    if dsn:
        yield dsn, None, _server_version(dsn)
        return
    from workflows_postgres.cluster import LocalCluster, free_port, server_version

    tmp = Path(tempfile.mkdtemp(prefix="currant-bench-"))
    # mkdtemp makes it 0700; as root the server runs as `postgres` and must enter it.
    tmp.chmod(0o755)
    cluster = LocalCluster(tmp / "data", host="127.0.0.1", port=free_port(), fast=False)
    try:
        cluster.init()
        cluster.start()
        yield cluster.dsn("postgres"), cluster.bindir, str(server_version(cluster.bindir))
    finally:
        try:
            cluster.stop("fast")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _server_version(dsn: str) -> str:
    import asyncpg

    async def get() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    return asyncio.run(get())


def run_one(
    system: str, scenario: str, admin_dsn: str, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    package, options = SYSTEMS[system]
    if importlib.util.find_spec(package) is None:
        return {"error": f"{package} is not installed (nox -s bench installs the peers)"}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    argv = [
        sys.executable,
        "-m",
        "benchmarks.runner",
        system,
        scenario,
        admin_dsn,
        str(out),
        str(args.runs),
        "1" if args.quick else "0",
        json.dumps(options),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    timeout = 300 if args.quick else 1800
    log = logs / f"{scenario}-{system}.log"
    try:
        with open(log, "wb") as log_file:
            subprocess.run(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        text = out.read_text()
        result: dict[str, Any] = (
            json.loads(text) if text else {"error": f"the runner wrote nothing (see {log})"}
        )
    except subprocess.TimeoutExpired:
        result = {"error": f"timed out after {timeout} s (see {log})"}
    finally:
        out.unlink(missing_ok=True)
    return result


def summarize_runs(result: dict[str, Any]) -> dict[str, Any]:
    if "runs" not in result:
        return result
    keys: list[str] = []
    for run in result["runs"]:
        keys += [k for k in run if k not in keys]
    figures = {}
    for key in keys:
        values = [run[key] for run in result["runs"] if key in run]
        figures[key] = summarize(values)
    summarized = {"figures": figures}
    if result.get("notes"):
        summarized["notes"] = result["notes"]
    return summarized


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "currant",
        "procrastinate",
        "pgqueuer",
        "dbos",
        "absurd-sdk",
        "absurdctl",
        "asyncpg",
        "psycopg",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    out["python"] = platform.python_version()
    return out


def revision() -> str:
    """The commit measured, and whether the packages differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in packages/" if dirty else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    return f"{os.cpu_count()} CPUs ({cpu}){mem}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from benchmarks import scenarios

    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "quick" if args.quick else "full",
            "runs": args.runs,
            "command": shlex.join(["python", "-m", "benchmarks", *argv]),
            "machine": machine(),
            "revision": revision(),
            "versions": versions(),
            "sizes": sizes,
        },
        "systems": args.systems,
        "system_notes": {s: SYSTEM_NOTES[s] for s in args.systems},
        "scenario_notes": {
            k: v.format(**sizes, prefetch=PREFETCH) for k, v in SCENARIO_NOTES.items()
        },
        "scenarios": {},
    }
    with server(args.dsn) as (admin_dsn, bindir, pg_version):
        results["meta"]["postgres"] = pg_version
        for scenario in [s for s in SCENARIOS if s in args.only]:
            results["scenarios"][scenario] = {}
            for system in args.systems:
                if args.matrix is not None and system not in args.matrix[scenario]:
                    continue
                if scenario in OURS_ONLY and system != "ours":
                    continue
                if system in ONLY_FOR and scenario not in ONLY_FOR[system]:
                    continue
                if scenario in PEERS_OF and system not in PEERS_OF[scenario]:
                    continue
                t = time.monotonic()
                print(f"{scenario:<10} {system:<14}", end=" ", flush=True)
                result = summarize_runs(run_one(system, scenario, admin_dsn, args, logs))
                results["scenarios"][scenario][system] = result
                status = (
                    "n/a"
                    if result.get("n/a")
                    else f"error: {result['error'].splitlines()[0][:100]}"
                    if "error" in result
                    else "ok"
                )
                print(f"{time.monotonic() - t:6.1f} s  {status}", flush=True)
        if "ceiling" in args.only:
            from benchmarks import ceiling

            print(f"{'ceiling':<10} {'pgbench':<14}", end=" ", flush=True)
            t = time.monotonic()
            try:
                raw = asyncio.run(
                    ceiling.run(
                        admin_dsn,
                        bindir,
                        args.runs,
                        2 if args.quick else 10,
                        sizes["floor_samples"],
                    )
                )
                result = summarize_runs(raw)
                print(f"{time.monotonic() - t:6.1f} s  ok", flush=True)
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{time.monotonic() - t:6.1f} s  error: {exc}", flush=True)
            results["scenarios"]["ceiling"] = {"postgres": result}
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    written = report.write(args.out, results)
    print(f"\n{results['meta']['elapsed_s']} s; wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
