"""Cron schedules against a real PostgreSQL: the run-time API and its sync twins, the CLI,
the scheduler part of a worker (registration, firing, misfires, hostile rows)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from tests.integration.conftest import until
from workflows import ConfigurationError, activity, job, schedules, workflow
from workflows.api import REGISTRY, Function
from workflows.config import Settings
from workflows.schedules import MAX_CATCHUP, Schedule, ScheduleNotFoundError
from workflows_cli.main import cli
from workflows_cli.schedules_cmd import schedules as schedules_group
from workflows_postgres.store import PostgresStore
from workflows_worker.scheduler import Scheduler

QUEUE = "cron"
SECONDLY = "* * * * * *"
PATH = f"{__name__}:"


# Decorated in the fixture below, never at import: an in-process worker of another test
# would otherwise register their schedules in its database.
async def beat(label: str, n: int = 0) -> str:
    return label


async def digest() -> str:
    return "digest"


async def helper() -> None: ...


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    before = set(REGISTRY)
    yield
    for path in set(REGISTRY) - before:
        del REGISTRY[path]


@pytest.fixture
def fns() -> dict[str, Function[..., Any]]:
    return {
        "beat": job(queue=QUEUE, retries=2, timeout=30)(beat),
        "digest": workflow(queue=QUEUE, timeout=600)(digest),
        "helper": activity(queue=QUEUE)(helper),
    }


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def cli_group() -> Iterator[Any]:
    # The group as `workflows schedules`, whether or not main.py registers it yet.
    added = "schedules" not in cli.commands
    if added:
        cli.add_command(schedules_group)
    try:
        yield cli
    finally:
        if added:
            cli.commands.pop("schedules", None)


def schedule_rows(db: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    return db.execute("SELECT * FROM workflows.schedules ORDER BY name").fetchall()


def runs(db: psycopg.Connection[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT id::text AS id, kind, name, queue, status, args::text AS args, max_retries, "
        "timeout_seconds, deadline - created_at AS wf_timeout, schedule_name, schedule_tick "
        "FROM workflows.executions WHERE schedule_name = %s ORDER BY schedule_tick NULLS LAST",
        (name,),
    ).fetchall()


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler, stopping: asyncio.Event) -> AsyncIterator[None]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


def make_scheduler(
    store: PostgresStore, functions: dict[str, Function[..., Any]] | None = None
) -> tuple[Scheduler, asyncio.Event]:
    stopping = asyncio.Event()
    return Scheduler(store, Settings.from_env(), functions or {}, stopping), stopping


# ---- the run-time API ------------------------------------------------------------------------


async def test_create_list_pause_resume_delete(
    database_url: str, fns: dict[str, Any], db: Any
) -> None:
    made = await schedules.create(
        "hourly-beat", fns["beat"], "0 * * * *", ("x",), {"n": 2}, timezone="Europe/Berlin"
    )
    assert made["name"] == "hourly-beat" and made["source"] == "api"
    assert made["function"] == PATH + "beat" and made["queue"] == QUEUE
    assert made["args"] == ["x"] and made["kwargs"] == {"n": 2}
    assert made["paused"] is False and made["last_tick"] is None
    next_tick = datetime.fromisoformat(made["next_tick"])
    assert next_tick.minute == 0 and next_tick > datetime.now(UTC)
    # By import path too, with the options .options() takes.
    await schedules.create(
        "daily-digest", PATH + "digest", "@daily", queue="reports", priority=5, timeout=60
    )
    listed = {s["name"]: s for s in await schedules.list()}
    assert list(listed) == ["daily-digest", "hourly-beat"]
    assert listed["daily-digest"]["kind"] == "workflow"
    assert listed["daily-digest"]["queue"] == "reports"
    row = {r["name"]: r for r in schedule_rows(db)}["daily-digest"]
    assert (row["priority"], row["workflow_timeout"], row["max_retries"]) == (5, 60.0, 0)

    await schedules.pause("hourly-beat")
    assert {s["name"]: s["paused"] for s in await schedules.list()}["hourly-beat"] is True
    # Created again (a deploy script): updated in place, and a pause stays.
    again = await schedules.create("hourly-beat", fns["beat"], "30 * * * *", ("y",))
    assert again["paused"] is True and again["cron"] == "30 * * * *" and again["args"] == ["y"]
    await schedules.resume("hourly-beat")
    assert {s["name"]: s["paused"] for s in await schedules.list()}["hourly-beat"] is False

    assert (await schedules.delete("hourly-beat"))["source"] == "api"
    assert [s["name"] for s in await schedules.list()] == ["daily-digest"]
    for call in (schedules.pause, schedules.resume, schedules.delete, schedules.trigger):
        with pytest.raises(ScheduleNotFoundError, match="hourly-beat"):
            await call("hourly-beat")


def test_the_sync_twins(database_url: str, fns: dict[str, Any], db: Any) -> None:
    made = schedules.create_sync("s", fns["beat"], "*/5 * * * *", ["a"], catchup=True)
    assert made["catchup"] is True and made["cron"] == "*/5 * * * *"
    schedules.pause_sync("s")
    assert schedules.list_sync()[0]["paused"] is True
    schedules.resume_sync("s")
    assert schedules.list_sync()[0]["paused"] is False
    run_id = schedules.trigger_sync("s")
    (run,) = runs(db, "s")
    assert run["id"] == run_id and run["schedule_tick"] is None and run["status"] == "pending"
    assert json.loads(run["args"]) == {"args": ["a"], "kwargs": {}}
    assert run["max_retries"] == 2 and run["timeout_seconds"] == 30
    assert schedules.delete_sync("s")["name"] == "s"
    assert schedules.list_sync() == []
    with pytest.raises(ScheduleNotFoundError):
        schedules.pause_sync("s")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("x", "beat", "* * * * * * *"), {}, "cron expression"),
        (("x", "beat", "99 * * * *"), {}, "cron expression"),
        (("x", "beat", "0 * * * *"), {"timezone": "Europe/Atlantis"}, "unknown timezone"),
        (("x", "beat", "0 * * * *", (object(),)), {}, "schedule arguments"),
        (("x", "beat", "0 * * * *", (), {"k": float("inf")}), {}, "schedule arguments"),
        (("has space", "beat", "0 * * * *"), {}, "schedule name"),
        (("x", "helper", "0 * * * *"), {}, "activities run inside workflows"),
        (("x", "beat", "0 * * * *"), {"queue": "bad queue"}, "queue"),
        (("x", "beat", "0 * * * *"), {"retries": -1}, "retries"),
        (("x", "no_such_module_zz:fn", "0 * * * *"), {}, "cannot import"),
        (("x", PATH + "missing", "0 * * * *"), {}, "not a function decorated"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    database_url: str,
    fns: dict[str, Any],
    db: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    match: str,
) -> None:
    name, fn, *rest = args
    fn = fns.get(fn, fn)
    with pytest.raises(ConfigurationError, match=match):
        schedules.create_sync(name, fn, *rest, **kwargs)
    assert schedule_rows(db) == []


async def test_a_schedule_declared_in_code_is_not_replaced_by_the_api(
    store: PostgresStore, fns: dict[str, Any], db: Any
) -> None:
    coded = job(queue=QUEUE, schedule="0 3 * * *")(beat)
    scheduler, _ = make_scheduler(store, {coded.path: coded})
    await scheduler.register()
    with pytest.raises(ConfigurationError, match="declared in code"):
        await schedules.create(coded.path, fns["beat"], "* * * * *")
    (row,) = schedule_rows(db)
    assert (row["source"], row["cron"]) == ("code", "0 3 * * *")


async def test_status_and_list_show_the_schedule_and_tick(
    store: PostgresStore, fns: dict[str, Any], db: Any, cli_group: Any
) -> None:
    await schedules.create("every-second", fns["beat"], SECONDLY, ("t",))
    scheduler, _ = make_scheduler(store)
    await until(lambda: _fire_and_count(scheduler, db, "every-second"), "a tick fired")
    triggered = await schedules.trigger("every-second")
    ticked = next(r for r in runs(db, "every-second") if r["schedule_tick"] is not None)
    tick = ticked["schedule_tick"].astimezone(UTC).isoformat()

    status = await store.get_status(ticked["id"])
    assert status["schedule"] == "every-second"
    assert status["schedule_tick"] == tick
    result = CliRunner().invoke(cli_group, ["status", ticked["id"]])
    assert result.exit_code == 0, result.output
    assert f"schedule:     every-second @ {tick}" in result.output
    result = CliRunner().invoke(cli_group, ["status", triggered])
    assert "schedule:     every-second (trigger)" in result.output

    result = CliRunner().invoke(cli_group, ["list", "--json"])
    listed = {r["id"]: r for r in json.loads(result.output)}
    assert listed[ticked["id"]]["schedule_tick"] == tick
    assert listed[triggered]["schedule"] == "every-second"
    result = CliRunner().invoke(cli_group, ["list"])
    assert "SCHEDULE" in result.output.splitlines()[0]
    assert f"every-second @ {tick}" in result.output


async def _fire_and_count(scheduler: Scheduler, db: Any, name: str) -> int:
    await scheduler.fire_due()
    return sum(1 for r in runs(db, name) if r["schedule_tick"] is not None)


# ---- the CLI ---------------------------------------------------------------------------------


def test_the_schedules_commands(
    database_url: str, fns: dict[str, Any], db: Any, cli_group: Any
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_group, ["schedules", "list"])
    assert (result.exit_code, result.output) == (0, "no schedules\n")
    schedules.create_sync("nightly", fns["digest"], "0 2 * * *", timezone="America/New_York")

    result = runner.invoke(cli_group, ["schedules", "list"])
    assert result.exit_code == 0, result.output
    header, line = result.output.splitlines()
    assert header.split() == [
        "NAME",
        "FUNCTION",
        "QUEUE",
        "CRON",
        "TIMEZONE",
        "STATE",
        "NEXT_TICK",
        "SOURCE",
    ]
    assert line.split()[:2] == ["nightly", PATH + "digest"]
    assert "America/New_York" in line and "active" in line and "api" in line

    assert runner.invoke(cli_group, ["schedules", "pause", "nightly"]).output == "paused nightly\n"
    (listed,) = json.loads(runner.invoke(cli_group, ["schedules", "list", "--json"]).output)
    assert listed["paused"] is True and listed["cron"] == "0 2 * * *"
    result = runner.invoke(cli_group, ["schedules", "resume", "nightly"])
    assert (result.exit_code, result.output) == (0, "resumed nightly\n")

    result = runner.invoke(cli_group, ["schedules", "trigger", "nightly"])
    assert result.exit_code == 0, result.output
    (run,) = runs(db, "nightly")
    assert result.output.strip() == run["id"] and run["kind"] == "workflow"
    assert run["wf_timeout"] == timedelta(seconds=600)

    result = runner.invoke(cli_group, ["schedules", "delete", "nightly"])
    assert (result.exit_code, result.output) == (0, "deleted nightly\n")
    for command in ("pause", "resume", "delete", "trigger"):
        result = runner.invoke(cli_group, ["schedules", command, "nightly"])
        assert result.exit_code == 4, (command, result.output)
        assert "no schedule 'nightly'" in result.output
    assert runs(db, "nightly") == [run]


# ---- the scheduler: registration -------------------------------------------------------------


async def test_code_schedules_register_update_in_place_keep_a_pause_and_are_pruned(
    store: PostgresStore, db: Any
) -> None:
    first = job(queue=QUEUE, schedule="0 3 * * *", schedule_args=["v1"])(beat)
    other = workflow(queue=QUEUE, schedule=Schedule("@hourly", name="digest-hourly"))(digest)
    scheduler, _ = make_scheduler(store, {first.path: first, other.path: other})
    await scheduler.register()
    rows = {r["name"]: r for r in schedule_rows(db)}
    assert set(rows) == {first.path, "digest-hourly"}
    assert {r["source"] for r in rows.values()} == {"code"}
    assert rows["digest-hourly"]["kind"] == "workflow"
    await scheduler.fire_due()  # computes the next ticks
    await schedules.pause("digest-hourly")
    paused = {r["name"]: r for r in schedule_rows(db)}["digest-hourly"]
    assert paused["next_tick"] is not None

    # A new deploy: another cron and argument for one, the same for the other.
    second = job(queue=QUEUE, schedule="15 3 * * *", schedule_args=["v2"])(beat)
    same = workflow(queue=QUEUE, schedule=Schedule("@hourly", name="digest-hourly"))(digest)
    scheduler, _ = make_scheduler(store, {second.path: second, same.path: same})
    await scheduler.register()
    after = {r["name"]: r for r in schedule_rows(db)}
    assert after[second.path]["cron"] == "15 3 * * *"
    assert after[second.path]["args"] == {"args": ["v2"], "kwargs": {}}
    assert after[second.path]["next_tick"] is None  # counted again from the change
    # Unchanged: still paused, its next tick kept, not even its update time moved.
    assert after["digest-hourly"] == paused

    # The code drops the schedule of digest: its row goes; beat's stays.
    plain = workflow(queue=QUEUE)(digest)
    scheduler, _ = make_scheduler(store, {second.path: second, plain.path: plain})
    await scheduler.register()
    assert [r["name"] for r in schedule_rows(db)] == [second.path]


# ---- the scheduler: firing -------------------------------------------------------------------


async def test_two_schedulers_fire_each_tick_once_without_spinning(
    store: PostgresStore, database_url: str, fns: dict[str, Any], db: Any
) -> None:
    await schedules.create("each-second", fns["beat"], SECONDLY, ("s",))
    other_store = await PostgresStore.connect(Settings.from_env())
    calls = 0
    control = store.control

    async def counted(statement: str, args: Any = ()) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return await control(statement, args)

    store.control = counted  # type: ignore[method-assign]
    try:
        one, stop_one = make_scheduler(store)
        two, stop_two = make_scheduler(other_store)
        started = datetime.now(UTC)
        async with running(one, stop_one), running(two, stop_two):
            await until(lambda: len(runs(db, "each-second")) >= 4, "four ticks", timeout=15)
        elapsed = (datetime.now(UTC) - started).total_seconds()
    finally:
        await other_store.close()
    ticks = [r["schedule_tick"] for r in runs(db, "each-second")]
    assert len(ticks) == len(set(ticks)) >= 4
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))
    assert one.fired + two.fired == len(ticks)
    # A due query per poll interval (0.2 s) and a fire per tick, give or take: not a spin.
    assert calls <= elapsed / 0.2 * 2 + 10, (calls, elapsed)


async def test_after_an_outage_one_missed_tick_fires_or_every_one_with_catchup(
    store: PostgresStore, fns: dict[str, Any], db: Any
) -> None:
    await schedules.create("late", fns["beat"], SECONDLY)
    await schedules.create("late-all", fns["beat"], "*/2 * * * * *", catchup=True)
    await schedules.create("very-late", fns["beat"], SECONDLY, catchup=True)
    # As if no worker had run for a while since these ticks were due.
    db.execute(
        "UPDATE workflows.schedules SET next_tick = date_trunc('second', now()) - "
        "CASE name WHEN 'very-late' THEN interval '2 hours' ELSE interval '20 seconds' END"
    )
    scheduler, _ = make_scheduler(store)
    await scheduler.fire_due()
    late, late_all, very_late = runs(db, "late"), runs(db, "late-all"), runs(db, "very-late")
    now = db.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
    assert len(late) == 1 and now - late[0]["schedule_tick"] < timedelta(seconds=2)
    assert len(late_all) in (10, 11)
    assert len(very_late) == MAX_CATCHUP
    rows = {r["name"]: r for r in schedule_rows(db)}
    for name, fired in (("late", late), ("late-all", late_all), ("very-late", very_late)):
        assert rows[name]["last_tick"] == fired[-1]["schedule_tick"]
        assert rows[name]["next_tick"] > fired[-1]["schedule_tick"]
    # Firing again at once fires nothing new.
    await scheduler.fire_due()
    assert len(runs(db, "late-all")) == len(late_all)


async def test_a_tick_already_run_is_not_run_again_whatever_the_schedule_says(
    store: PostgresStore, fns: dict[str, Any], db: Any
) -> None:
    await schedules.create("again", fns["beat"], SECONDLY, catchup=True)
    db.execute(
        "UPDATE workflows.schedules SET next_tick = date_trunc('second', now()) - "
        "interval '5 seconds'"
    )
    scheduler, _ = make_scheduler(store)
    await scheduler.fire_due()
    before = runs(db, "again")
    # A stale next tick (a restored backup, a worker's crash before the update): the same
    # ticks again insert nothing.
    db.execute("UPDATE workflows.schedules SET next_tick = %s", (before[0]["schedule_tick"],))
    await scheduler.fire_due()
    after = runs(db, "again")
    ticks = [r["schedule_tick"] for r in after]
    assert len(ticks) == len(set(ticks)) and after[: len(before)] == before


async def test_a_paused_schedule_fires_nothing_and_resumes_from_its_next_tick(
    store: PostgresStore, fns: dict[str, Any], db: Any
) -> None:
    await schedules.create("napping", fns["beat"], SECONDLY, catchup=True)
    await schedules.pause("napping")
    db.execute(
        "UPDATE workflows.schedules SET next_tick = date_trunc('second', now()) - "
        "interval '30 seconds'"
    )
    scheduler, _ = make_scheduler(store)
    await scheduler.fire_due()
    assert runs(db, "napping") == []
    resumed_at = db.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
    await schedules.resume("napping")
    await until(lambda: _fire_and_count(scheduler, db, "napping"), "a tick after the resume")
    # None of the thirty seconds missed while paused, catchup or not.
    assert all(r["schedule_tick"] > resumed_at for r in runs(db, "napping"))


async def test_a_hostile_schedule_row_is_logged_and_skipped_and_the_others_fire(
    store: PostgresStore, fns: dict[str, Any], db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workflows_worker")
    await schedules.create("good", fns["beat"], SECONDLY)
    template = (
        "INSERT INTO workflows.schedules (name, source, kind, function_name, queue, args, "
        "max_retries, cron, timezone) VALUES (%s, 'api', 'job', 'x:y', 'cron', "
        '\'{"args": [], "kwargs": {}}\', 0, %s, %s)'
    )
    db.execute(template, ("bad-cron", "every day at noon", "UTC"))
    db.execute(template, ("bad-zone", "* * * * *", "Nowhere/Atlantis"))
    db.execute(template, ("bad-path", "0 * * * *", "../../etc/localtime"))
    scheduler, stopping = make_scheduler(store)
    async with running(scheduler, stopping):
        await until(lambda: len(runs(db, "good")) >= 2, "the good schedule firing twice")
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    for name in ("bad-cron", "bad-zone", "bad-path"):
        # Once each, not every poll: skipped for a while.
        assert sum(f"schedule '{name}' skipped" in m for m in skipped) == 1, skipped
    for name in ("bad-cron", "bad-zone", "bad-path"):
        assert runs(db, name) == []
    # Listing shows them all, arguments that are not a call's included, as they are.
    db.execute(
        "INSERT INTO workflows.schedules (name, source, kind, function_name, queue, args, "
        "max_retries, cron, timezone) VALUES ('bad-args', 'api', 'job', 'x:y', 'cron', '5', 0, "
        "'0 0 1 1 *', 'UTC')"
    )
    listed = {s["name"]: s for s in await schedules.list()}
    assert set(listed) == {"good", "bad-cron", "bad-zone", "bad-path", "bad-args"}
    assert listed["bad-args"]["args"] == "5" and listed["bad-cron"]["next_tick"] is None
