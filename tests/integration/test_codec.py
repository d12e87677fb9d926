"""The payload codec end to end: typed values and Fernet-encrypted payloads through real
workers on a real PostgreSQL, the rows read back with SQL, and what the CLI and the dashboard
show without the key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import workflows
from tests.integration import codec_app, jobs_app
from tests.integration.conftest import StartWorker, wait_status
from workflows import SerializationError, codec
from workflows_cli.dashboard.app import create_app
from workflows_postgres.store import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CODEC_PATH = "tests.integration.codec_app:payloads"
APPROVED_AT = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)

# Every payload column; a version marker (workflows.now(), get_version) is the library's own.
PAYLOAD_COLUMNS = """
    SELECT 'executions.args', args::text FROM workflows.executions
    UNION ALL SELECT 'executions.result', result::text FROM workflows.executions
        WHERE result IS NOT NULL
    UNION ALL SELECT 'workflow_steps.result', result::text FROM workflows.workflow_steps
        WHERE result IS NOT NULL AND kind <> 'version'
    UNION ALL SELECT 'workflow_signals.payload', payload::text FROM workflows.workflow_signals
"""


@pytest.fixture
def typed_codec(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WORKFLOWS_CODEC", CODEC_PATH)
    codec_app.seen.clear()
    yield
    codec.use(None)


async def ciphertext_only(store: PostgresStore, at_least: int) -> list[str]:
    """The stored payloads, each checked to be an envelope of ciphertext."""
    rows = await store.pool.fetch(PAYLOAD_COLUMNS)
    assert len(rows) >= at_least
    for column, text in rows:
        envelope = json.loads(text)
        assert set(envelope) == {"$workflows_wrapped", "data"}, (column, text)
        assert envelope["$workflows_wrapped"] == "fernet"
        for plain in (codec_app.SECRET, "Receipt", "19.99", "2024", '$workflows"'):
            assert plain not in text, (column, text)
    return [text for _, text in rows]


def expected_checkout() -> dict[str, Any]:
    quote = codec_app.Quote(sku="sku-1", price=Decimal("19.99"), valid_until="2030-01-01")
    return {
        "quote": quote,
        "receipt": codec_app.RECEIPT,
        "approved_at": APPROVED_AT,
        "total": Decimal("21.09"),
    }


async def wait_for_signal_step(store: PostgresStore, workflow_id: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while not any(s["kind"] == "signal" for s in await store.steps_of(workflow_id)):
        assert loop.time() < end, await store.steps_of(workflow_id)
        await asyncio.sleep(0.05)


async def test_a_typed_job_round_trips_through_a_database_that_holds_ciphertext_only(
    store: PostgresStore, start_worker: StartWorker, typed_codec: None
) -> None:
    when = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
    job_id = await codec_app.bill.queue(codec_app.RECEIPT, codec_app.SECRET, when=when)
    await start_worker("codec")
    assert await workflows.get_result(job_id, timeout=30) == {
        "receipt": codec_app.RECEIPT,
        "billed_at": when,
        "ids": (codec_app.RECEIPT.id,),
        "card_tail": "SECRET",
    }
    await ciphertext_only(store, at_least=2)


@pytest.mark.parametrize("sticky", ["0", "100"])
async def test_a_workflow_gets_the_same_typed_values_on_every_activation(
    store: PostgresStore,
    start_worker: StartWorker,
    typed_codec: None,
    monkeypatch: pytest.MonkeyPatch,
    sticky: str,
) -> None:
    # Without a sticky cache each activation replays the history from the database.
    monkeypatch.setenv("WORKFLOWS_WORKER_STICKY_CACHE", sticky)
    await start_worker("codec")
    wid = await codec_app.checkout.queue("sku-1", codec_app.SECRET)
    await wait_for_signal_step(store, wid)
    await workflows.send_signal(wid, "approve", {"by": "ann", "at": APPROVED_AT})
    assert await workflows.get_result(wid, timeout=30) == expected_checkout()
    assert codec_app.seen == [("Quote", "Receipt", "datetime")]
    # The workflow and its two activities (args, results), their steps and the signal.
    await ciphertext_only(store, at_least=3 * 2 + 2 + 1)
    # Errors are stored in plain text (docs/codec.md): none here.
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM workflows.executions WHERE error IS NOT NULL"
        )
        == 0
    )


def _worker_process(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "currant"), "worker", "-q", "codec"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=40)
    assert worker.returncode == 0, output
    return output


async def test_a_new_worker_process_replays_typed_encrypted_history_exactly(
    store: PostgresStore, typed_codec: None
) -> None:
    env = {**os.environ, "WORKFLOWS_WORKER_POLL_INTERVAL": "0.2"}
    wid = await codec_app.checkout.queue("sku-1", codec_app.SECRET)
    first = _worker_process(env)
    try:
        await wait_for_signal_step(store, wid)
    finally:
        _stop(first)
    await workflows.send_signal(wid, "approve", {"by": "ann", "at": APPROVED_AT})
    second = _worker_process(env)
    try:
        assert await workflows.get_result(wid, timeout=30) == expected_checkout()
    finally:
        output = _stop(second)
    assert f"replayed workflow tests.integration.codec_app:checkout id={wid}" in output
    await ciphertext_only(store, at_least=3 * 2 + 2 + 1)


async def test_an_unregistered_type_fails_the_execution_at_once_saying_so(
    store: PostgresStore, start_worker: StartWorker, typed_codec: None
) -> None:
    codec.use(codec_app.producer_with_extra)
    job_id = await codec_app.takes_anything.queue(codec_app.Extra("x"))
    codec.use(None)
    await start_worker("codec")
    status = await wait_status(store, job_id, {"failed"})
    assert status["attempts"] == 1
    assert status["error"]["type"] == "SerializationError"
    assert (
        "tests.integration.codec_app.Extra', which is not registered"
        in (status["error"]["message"])
    )


async def test_a_worker_without_the_key_fails_an_encrypted_job_instead_of_guessing(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    codec.use(codec_app.payloads)
    job_id = await codec_app.takes_anything.queue("x")
    codec.use(None)
    await start_worker("codec")
    status = await wait_status(store, job_id, {"failed"})
    assert status["error"]["type"] == "SerializationError"
    assert "no wrapper" in status["error"]["message"]


async def test_the_default_codec_refuses_integer_dict_keys_and_writes_nothing(
    store: PostgresStore,
) -> None:
    with pytest.raises(SerializationError, match="dict key '1' of type int"):
        await jobs_app.record.queue({1: "one"})
    assert await store.pool.fetchval("SELECT count(*) FROM workflows.executions") == 0


async def _finished_checkout(store: PostgresStore, start_worker: StartWorker) -> tuple[str, str]:
    """A completed job and workflow, stored encrypted (the codec then put back to none)."""
    codec.use(codec_app.payloads)
    try:
        await start_worker("codec")
        job_id = await codec_app.bill.queue(codec_app.RECEIPT, "card", when=APPROVED_AT)
        wid = await codec_app.checkout.queue("sku-1", codec_app.SECRET)
        await wait_for_signal_step(store, wid)
        await workflows.send_signal(wid, "approve", {"by": "ann", "at": APPROVED_AT})
        await workflows.get_result(wid, timeout=30)
        await workflows.get_result(job_id, timeout=30)
    finally:
        codec.use(None)
    return job_id, wid


def _cli(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BIN / "workflows"), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_the_cli_shows_encrypted_payloads_without_the_key_and_reads_them_with_it(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    job_id, wid = await _finished_checkout(store, start_worker)
    keyless = {k: v for k, v in os.environ.items() if k != "WORKFLOWS_CODEC"}
    shown = await asyncio.to_thread(_cli, "status", wid, env=keyless)
    assert "result:       <encrypted: fernet>" in shown
    assert shown.count("<encrypted: fernet>") >= 3  # the result and the steps' results
    as_json = json.loads(await asyncio.to_thread(_cli, "status", job_id, "--json", env=keyless))
    assert as_json["result"]["$workflows_wrapped"] == "fernet"
    assert as_json["args"]["$workflows_wrapped"] == "fernet"
    history = json.loads(await asyncio.to_thread(_cli, "history", wid, "--json", env=keyless))
    assert {s["result"]["$workflows_wrapped"] for s in history["steps"]} == {"fernet"}
    listed = json.loads(await asyncio.to_thread(_cli, "list", "--json", env=keyless))
    assert len(listed) == 4
    assert "completed" in await asyncio.to_thread(_cli, "list", env=keyless)

    # With the workers' codec the CLI reads them (typed values in their tagged JSON form).
    keyed = {**keyless, "WORKFLOWS_CODEC": CODEC_PATH}
    status = json.loads(await asyncio.to_thread(_cli, "status", job_id, "--json", env=keyed))
    assert status["result"]["card_tail"] == "card"
    assert status["result"]["billed_at"] == {
        "$workflows": "datetime",
        "value": "2024-06-01T09:00:00+00:00",
    }
    assert "<encrypted" not in await asyncio.to_thread(_cli, "status", wid, env=keyed)


async def test_the_dashboard_shows_encrypted_payloads_without_failing(
    store: PostgresStore, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, wid = await _finished_checkout(store, start_worker)
    monkeypatch.delenv("WORKFLOWS_CODEC", raising=False)

    def pages() -> list[str]:
        with TestClient(create_app()) as client:
            found = []
            for path in (f"/executions/{job_id}", f"/executions/{wid}", "/executions"):
                response = client.get(path)
                assert response.status_code == 200, response.text
                found.append(response.text)
            return found

    job_page, workflow_page, _ = await asyncio.to_thread(pages)
    assert "&lt;encrypted: fernet&gt;" in job_page
    assert "&lt;encrypted: fernet&gt;" in workflow_page
    assert codec_app.SECRET not in job_page + workflow_page


async def test_an_exported_history_replays_with_the_codec_and_is_refused_without_its_key(
    store: PostgresStore, start_worker: StartWorker
) -> None:
    from workflows.testing import HistoryFormatError, export_history, replay

    _, wid = await _finished_checkout(store, start_worker)
    with pytest.raises(HistoryFormatError, match=r"encrypted \(fernet\)"):
        await export_history(wid)
    codec.use(codec_app.payloads)
    try:
        document = await export_history(wid)
        # The export holds plaintext JSON (reviewed before it is committed), typed values tagged.
        assert document["workflow"]["args"] == ["sku-1", codec_app.SECRET]
        replayed = replay(json.loads(json.dumps(document)))
    finally:
        codec.use(None)
    assert replayed.outcome == "completed"
    assert replayed.result == expected_checkout()
