"""Seeing the fleet: workers, queues' figures, listing with filters and pages, id prefixes and a
workflow's history, through the API (async and sync) and the CLI, on a real PostgreSQL with
real workers."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import workflows
from tests.integration.conftest import StartWorker, wait_status
from workflows import activity, executions, job, queues, workers, workflow
from workflows.errors import AmbiguousIdError, ConfigurationError, ExecutionNotFoundError
from workflows.records import Registration
from workflows_cli.main import cli
from workflows_postgres.store import PostgresStore

BIN = Path(sys.executable).parent
Q = "views"

attempts: dict[str, int] = {}


@job(queue=Q, retries=0)
async def napping(seconds: float) -> float:
    # No state shared with the test: the worker may import this module under another name.
    await asyncio.sleep(seconds)
    return seconds


@job(queue=Q, retries=0)
async def noop(n: int) -> int:
    return n


@activity(queue=Q, retries=3)
async def flaky(key: str, failures: int) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= failures:
        raise ConnectionError(f"transient {attempts[key]}")
    return f"{key} after {attempts[key]}"


@activity(queue=Q, retries=0)
async def double(x: int) -> int:
    return 2 * x


@workflow(queue=Q)
async def inner(x: int) -> int:
    return await double.run(x) + 1


@workflow(queue=Q)
async def outer(key: str) -> list[Any]:
    first = await flaky.run(key, 2)
    return [first, await inner.run(20)]


@pytest.fixture(autouse=True)
def _clean() -> None:
    attempts.clear()


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result


def env_of(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["WORKFLOWS_DATABASE_URL"] = database_url
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "workflows"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def on_terminal(*args: str, columns: int, env: dict[str, str]) -> list[str]:
    """The command's lines as a terminal ``columns`` wide shows them (a real pseudo-terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [str(BIN / "workflows"), *args], env=env, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                raise AssertionError(f"{args}: no output for 30 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the command has exited
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=30) == 0, out.decode()
    return out.decode().replace("\r\n", "\n").rstrip("\n").split("\n")


async def sql(store: PostgresStore, query: str, *args: Any) -> Any:
    return await store.pool.fetch(query, *args)


# ---- workers ---------------------------------------------------------------------------------


async def test_workers_shows_each_live_worker_with_what_it_runs(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The nap left running at teardown must not hold the test for the default grace.
    monkeypatch.setenv("WORKFLOWS_WORKER_SHUTDOWN_GRACE", "0.5")
    worker = await start_worker(Q, "other")
    job_id = await napping.queue(60)
    await wait_status(store, job_id, {"running"})

    (seen,) = [w for w in await workers.list() if w["worker_id"] == worker.id]
    assert seen["hostname"] == socket.gethostname() and seen["pid"] == os.getpid()
    assert seen["queues"] == [Q, "other"] and seen["code_version"] == workflows.__version__
    assert seen["running"] == 1 and seen["alive"] is True
    assert 0 <= seen["beat_age"] < 30
    assert next(w for w in workers.list_sync() if w["worker_id"] == worker.id)["running"] == 1

    listed = json.loads(invoke("workers", "--json").output)
    assert {w["worker_id"] for w in listed} >= {worker.id}
    table = invoke("workers").output.splitlines()
    assert table[0].split() == [
        "WORKER_ID",
        "HOST",
        "PID",
        "QUEUES",
        "VERSION",
        "RUNNING",
        "BEAT",
        "STATE",
    ]
    (line,) = [row for row in table if row.startswith(worker.id)]
    assert line.split()[1:4] == [socket.gethostname(), str(os.getpid()), f"{Q},other"]
    assert line.split()[-1] == "alive" and line.split()[-3] == "1"


async def test_workers_tells_a_dead_worker_from_a_live_one(
    store: PostgresStore, database_url: str
) -> None:
    alive, dead = str(uuid.uuid4()), str(uuid.uuid4())
    await store.register_worker(alive, Registration("h1", 1, (Q,), "1.0"))
    await store.register_worker(dead, Registration("h2", 2, (Q,), "1.0"))
    await sql(
        store,
        "UPDATE workflows.worker_heartbeats SET last_heartbeat = now() - interval '90 seconds' "
        "WHERE worker_id = $1::uuid",
        dead,
    )
    # A claim in the dead worker's name: counted as running there until it is recovered.
    job_id = await noop.queue(1)
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'running', worker_id = $2::uuid "
        "WHERE id = $1::uuid",
        job_id,
        dead,
    )
    found = {w["worker_id"]: w for w in workers.list_sync()}
    assert found[alive]["alive"] is True and found[alive]["running"] == 0
    assert found[dead]["alive"] is False and found[dead]["running"] == 1
    assert 90 <= found[dead]["beat_age"] < 120
    lines = invoke("workers").output.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["alive", "dead"]  # by host: h1, h2


