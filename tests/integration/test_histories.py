"""Replaying recorded histories: a workflow's history exported from a real PostgreSQL (written by
a real worker), kept as a file, and replayed against today's code with no database and no
worker, through the API and the CLI; what replay predicts is what a worker then does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import workflows
from tests.integration import histories_app as app
from tests.integration.conftest import StartWorker, until, wait_status
from workflows import testing
from workflows.errors import ExecutionNotFoundError, NonDeterminismError, WorkflowNotFoundError
from workflows_cli.main import cli
from workflows_postgres.store import PostgresStore

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
ORDER = app.order.path
# What v1 of the order records, in order: (kind, name, status).
RECORDED = [
    ("activity", app.charge.path, "completed"),
    ("activity", app.reserve.path, "failed"),
    ("version", "gift_wrap", "completed"),
    ("child", app.ship.path, "completed"),
    ("timer", "", "completed"),
    ("signal", "approved", "scheduled"),
]
# A worker replays the unguarded deploy's new step 1 against what v1 recorded there.
DIVERGENCE = (
    f"workflow {ORDER} diverged from its history at step 1: history holds activity "
    f"'{app.reserve.path}', the code asked for activity '{app.fraud_check.path}'"
)


@pytest.fixture(autouse=True)
def _deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every claim replays from the database: no copy in memory goes on with the old code.
    monkeypatch.setenv("WORKFLOWS_WORKER_STICKY_CACHE", "0")
    monkeypatch.setattr(app, "DEPLOY", "v1")
    app.ran.clear()


async def waiting_order(store: PostgresStore, order_id: str) -> str:
    """An order run by v1 up to its wait for approval (a worker serves the queue)."""
    wf = await app.order.queue(order_id, 42.5)
    await until(lambda: waits(wf), f"order {order_id} to wait for its approval")
    await wait_status(store, wf, {"waiting"})
    return wf


async def waits(workflow_id: str) -> bool:
    return len((await testing.export_history(workflow_id))["steps"]) == len(RECORDED)


def shape(history: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["kind"], s["name"], s["status"]) for s in history["steps"]]


async def test_export_holds_what_replay_needs_and_the_same_code_replays_it(
    store: PostgresStore, start_worker: StartWorker, tmp_path: Path
) -> None:
    await start_worker(app.Q)
    wf = await waiting_order(store, "o-1")
    waiting = await testing.export_history(wf[:10])
    assert (waiting["format"], waiting["version"]) == ("workflows.history", 1)
    workflow = waiting["workflow"]
    assert (workflow["id"], workflow["name"], workflow["version"]) == (wf, ORDER, 1)
    assert (workflow["args"], workflow["kwargs"], workflow["status"]) == (
        ["o-1", 42.5],
        {},
        "waiting",
    )
    assert workflow["created_at"] and workflow["finished_at"] is None and waiting["exported_at"]
    assert shape(waiting) == RECORDED
    steps = waiting["steps"]
    assert [s["seq"] for s in steps] == list(range(len(RECORDED)))
    assert steps[0]["result"] == {"transaction_id": "txn-o-1", "amount": 42.5}
    assert steps[1]["result"] is None and steps[1]["error"]["type"] == "ValueError"
    assert steps[1]["error"]["message"] == "nothing left for o-1"
    assert steps[2]["result"] == 2 and steps[3]["result"] == {"box": "gift box for o-1"}
    # Each resolution with the activation that handed it over; the wait, not yet.
    assert [s["delivered_in"] for s in steps] == [1, 2, 2, 3, 4, None]
    assert steps[5]["result"] is None
    assert steps[0]["execution_id"] and steps[3]["execution_id"] and steps[4]["scheduled_at"]
    sync = testing.export_history_sync(wf)
    assert {**sync, "exported_at": None} == {**waiting, "exported_at": None}

    await workflows.send_signal(wf, "approved", {"by": "ann"})
    result = await workflows.get_result(wf, timeout=30)
    assert result == {
        "transaction_id": "txn-o-1",
        "reserved": "nothing left for o-1",
        "box": "gift box for o-1",
        "approved_by": "ann",
    }
    finished = await testing.export_history(wf)
    assert finished["workflow"]["status"] == "completed"
    assert finished["workflow"]["result"] == result and finished["workflow"]["finished_at"]
    assert shape(finished) == [*RECORDED[:-1], ("signal", "approved", "completed")]
    assert finished["steps"][5]["result"] == {"by": "ann"}
    (signal,) = finished["signals"]
    assert (signal["name"], signal["payload"], signal["consumed_seq"]) == (
        "approved",
        {"by": "ann"},
        5,
    )

    # Kept as files, replayed with no database: the test's own environment has none now.
    waiting_file, finished_file = tmp_path / "waiting.json", tmp_path / "finished.json"
    waiting_file.write_text(json.dumps(waiting, indent=2))
    finished_file.write_text(json.dumps(finished, indent=2))
    ran_before = list(app.ran)
    for source in (waiting_file, str(waiting_file), waiting):
        replayed = testing.replay(source)
        assert (replayed.outcome, replayed.new_steps, replayed.status) == ("blocked", 0, "waiting")
        assert (replayed.workflow_id, replayed.name, replayed.steps) == (wf, ORDER, 6)
    replayed = testing.replay(finished_file, app.order)
    assert (replayed.outcome, replayed.result, replayed.new_steps) == ("completed", result, 0)
    assert app.ran == ran_before, "replay runs no activity"


async def test_a_change_guarded_by_get_version_replays_and_a_worker_agrees(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_worker(app.Q)
    wf = await waiting_order(store, "o-2")
    history = await testing.export_history(wf)
    monkeypatch.setattr(app, "DEPLOY", "guarded")
    replayed = testing.replay(history)
    assert (replayed.outcome, replayed.new_steps) == ("blocked", 0)
    # Deployed: the worker resumes it on the old path, and a new order takes the new one.
    await workflows.send_signal(wf, "approved", {"by": "bo"})
    assert (await workflows.get_result(wf, timeout=30))["approved_by"] == "bo"
    assert "fraud_check" not in app.ran
    new = await app.order.queue("o-3", 1.0)
    await wait_status(store, new, {"waiting"})
    await until(lambda: "fraud_check" in app.ran, "the new order's fraud check")


async def test_an_unguarded_change_fails_replay_as_the_worker_then_fails_it(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_worker(app.Q)
    wf = await waiting_order(store, "o-4")
    other = await waiting_order(store, "o-5")
    history = await testing.export_history(wf)
    await workflows.send_signal(wf, "approved", {"by": "cy"})
    await workflows.get_result(wf, timeout=30)
    finished = await testing.export_history(wf)
    monkeypatch.setattr(app, "DEPLOY", "unguarded")
    for recorded in (history, finished):
        with pytest.raises(NonDeterminismError) as caught:
            testing.replay(recorded)
        assert str(caught.value) == DIVERGENCE
    # What replay said before the deploy is what the worker records after it.
    await workflows.send_signal(other, "approved", {"by": "di"})
    failed = await wait_status(store, other, {"failed"})
    assert failed["error"]["type"] == "NonDeterminismError"
    assert failed["error"]["message"] == DIVERGENCE


async def test_export_refuses_what_is_not_a_workflow(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    await start_worker(app.Q)
    wf = await waiting_order(store, "o-6")
    activity_id = (await testing.export_history(wf))["steps"][0]["execution_id"]
    with pytest.raises(WorkflowNotFoundError, match="is not a workflow"):
        await testing.export_history(activity_id)
    with pytest.raises(ExecutionNotFoundError, match="no execution"):
        testing.export_history_sync(str(uuid.uuid4()))
    for bad in ("", "nope", "12", None, 7):
        with pytest.raises(ExecutionNotFoundError):
            await testing.export_history(bad)  # type: ignore[arg-type]


# ---- the CLI ---------------------------------------------------------------------------------


def run(*args: str, cwd: Path, deploy: str = "v1") -> subprocess.CompletedProcess[str]:
    # The application's modules (tests.integration.histories_app) import from the repository,
    # whatever folder the command runs in.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HISTORIES_APP_DEPLOY": deploy, "PYTHONPATH": path}
    return subprocess.run(
        [str(BIN / "workflows"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_exports_and_replays_before_a_deploy(
    store: PostgresStore, start_worker: StartWorker, tmp_path: Path
) -> None:
    await start_worker(app.Q)
    waiting = await waiting_order(store, "o-7")
    done = await waiting_order(store, "o-8")
    await workflows.send_signal(done, "approved", {"by": "ed"})
    await workflows.get_result(done, timeout=30)

    # `workflows history ID` is as it was; `history export ID` writes the file.
    shown = run("history", waiting[:12], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"workflow {ORDER} {waiting}: waiting")
    as_json = run("history", "--json", waiting, cwd=tmp_path)
    assert json.loads(as_json.stdout)["execution"]["id"] == waiting
    for name, ident in (("waiting.json", waiting[:12]), ("done.json", done)):
        exported = run("history", "export", ident, cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout.isascii() and exported.stderr == ""
        (tmp_path / name).write_text(exported.stdout)
    assert json.loads((tmp_path / "waiting.json").read_text()) == {
        **await testing.export_history(waiting),
        "exported_at": json.loads((tmp_path / "waiting.json").read_text())["exported_at"],
    }

    app_module = "tests.integration.histories_app"
    for deploy in ("v1", "guarded"):
        ok = run(
            "replay", "waiting.json", "done.json", "-A", app_module, cwd=tmp_path, deploy=deploy
        )
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines() == [
            f"replayed waiting.json: {ORDER} {waiting} (waiting, 6 steps)",
            f"replayed done.json: {ORDER} {done} (completed, 6 steps)",
        ]
    (tmp_path / "broken.json").write_text('{"format": "workflows.history", "version": 2}')
    bad = run(
        "replay",
        "waiting.json",
        "broken.json",
        "done.json",
        "--app",
        app_module,
        cwd=tmp_path,
        deploy="unguarded",
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"failed waiting.json: {DIVERGENCE}",
        "failed broken.json: history format version 2 is newer than this code reads: upgrade "
        "workflows (this code reads version 1)",
        f"failed done.json: {DIVERGENCE}",
    ]
    # Without the app the workflow is not found: said per file, as a worker would say it.
    lost = run("replay", "waiting.json", cwd=tmp_path)
    assert lost.returncode == 1
    assert lost.stderr.startswith("failed waiting.json: module 'tests.integration.histories_app'")
    assert "is not allowed" in lost.stderr and "(import it with -A)" in lost.stderr


def test_cli_usage_and_lookup_errors_exit_with_their_codes(
    database_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    for args, code, text in (
        (["history", "export"], 2, "Missing argument 'EXECUTION_ID'"),
        (["history"], 2, "Missing argument 'EXECUTION_ID'"),
        (["history", "export", str(uuid.uuid4())], 4, "no execution"),
        (["history", "export", "export"], 4, "no execution"),
        (["history", "abcd"], 4, "no execution starts with"),
        (["replay"], 2, "Missing argument 'FILES...'"),
        (["replay", "x.json", "-A", "no_such_module_here"], 1, "cannot import --app module"),
        (["replay", str(tmp_path / "absent.json")], 1, "cannot read the history file"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == code, (args, result.output)
        assert text in result.output, (args, result.output)
    helped = runner.invoke(cli, ["history", "--help"])
    assert helped.exit_code == 0 and "export" in helped.output
