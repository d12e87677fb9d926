"""Hostile input, tried as an attacker or an unlucky user would: one test per way it once broke.

A notification is a hint, never an authority; a value the database refuses fails its own
execution, never the batch or the worker; whatever the code raises is a counted attempt.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest

import workflows
from currant.testing.server import Databases
from tests.integration.conftest import StartWorker, until, wait_status
from workflows import activity, job, workflow
from workflows.config import Settings
from workflows.records import Registration
from workflows_postgres import client
from workflows_postgres.migrate import apply_migrations
from workflows_postgres.store import PostgresStore
from workflows_worker.worker import Worker

QUEUE = "hostile"
SECRET = "4111 1111 1111 1111"
ran: list[str] = []
gates: dict[str, asyncio.Event] = {}
barrier: dict[str, asyncio.Barrier] = {}
# Made inside the code: a producer cannot send them (it refuses them itself).
POISON = {"nul": "a\x00b", "surrogate": {"k": "\ud800"}, "cjk": "中文"}


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()
    gates.clear()
    barrier.clear()


@job(queue=QUEUE, retries=0)
async def charge(card: str) -> str:
    ran.append(card)
    return "charged"


@job(queue=QUEUE, retries=0)
async def held(key: str) -> str:
    ran.append(key)
    await gates.setdefault(key, asyncio.Event()).wait()
    return key


@job(queue=QUEUE, retries=0)
async def together(key: str, value: Any) -> Any:
    """Ends with its peers at once, so their outcomes go to the database in one batch."""
    await barrier.setdefault("b", asyncio.Barrier(2)).wait()
    return POISON.get(value, value)


@job(queue=QUEUE, retries=0)
async def echo(value: Any) -> Any:
    return value


@activity(retries=0)
async def secret_step(card: str) -> str:
    return f"card {card}"


@workflow(queue=QUEUE)
async def secret_flow(card: str) -> str:
    return await secret_step.run(card)


@workflow(queue=QUEUE)
async def returns(value: Any) -> Any:
    return value


@workflow(queue=QUEUE)
async def poison_flow(value: str) -> Any:
    return POISON[value]


# ---- a role that can connect but holds no privilege on the schema --------------------------


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, ""))


@pytest.fixture
def intruder_url(database_url: str) -> Iterator[str]:
    """A login role with no grant at all (CONNECT comes from PUBLIC, as by default)."""
    role = f"intruder_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield as_user(database_url, role)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
async def intruder(intruder_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(intruder_url)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("SELECT * FROM workflows.executions")
    yield conn
    await conn.close()


async def idle_offer(store: PostgresStore, worker: Worker) -> None:
    await until(
        lambda: store.pool.fetchval(
            "SELECT count(*) FROM workflows.worker_offers WHERE worker_id = $1::uuid", worker.id
        ),
        "the idle worker's offer",
    )


async def test_a_listen_only_role_learns_no_argument_or_result(
    store: PostgresStore, start_worker: StartWorker, intruder: asyncpg.Connection
) -> None:
    heard: list[str] = []
    for channel in ("work", "start", "cancel", "done"):
        await intruder.add_listener(f"workflows_{channel}", lambda *a: heard.append(str(a[3])))
    worker = await start_worker(QUEUE)
    await idle_offer(store, worker)
    job_id = await charge.queue(SECRET)
    wf = await secret_flow.queue(SECRET)
    assert await workflows.get_result(job_id, timeout=20) == "charged"
    assert await workflows.get_result(wf, timeout=20) == f"card {SECRET}"
    started = await store.pool.fetchval(
        "SELECT started_at = created_at FROM workflows.executions WHERE id = $1::uuid", job_id
    )
    assert started, "the job went the handoff way"
    await until(lambda: any(job_id in h for h in heard), "the handoff notification")
    assert heard and not [h for h in heard if "4111" in h], heard


async def test_a_forged_handoff_runs_and_imports_nothing(
    store: PostgresStore, start_worker: StartWorker, intruder: asyncpg.Connection, tmp_path: Path
) -> None:
    worker = await start_worker(QUEUE)
    await idle_offer(store, worker)
    evil = tmp_path / "evil_module_forged.py"
    evil.write_text("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        forged_id = str(uuid.uuid4())
        fields = json.dumps(
            {
                "id": forged_id,
                "name": charge.path,
                "queue": QUEUE,
                "max_retries": 0,
                "timeout": 5,
                "at": 0,
            }
        )
        evil_fields = json.dumps(
            {
                "id": str(uuid.uuid4()),
                "name": "evil_module_forged:fn",
                "queue": QUEUE,
                "max_retries": 0,
                "timeout": 5,
                "at": 0,
            }
        )
        args = json.dumps({"args": ["attacker"], "kwargs": {}})
        for payload in (
            f"{worker.id} {forged_id}",  # today's shape, no such row
            f"{worker.id}\n{fields}\n{args}",  # the old shape, claim and arguments inline
            f"{worker.id}\n{evil_fields}\n{args}",
        ):
            await intruder.execute("SELECT pg_notify('workflows_start', $1)", payload)
        # A real job after the forged ones: once it ran, the forged ones were heard first.
        real = await charge.queue("real")
        assert await workflows.get_result(real, timeout=20) == "charged"
        assert ran == ["real"]
        assert "evil_module_forged" not in sys.modules
        assert not evil.with_suffix(".ran").exists()
        assert worker.healthy()
    finally:
        sys.path.remove(str(tmp_path))


async def test_a_forged_cancel_cancels_nothing(
    store: PostgresStore, start_worker: StartWorker, intruder: asyncpg.Connection
) -> None:
    await start_worker(QUEUE)
    victim = await held.queue("victim")
    await until(lambda: "victim" in ran, "the victim to start")
    await intruder.execute("SELECT pg_notify('workflows_cancel', $1)", victim)
    # A cancel asked for in the table still works, and is heard after the forged one.
    other = await held.queue("other")
    await until(lambda: "other" in ran, "the other to start")
    assert await workflows.cancel(other) == "cancelling"
    await wait_status(store, other, {"cancelled"})
    assert (await store.get_status(victim))["status"] == "running"
    gates["victim"].set()
    assert await workflows.get_result(victim, timeout=20) == "victim"


# ---- poison values --------------------------------------------------------------------------


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no string for you")


class NotStr(Exception):
    def __str__(self) -> Any:
        return 42


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@job(queue=QUEUE, retries=2)
async def misbehaves(how: str) -> Any:
    ran.append(how)
    if how == "cancelled":
        raise asyncio.CancelledError()  # a library leaking one
    if how == "keyboard":
        raise KeyboardInterrupt
    if how == "exit":
        raise SystemExit(3)
    if how == "generator-exit":
        raise GeneratorExit
    if how == "bad-str":
        raise BadStr()
    if how == "not-str":
        raise NotStr()
    if how == "deep":
        return nested(100_000)
    if how == "nul":
        return {"text": "a\x00b"}
    if how == "surrogate":
        return "\ud800"
    if how == "nul-error":
        raise ValueError("bad\x00 \udfff value")
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "cancelled",
        "keyboard",
        "exit",
        "generator-exit",
        "bad-str",
        "not-str",
        "deep",
        "nul",
        "surrogate",
        "nul-error",
    ],
)
async def test_whatever_a_job_raises_or_returns_is_a_counted_attempt(
    store: PostgresStore, start_worker: StartWorker, how: str
) -> None:
    worker = await start_worker(QUEUE)
    execution = await misbehaves.queue(how)
    done = await wait_status(store, execution, {"failed", "completed"})
    assert (done["status"], done["attempts"]) == ("failed", 3), done
    assert ran == [how] * 3
    assert done["error"]["type"] and isinstance(done["error"]["message"], str)
    # The worker lives on and runs the next job.
    assert await workflows.get_result(await echo.queue("next"), timeout=20) == "next"
    assert worker.healthy()


@workflow(queue=QUEUE)
async def interrupted() -> None:
    raise KeyboardInterrupt


async def test_a_workflow_raising_keyboard_interrupt_fails_and_the_worker_lives(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    worker = await start_worker(QUEUE)
    wf = await interrupted.queue()
    done = await wait_status(store, wf, {"failed"})
    assert done["error"]["type"] == "KeyboardInterrupt"
    assert await workflows.get_result(await echo.queue("next"), timeout=20) == "next"
    assert worker.healthy()


async def test_a_nul_result_fails_alone_and_its_batch_neighbour_completes(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(QUEUE)
    poison = await together.queue("poison", "nul")
    innocent = await together.queue("innocent", "fine")
    assert await workflows.get_result(innocent, timeout=20) == "fine"
    failed = await wait_status(store, poison, {"failed"})
    assert failed["error"]["type"] == "SerializationError"
    wf = await poison_flow.queue("surrogate")
    assert (await wait_status(store, wf, {"failed"}))["error"]["type"] == "SerializationError"


@pytest.fixture
def latin1_url(pg_databases: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database whose encoding lacks most of Unicode: values it refuses exist."""
    name = f"latin1_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_databases.admin_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    url = pg_databases.url(name)
    apply_migrations(url, "workflows")
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", url)
    try:
        yield url
    finally:
        pg_databases.drop(name)