# ---- queues ----------------------------------------------------------------------------------


async def test_queue_figures_are_exact_on_known_rows(store: PostgresStore) -> None:
    ids = [await noop.options(queue="qa").queue(i) for i in range(10)]
    hi = await noop.options(queue="qa", priority=5).queue(99)
    later = await noop.options(queue="qa", delay=3600).queue(100)
    keyed = [await noop.options(queue="qa", concurrency_key="k").queue(i) for i in range(3)]
    wf = await outer.options(queue="qa").queue("never-runs")
    # Known states: 2 running, 3 completed and 1 failed just now, 2 completed long ago; the
    # oldest runnable is 100 s late (low priority), the high-priority one 40 s.
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'running', started_at = now() "
        "WHERE id = ANY($1::uuid[])",
        ids[0:2],
    )
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'completed', finished_at = now() "
        "WHERE id = ANY($1::uuid[])",
        ids[2:5],
    )
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'failed', finished_at = now() "
        "WHERE id = $1::uuid",
        ids[5],
    )
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'completed', "
        "finished_at = now() - interval '10 minutes' WHERE id = ANY($1::uuid[])",
        ids[6:8],
    )
    await sql(
        store,
        "UPDATE workflows.executions SET run_at = now() - interval '100 seconds' "
        "WHERE id = $1::uuid",
        ids[8],
    )
    await sql(
        store,
        "UPDATE workflows.executions SET run_at = now() - interval '40 seconds' "
        "WHERE id = $1::uuid",
        hi,
    )
    await sql(store, "UPDATE workflows.executions SET status = 'waiting' WHERE id = $1::uuid", wf)
    # An old queue: its only rows ended long ago, nothing serves it, nothing set on it.
    old = await noop.options(queue="qold").queue(0)
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'completed', "
        "finished_at = now() - interval '1 hour' WHERE id = $1::uuid",
        old,
    )
    (qa,) = await queues.stats("qa")
    assert {k: qa[k] for k in qa if k != "oldest_pending_seconds"} == {
        "name": "qa",
        "concurrency": None,
        "rate": None,
        "paused": False,
        "running": 2,
        # ids[8], ids[9], hi, later, and the first keyed one (the others wait for its slot).
        "pending": 5,
        "waiting": 1,
        "held": 2,
        "throttled": 0,
        "completed_5m": 3,
        "failed_5m": 1,
    }
    assert 100 <= qa["oldest_pending_seconds"] < 130
    assert later and keyed

    queues.set_limit_sync("qa", concurrency=3, rate="100/m")
    queues.pause_sync("qa")
    (qa,) = queues.stats_sync("qa")
    # Paused: every runnable pending one is held back (ids[8], ids[9], hi, keyed[0]).
    assert (qa["concurrency"], qa["rate"], qa["paused"], qa["throttled"]) == (3, "100/m", True, 4)
    every = {q["name"]: q for q in await queues.stats()}
    assert "qa" in every and "qold" not in every
    assert every["qa"]["completed_5m"] == 3
    # list() and get() keep their shape: settings and load, no new keys.
    assert set(queues.get_sync("qa")) == {
        "name",
        "concurrency",
        "rate",
        "paused",
        "running",
        "pending",
        "held",
    }

    shown = json.loads(invoke("queues", "show", "qa", "--json").output)
    assert shown["completed_5m"] == 3 and shown["waiting"] == 1
    bare = invoke("queues").output.splitlines()
    # The same table as `queues list` (the oldest's age aside, which grows as it runs).
    assert [line.split()[:9] for line in bare] == [
        line.split()[:9] for line in invoke("queues", "list").output.splitlines()
    ]
    assert bare[0].split() == [
        "NAME",
        "CONC",
        "RATE",
        "PAUSED",
        "RUN",
        "PEND",
        "WAIT",
        "HELD",
        "THROT",
        "OLDEST",
        "OK/5M",
        "FAIL/5M",
    ]
    (line,) = [row for row in bare if row.startswith("qa ")]
    cells = line.split()
    assert cells[:9] == ["qa", "3", "100/m", "yes", "2", "5", "1", "2", "4"]
    assert cells[9].endswith("s") and cells[10:] == ["3", "1"]
    assert [q["name"] for q in json.loads(invoke("queues", "--json").output)] == [
        q["name"] for q in json.loads(invoke("queues", "list", "--json").output)
    ]