async def test_a_value_the_database_refuses_fails_its_own_execution_not_the_batch(
    latin1_url: str,
) -> None:
    store = await PostgresStore.connect(Settings.from_env())
    worker = Worker([QUEUE], settings=Settings.from_env())
    task = asyncio.create_task(worker.run())
    try:
        await until(worker.healthy, "the worker to start")
        # Both end together: their outcomes go in one batched write, which LATIN1 refuses.
        poison = await together.queue("poison", "cjk")
        innocent = await together.queue("innocent", "fine")
        assert await workflows.get_result(innocent, timeout=20) == "fine"
        failed = await wait_status(store, poison, {"failed"})
        assert failed["error"]["type"] == "UnstorableOutcome", failed
        assert "LATIN1" in failed["error"]["message"]
        # A workflow whose result the database refuses, next to one it takes.
        bad_wf = await poison_flow.queue("cjk")
        good_wf = await returns.queue("fine")
        assert await workflows.get_result(good_wf, timeout=20) == "fine"
        wf_failed = await wait_status(store, bad_wf, {"failed"})
        assert wf_failed["error"]["type"] == "UnstorableOutcome"
        assert worker.healthy()
        assert await workflows.get_result(await echo.queue("after"), timeout=20) == "after"
        # A producer sending such a value gets our error, and nothing is stored.
        with pytest.raises(workflows.SerializationError, match="refused a value"):
            await echo.queue("中文")
        with pytest.raises(workflows.SerializationError, match="refused a value"):
            echo.queue_sync("中文")
        assert await store.pool.fetchval("SELECT count(*) FROM workflows.executions") == 5
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await store.close()
        await client.reset_async()