async def test_queues_found_by_workers_and_recent_ends_and_none_is_a_clean_line(
    store: PostgresStore, database_url: str
) -> None:
    assert invoke("queues").output == "no queues have settings, workers, or recent executions\n"
    await store.register_worker(str(uuid.uuid4()), Registration("h", 1, ("served",), "1"))
    done = await noop.options(queue="justdone").queue(1)
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'completed', finished_at = now() "
        "WHERE id = $1::uuid",
        done,
    )
    names = [q["name"] for q in queues.stats_sync()]
    assert names == ["justdone", "served"]
    (served,) = queues.stats_sync("served")
    assert served["pending"] == 0 and served["oldest_pending_seconds"] is None
    result = CliRunner().invoke(cli, ["queues", "show", "bad queue'"])
    assert result.exit_code == 1 and "invalid queue name" in result.output


# ---- list ------------------------------------------------------------------------------------


async def all_pages(**filters: Any) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await executions.list(after=after, **filters)
        seen.extend(r["id"] for r in page["executions"])
        after = page["next"]
        if after is None:
            return seen


async def test_pages_cover_every_row_once_in_order_even_with_equal_created_at(
    store: PostgresStore,
) -> None:
    batch = await noop.queue_many([((i,), {}) for i in range(23)])  # one created_at for all
    singles = [await noop.queue(100 + i) for i in range(6)]
    order = [
        r["id"]
        for r in await sql(
            store, "SELECT id::text AS id FROM workflows.executions ORDER BY created_at DESC, id"
        )
    ]
    assert len(set(batch)) == 23 and len(order) == 29
    for size in (1, 4, 7, 23, 29, 30):
        assert await all_pages(limit=size) == order, size

    # Rows added between pages land before the first page, never in a later one.
    first = await executions.list(limit=10)
    newer = [await noop.queue(200 + i) for i in range(3)]
    rest, after = [], first["next"]
    while after:
        page = executions.list_sync(limit=10, after=after)
        rest.extend(r["id"] for r in page["executions"])
        after = page["next"]
    assert [r["id"] for r in first["executions"]] + rest == order
    assert not set(newer) & set(rest) and singles[-1] == order[0]


async def test_a_filtered_page_reads_a_bounded_stretch_and_its_cursor_goes_on_below(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five executions read at most per page, so rare matches span several pages.
    monkeypatch.setattr(executions, "SCAN_LIMIT", 5)
    old_rare = await noop.options(queue="rare").queue(0)
    tied = await noop.queue_many([((i,), {}) for i in range(7)])  # one created_at for all
    batch_rare = await noop.options(queue="rare").queue_many([((i,), {}) for i in range(3)])
    common = [await noop.queue(10 + i) for i in range(12)]
    new_rare = await noop.options(queue="rare").queue(99)
    order = [
        r["id"]
        for r in await sql(
            store,
            "SELECT id::text AS id FROM workflows.executions WHERE queue = 'rare' "
            "ORDER BY created_at DESC, id",
        )
    ]
    assert order[0] == new_rare and order[-1] == old_rare and set(batch_rare) < set(order)

    # The first page ends after five reads: the newest rare one, then a cursor.
    first = await executions.list(queue="rare", limit=10)
    assert [r["id"] for r in first["executions"]] == [new_rare]
    assert first["next"] is not None
    # A page of rows that are all behind the cut's created_at is read whole (ties included).
    for size in (1, 2, 10):
        assert await all_pages(queue="rare", limit=size) == order, size
        pages = []
        after = None
        while True:
            page = executions.list_sync(queue="rare", limit=size, after=after)
            pages.append(len(page["executions"]))
            after = page["next"]
            if after is None:
                break
        assert sum(pages) == len(order) and max(pages) <= size
    # Unfiltered, no page is cut short: every one is full but the last.
    everything = await all_pages(limit=4)
    assert len(everything) == 1 + 7 + 3 + 12 + 1
    assert set(tied) | set(common) < set(everything)
    # A filter no row matches ends after a bounded number of pages, each reading five.
    none_pages = 0
    after = None
    while True:
        page = await executions.list(queue="nosuch", limit=10, after=after)
        assert page["executions"] == []
        none_pages += 1
        after = page["next"]
        if after is None:
            break
    # (A page reads every execution of the created_at it stops at: ties make pages fewer.)
    assert 2 <= none_pages <= -(-len(everything) // 5)
    lines = invoke("list", "--queue", "nosuch").output.splitlines()
    assert lines[0] == "no executions match among the 5 read"
    assert lines[1].startswith("more: add --after ")


async def test_filters_by_kind_name_queue_status_and_time(store: PostgresStore) -> None:
    jobs = [await noop.queue(i) for i in range(3)]
    other = await noop.options(queue="elsewhere").queue(9)
    wf = await outer.queue("x")
    old = await napping.queue(0)
    await sql(
        store,
        "UPDATE workflows.executions SET created_at = now() - interval '3 hours' "
        "WHERE id = $1::uuid",
        old,
    )
    await sql(
        store,
        "UPDATE workflows.executions SET status = 'failed', finished_at = now() "
        "WHERE id = $1::uuid",
        jobs[1],
    )
    name = noop.path

    async def ids(**filters: Any) -> set[str]:
        return set(await all_pages(limit=2, **filters))

    assert await ids(kind="workflow") == {wf}
    assert await ids(kind=workflows.Kind.JOB, name=name) == {*jobs, other}
    assert await ids(name=name, queue=Q) == set(jobs)
    assert await ids(status="failed") == {jobs[1]}
    assert await ids(since="2h") == {*jobs, other, wf}
    assert await ids(until="2h") == {old}
    assert await ids(since="4h", until="2h") == {old}
    created = (await sql(store, "SELECT created_at FROM workflows.executions WHERE id = $1", old))[
        0
    ]["created_at"]
    assert await ids(since=created) == {*jobs, other, wf, old}
    assert await ids(since=created.isoformat(), until=created.isoformat()) == set()
    naive_utc = created.astimezone(__import__("datetime").UTC).replace(tzinfo=None).isoformat()
    assert old in await ids(since=naive_utc)
    for bad in (
        {"since": "yesterday"},
        {"until": "5 parsecs"},
        {"kind": "task"},
        {"status": "done"},
        {"after": "not-a-cursor"},
        {"limit": 0},
        {"name": ""},
    ):
        with pytest.raises(ConfigurationError):
            await executions.list(**bad)


def test_list_command_pages_with_a_cursor_and_keeps_json_an_array(database_url: str) -> None:
    assert invoke("workers").output == "no workers are registered\n"
    ids = [noop.queue_sync(i) for i in range(5)]
    first = invoke("list", "--limit", "2")
    lines = first.output.splitlines()
    assert lines[-1].startswith("more: add --after ")
    cursor = lines[-1].split()[-1]
    arr = CliRunner().invoke(cli, ["list", "--limit", "2", "--json"])
    assert arr.exit_code == 0
    assert [r["id"] for r in json.loads(arr.stdout)] == ids[::-1][:2]
    assert arr.stderr.strip() == f"next: {cursor}"
    seen: list[str] = []
    after: str | None = None
    while True:
        args = ["list", "--limit", "2", "--json", "--paged", "--name", noop.path]
        page = json.loads(invoke(*args, *(["--after", after] if after else [])).output)
        seen.extend(r["id"] for r in page["executions"])
        after = page["next"]
        if after is None:
            break
    assert seen == ids[::-1]
    last = invoke("list", "--limit", "5")
    assert "more:" not in last.output
    for bad in (
        ["--after", "zzz"],
        ["--since", "soon"],
        ["--kind", "task"],
        ["--until", "2026-13-45"],
    ):
        result = CliRunner().invoke(cli, ["list", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "Traceback" not in result.output


# ---- ids -------------------------------------------------------------------------------------


async def test_ids_resolve_by_unique_prefix_and_an_ambiguous_one_names_candidates(
    store: PostgresStore, database_url: str
) -> None:
    a, b = await noop.queue_many([((1,), {}), ((2,), {})])
    hex_a, hex_b = a.replace("-", ""), b.replace("-", "")
    shared = os.path.commonprefix([hex_a, hex_b])  # noqa: RUF071 (characters, not paths)
    assert len(shared) >= 4  # ids made in one statement share their time bits
    unique_a = hex_a[: len(shared) + 1]

    assert await executions.resolve(a) == a
    assert await executions.resolve(a.upper()) == a
    assert await executions.resolve(unique_a) == a
    assert executions.resolve_sync(unique_a.upper()) == a
    with_hyphens = a[: len(a) - 10]
    assert executions.resolve_sync(with_hyphens) == a
    with pytest.raises(AmbiguousIdError) as ambiguous:
        await executions.resolve(shared)
    assert ambiguous.value.candidates == sorted([a, b])
    assert a in str(ambiguous.value) and b in str(ambiguous.value)
    unknown = "ffff" if not hex_a.startswith("ffff") else "0000"
    for missing in (unknown, "abc", "nope", "", "0" * 33, "12345678-zz"):
        with pytest.raises(ExecutionNotFoundError):
            executions.resolve_sync(missing)
    # A full id is used as it is: the command says whether it exists.
    absent = str(uuid.uuid4())
    assert executions.resolve_sync(absent) == absent

    env = env_of(database_url)
    shown = run_cli("status", unique_a, "--json", env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == a
    for command in ("status", "cancel", "history"):
        result = run_cli(command, shared, env=env)
        assert result.returncode == 2, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: id prefix") and "ambiguous" in line
        assert a in line and b in line
    for text in ("abc", unknown):
        result = run_cli("status", text, env=env)
        assert result.returncode == 4 and result.stderr.startswith("error: no execution")
    cancelled = run_cli("cancel", hex_b[: len(shared) + 1], env=env)
    assert cancelled.returncode == 0 and f"cancelled {b}" in cancelled.stdout

    from workflows_cli.ids import full_id

    assert full_id(unique_a) == a


# ---- history ---------------------------------------------------------------------------------


async def test_history_shows_retries_and_the_child_workflow_nested(
    store: PostgresStore, start_worker: StartWorker, database_url: str
) -> None:
    await start_worker(Q)
    wf_id = await outer.queue("h")
    done = await wait_status(store, wf_id, {"completed", "failed"})
    assert done["status"] == "completed" and done["result"] == ["h after 3", 41]

    found = await workflows.executions.history(wf_id[:13])
    assert found == executions.history_sync(wf_id)
    assert found["execution"]["id"] == wf_id and found["execution"]["duration"] > 0
    first, second = found["steps"]
    assert (first["seq"], first["kind"], first["name"]) == (0, "activity", flaky.path)
    assert (first["status"], first["execution_status"], first["attempts"]) == (
        "completed",
        "completed",
        3,
    )
    assert first["result"] == "h after 3" and first["max_retries"] == 3
    assert first["started_at"] <= first["finished_at"] and first["duration"] >= 0
    assert (second["seq"], second["kind"], second["name"]) == (1, "child", inner.path)
    assert second["status"] == "completed" and second["result"] == 41
    (grandchild,) = second["children"]
    assert (grandchild["kind"], grandchild["name"], grandchild["attempts"]) == (
        "activity",
        double.path,
        1,
    )
    assert grandchild["result"] == 40 and "children" not in grandchild

    env = env_of(database_url)
    as_json = json.loads(run_cli("history", wf_id, "--json", env=env).stdout)
    assert as_json == json.loads(json.dumps(found))
    text = run_cli("history", wf_id[:13], env=env).stdout.splitlines()
    assert text[0].startswith(f"workflow {outer.path} {wf_id}: completed in ")
    assert text[1].split()[:5] == ["SEQ", "KIND", "NAME", "STATUS", "TRIES"]
    assert text[2].split()[:5] == ["0", "activity", flaky.path, "completed", "3"]
    assert text[3].split()[:5] == ["1", "child", inner.path, "completed", "1"]
    # The child's step, indented under its own.
    assert text[4].split()[:5] == ["0", "activity", double.path, "completed", "1"]
    name_at = text[1].index("NAME")
    assert text[4][name_at : name_at + 2] == "  " and text[3][name_at] != " "

    job_id = await noop.queue(5)
    plain = executions.history_sync(job_id)
    assert plain["steps"] == [] and plain["execution"]["kind"] == "job"


@workflow(queue=Q)
async def waits_twice() -> list[Any]:
    return [await workflows.wait_for_signal("go"), await workflows.wait_for_signal("go")]


async def test_history_lists_the_signals_received_and_the_step_that_took_each(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(Q)
    wf_id = await waits_twice.queue()
    await wait_status(store, wf_id, {"waiting"})
    await workflows.send_signal(wf_id, "go", {"n": 1})
    await workflows.send_signal(wf_id, "other", "<b>not for it</b>")
    await workflows.send_signal(wf_id, "go", [2])
    done = await wait_status(store, wf_id, {"completed", "failed"})
    assert done["result"] == [{"n": 1}, [2]]
    found = await executions.history(wf_id)
    assert found == executions.history_sync(wf_id)
    taken = [(s["name"], s["payload"], s["consumed_seq"]) for s in found["signals"]]
    assert taken == [("go", {"n": 1}, 0), ("other", "<b>not for it</b>", None), ("go", [2], 1)]
    assert all(s["received_at"] for s in found["signals"])
    job_id = await noop.queue(1)
    assert (await executions.history(job_id))["signals"] == []


async def test_an_execution_is_found_by_its_idempotency_key(store: PostgresStore) -> None:
    key = "order-77 <\u00e9>"
    job_id = await noop.options(idempotency_key=key).queue(1)
    assert await executions.by_key(key) == job_id
    assert executions.by_key_sync(key) == job_id
    assert await executions.by_key("no such key") is None
    for bad in ("", "x" * 1001, "a\x00b", 7):
        with pytest.raises(ConfigurationError, match="idempotency_key"):
            await executions.by_key(bad)  # type: ignore[arg-type]


async def test_throughput_counts_ends_per_queue_and_minute(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(Q)
    ok = [await noop.queue(i) for i in range(3)]
    bad = await flaky.options(retries=0).queue("tp", 5)
    for execution_id in [*ok, bad]:
        await wait_status(store, execution_id, {"completed", "failed"})
    # One ended long ago: outside the window.
    await sql(
        store,
        "UPDATE workflows.executions SET finished_at = now() - interval '2 hours' WHERE id = $1",
        ok[0],
    )
    series = await queues.throughput(15)
    assert series == queues.throughput_sync(15)
    mine = series[Q]
    assert len(mine["completed"]) == len(mine["failed"]) == 15
    assert (sum(mine["completed"]), sum(mine["failed"])) == (2, 1)
    # This minute is the last one (a run across a minute boundary may land in the one before).
    assert sum(mine["completed"][-2:]) == 2
    for bad_minutes in (0, -1, 1441, True, 1.5, "15"):
        with pytest.raises(ConfigurationError, match="minutes"):
            await queues.throughput(bad_minutes)  # type: ignore[arg-type]


async def test_status_names_the_worker_that_runs_it(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(Q)
    job_id = await napping.queue(0.5)
    running = await wait_status(store, job_id, {"running"})
    assert running["worker_id"] == worker.id
    assert (await workflows.get_status(job_id))["worker_id"] == worker.id
    done = await wait_status(store, job_id, {"completed"})
    assert done["worker_id"] is None


# ---- widths ----------------------------------------------------------------------------------


async def test_tables_fit_the_terminal_between_80_and_120_columns(
    store: PostgresStore, database_url: str, start_worker: StartWorker
) -> None:
    long_queue = "q" + "x" * 120
    await store.register_worker(str(uuid.uuid4()), Registration("h" * 200, 1, (long_queue,), "1"))
    await noop.options(queue=long_queue).queue(1)
    wf_id = await outer.queue("widths")
    await start_worker(Q)
    await wait_status(store, wf_id, {"completed"})
    env = env_of(database_url)
    for columns, most in ((60, 80), (100, 100), (200, 120)):
        for args in (["list"], ["workers"], ["queues"], ["history", wf_id], ["status", wf_id]):
            lines = on_terminal(*args, columns=columns, env=env)
            assert max(len(line) for line in lines) <= most, (args, columns, lines)
            assert any(len(line) > 60 for line in lines) or args[0] == "status", (args, lines)
        listed = on_terminal("list", columns=columns, env=env)
        assert wf_id in "\n".join(listed)  # ids are never cut
    assert any("\u2026" in line for line in on_terminal("queues", columns=80, env=env))
    # A pipe gets values whole.
    assert long_queue in run_cli("queues", env=env).stdout


# ---- plans -----------------------------------------------------------------------------------


def _scanned(plan: dict[str, Any]) -> int:
    """The most rows any node of a plan (EXPLAIN ANALYZE, FORMAT JSON) produced."""
    own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    return max([own] + [_scanned(child) for child in plan.get("Plans", [])])


async def test_a_deep_page_and_a_prefix_read_about_a_page_of_rows_even_in_a_generic_plan(
    store: PostgresStore,
) -> None:
    from workflows_postgres.queries import Queries

    await sql(
        store,
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, created_at) "
        "SELECT workflows.new_id(), 'job', 'app:f', 'deep', '{}', 0, "
        "now() - make_interval(secs => g) FROM generate_series(1, 5000) g",
    )
    await sql(store, "ANALYZE workflows.executions")
    deep = (
        await sql(
            store,
            "SELECT id::text AS id, created_at FROM workflows.executions "
            "ORDER BY created_at DESC, id OFFSET 4000 LIMIT 1",
        )
    )[0]
    floor = (
        await sql(
            store,
            "SELECT created_at FROM workflows.executions ORDER BY created_at DESC, id "
            "OFFSET 4050 LIMIT 1",
        )
    )[0]["created_at"]
    q = Queries.for_schema("workflows")
    async with store.pool.acquire() as conn:
        # What a prepared statement gets after five runs, forced from the first.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            for statement, args in (
                (
                    "fleet_list",
                    (
                        *(None,) * 6,
                        deep["created_at"].isoformat(),
                        deep["id"],
                        21,
                        None,
                        None,
                        None,
                    ),
                ),
                ("fleet_list", (None,) * 8 + (21, 3600.0, None, None)),
                ("fleet_resolve", executions._prefix_bounds(deep["id"][:10])),
                # Where a filtered walk from the deep cursor stops after 50, and that walk for
                # a queue nothing is in: about 50 rows each, not the 4,000 below.
                (
                    "fleet_scan_floor",
                    (None, None, deep["created_at"].isoformat(), deep["id"], None, None, 50),
                ),
                (
                    "fleet_list",
                    (
                        "nosuch",
                        *(None,) * 5,
                        deep["created_at"].isoformat(),
                        deep["id"],
                        21,
                        None,
                        None,
                        floor.isoformat(),
                    ),
                ),
            ):
                text = q.sql(statement)
                explained = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + text, *args)
                plan = json.loads(explained)[0]["Plan"]
                assert _scanned(plan) <= 100, (statement, args, _scanned(plan))
        finally:
            await conn.execute("RESET plan_cache_mode")
        page = await executions.list(after=executions._cursor(dict(deep)), limit=20)
        assert len(page["executions"]) == 20 and page["next"] is not None
        # The figures' function keeps JIT off: its plan's estimate is far above
        # jit_above_cost, and compiling cost seconds for a run of milliseconds.
        config = await conn.fetchval(
            "SELECT proconfig FROM pg_proc WHERE proname = 'fleet_queue_stats'"
        )
        assert config == ["jit=off"]