async def test_a_row_due_at_minus_infinity_does_not_halt_its_queue(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    # Written by hand or by an old producer (asyncpg sends datetime.min as -infinity).
    odd = await store.pool.fetchval(
        "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries, run_at) "
        'VALUES (gen_random_uuid(), \'job\', $1, $2, \'{"args": ["odd"], "kwargs": {}}\', 0, '
        "'-infinity') RETURNING id::text",
        echo.path,
        QUEUE,
    )
    await start_worker(QUEUE)
    assert await workflows.get_result(await echo.queue("normal"), timeout=20) == "normal"
    assert await workflows.get_result(odd, timeout=20) == "odd"


async def test_a_worker_whose_writes_keep_failing_reports_unhealthy_and_stops_claiming(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_INTERVAL", "0.3")
    monkeypatch.setenv("WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT", "1")
    # Every outcome write fails, as with a trigger gone wrong: not one item's doing.
    await store.pool.execute(
        """
        CREATE FUNCTION workflows.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'writes refused'; END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON workflows.executions FOR EACH ROW
            WHEN (NEW.status = 'completed') EXECUTE FUNCTION workflows.refuse();
        """
    )
    worker = await start_worker(QUEUE)
    first = await echo.queue("first")
    await until(lambda: not worker.healthy(), "the worker to report itself unhealthy")
    second = await echo.queue("second")
    # Its poll ticks come and go (0.2 s each): it claims nothing while it cannot write.
    await asyncio.sleep(1.0)
    assert (await store.get_status(second))["status"] == "pending"
    await store.pool.execute("DROP TRIGGER refuse ON workflows.executions")
    assert await workflows.get_result(first, timeout=20) == "first"
    assert await workflows.get_result(second, timeout=20) == "second"
    await until(worker.healthy, "the worker to be healthy again")


# ---- imports ---------------------------------------------------------------------------------


@pytest.fixture
def outside_module(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"outside_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_suffix('.imported').touch()\n"
        "from workflows import job\n\n"
        f"@job(queue={QUEUE!r}, retries=0)\n"
        "async def fn() -> str:\n"
        "    return 'ran'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name, tmp_path / f"{name}.imported"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


async def insert_job(store: PostgresStore, name: str) -> str:
    return str(
        await store.pool.fetchval(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries) "
            "VALUES (gen_random_uuid(), 'job', $1, $2, '{\"args\": [], \"kwargs\": {}}', 0) "
            "RETURNING id::text",
            name,
            QUEUE,
        )
    )


async def test_workers_import_only_application_code(
    store: PostgresStore, start_worker: StartWorker, outside_module: tuple[str, Path]
) -> None:
    name, marker = outside_module
    await start_worker(QUEUE)
    outside = await insert_job(store, f"{name}:fn")
    stdlib = await insert_job(store, "json.tool:main")
    for execution in (outside, stdlib):
        failed = await wait_status(store, execution, {"failed"})
        assert failed["error"]["type"] == "FunctionNotFound"
        assert "not allowed" in failed["error"]["message"]
    assert not marker.exists() and name not in sys.modules
    assert "json.tool" not in sys.modules


async def test_an_allow_listed_module_is_imported(
    store: PostgresStore,
    start_worker: StartWorker,
    outside_module: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, marker = outside_module
    monkeypatch.setenv("WORKFLOWS_WORKER_IMPORTS", name)
    await start_worker(QUEUE)
    allowed = await insert_job(store, f"{name}:fn")
    assert await workflows.get_result(allowed, timeout=20) == "ran"
    assert marker.exists()


# ---- exact values ----------------------------------------------------------------------------


async def test_arguments_and_results_read_back_exactly_as_encoded(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    value = {"zeta": 1, "alpha": 1e16, "mid": -0.0}
    await start_worker(QUEUE)
    job_id = await echo.queue(value)
    wf = await returns.queue(value)
    for execution in (job_id, wf):
        result = await workflows.get_result(execution, timeout=20)
        assert list(result) == ["zeta", "alpha", "mid"]
        assert isinstance(result["alpha"], float) and result["alpha"] == 1e16
        assert math.copysign(1.0, result["mid"]) == -1.0
        raw = await store.pool.fetchrow(
            "SELECT args::text AS args, result::text AS result FROM workflows.executions "
            "WHERE id = $1::uuid",
            execution,
        )
        assert raw["args"] == '{"args":[{"zeta":1,"alpha":1e+16,"mid":-0.0}],"kwargs":{}}'
        assert raw["result"] == '{"zeta":1,"alpha":1e+16,"mid":-0.0}'
        status = await workflows.get_status(execution)
        assert list(status["args"]["args"][0]) == ["zeta", "alpha", "mid"]


async def test_release_is_uncounted_only_twice_in_a_row_and_only_by_the_claim_holder(
    store: PostgresStore,
) -> None:
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    await store.register_worker(owner, Registration("host", 1, (QUEUE,), "0"))
    job_id = await echo.options(retries=5).queue("released")
    attempts = []
    for _ in range(3):
        [claimed] = await store.claim(owner, [QUEUE], 1)
        # Another worker cannot give it back (a forged give-back names any id).
        assert await store.release(claimed, other) is False
        assert await store.release(claimed, owner) is True
        attempts.append((await store.get_status(job_id))["attempts"])
    # Given back uncounted twice; the third time in a row the attempt counts.
    assert attempts == [0, 0, 1]
    [claimed] = await store.claim(owner, [QUEUE], 1)
    assert claimed.attempts == 2


async def test_arguments_written_by_hand_nested_too_deeply_fail_their_own_execution(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    # Another role's row: arguments PostgreSQL's json takes but no JSON decoder here reads
    # (RecursionError past about 1,000 levels). The execution fails saying so; the worker goes
    # on with the next one.
    from tests.integration import hostile_app

    deep = '{"args": [' + "[" * 3000 + "]" * 3000 + '], "kwargs": {}}'
    hostile = str(
        await store.pool.fetchval(
            "INSERT INTO workflows.executions (id, kind, name, queue, args, max_retries) "
            "VALUES (gen_random_uuid(), 'job', $1, $2, $3::json, 0) RETURNING id::text",
            "tests.integration.hostile_app:echo",
            QUEUE,
            deep,
        )
    )
    await start_worker(QUEUE)
    failed = await wait_status(store, hostile, {"failed"})
    assert failed["error"]["type"] == "RecursionError"
    # Inspection shows why it cannot show the arguments, rather than raising.
    assert "RecursionError" in failed["args"]["$workflows_unreadable"]
    # A result written the same way: get_result() says it cannot read it.
    await store.pool.execute(
        "UPDATE workflows.executions SET status = 'completed', error = NULL, result = $2::json"
        " WHERE id = $1::uuid",
        hostile,
        "[" * 3000 + "]" * 3000,
    )
    with pytest.raises(workflows.SerializationError, match="cannot be read: RecursionError"):
        await workflows.get_result(hostile, timeout=5)
    after = await hostile_app.echo.queue("after")
    assert await workflows.get_result(after, timeout=30) == "after"
