"""The workflow runner on its own (with its batched writes), against a real store.

No executor: the test holds the claims the runner starts and hands their outcomes back as the
executor would; a small loop plays the pump's part of cutting batches when rung.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.conftest import until, wait_status
from workflows import activity, workflow
from workflows.config import Settings
from workflows.records import Claimed, Outcome, Registration
from workflows_postgres.store import PostgresStore
from workflows_worker.batches import ActivationBatches, WriteHealth
from workflows_worker.imports import ImportPolicy
from workflows_worker.metrics import WorkerMetrics
from workflows_worker.slots import Slots
from workflows_worker.wakeup import Wakeup
from workflows_worker.workflow_runner import WorkflowRunner

QUEUE = "runner"


@activity(queue=QUEUE, retries=0)
async def step(i: int) -> str:
    return f"r{i}"


@workflow(queue=QUEUE)
async def two_steps() -> list[str]:
    return [await step.run(0), await step.run(1)]


@workflow(queue=QUEUE)
async def five_steps() -> list[str]:
    return [await step.run(i) for i in range(5)]


@dataclass
class Rig:
    store: PostgresStore
    worker_id: str
    runner: WorkflowRunner
    started: list[Claimed] = field(default_factory=list)

    async def claim(self) -> Claimed:
        _, [c] = await self.store.pump(self.worker_id, [], [QUEUE], 1)
        return c

    async def record(self, c: Claimed, result: str) -> None:
        """An activity's outcome recorded alone (not through the workflow held here)."""
        outcome = Outcome(c.id, c.lease, "completed", result=result, parent_id=c.parent_id)
        recorded, _ = await self.store.pump(self.worker_id, [outcome], [], 0)
        assert recorded == {c.id}


@pytest.fixture
async def rig(store: PostgresStore) -> AsyncIterator[Rig]:
    worker_id = str(uuid.uuid4())
    await store.register_worker(worker_id, Registration("test", 1, (QUEUE,), "test"))
    settings = Settings.from_env()
    wakeup = Wakeup()
    batches = ActivationBatches(store, worker_id, wakeup, WriteHealth(30))
    started: list[Claimed] = []
    runner = WorkflowRunner(
        store,
        worker_id,
        settings,
        queues=frozenset({QUEUE}),
        slots=Slots(4, stuck=lambda: 0, closed=lambda: False),
        activations=batches,
        imports=ImportPolicy.from_settings(settings),
        metrics=WorkerMetrics([QUEUE]),
        start=started.append,
        versions={},
    )

    async def cut_batches() -> None:
        while True:
            await wakeup.wait(1.0)
            wakeup.clear()
            batches.dispatch()

    pump = asyncio.create_task(cut_batches())
    yield Rig(store, worker_id, runner, started)
    pump.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pump
    runner.close()


async def test_an_activitys_outcome_resumes_the_workflow_held_here_in_one_write(
    rig: Rig, store: PostgresStore
) -> None:
    wf = await two_steps.queue()
    assert await rig.runner.run(await rig.claim()) == "waiting"
    # Kept in memory, its first activity claimed for this worker in the same write.
    assert rig.runner.holds(wf)
    [first] = rig.started
    assert (first.kind, first.parent_id, first.lease) == ("activity", wf, 1)
    assert (await store.get_status(first.id))["status"] == "running"

    assert await rig.runner.advance(first, "completed", '"r0"', None) is True
    # The copy in memory went on at once: the next activity started ahead of the write.
    second = rig.started[1]
    assert (second.kind, second.parent_id) == ("activity", wf)
    assert (await wait_status(store, first.id, {"completed"}))["result"] == "r0"
    assert (await store.get_status(wf))["status"] == "waiting"

    assert await rig.runner.advance(second, "completed", '"r1"', None) is True
    assert (await wait_status(store, wf, {"completed"}))["result"] == ["r0", "r1"]
    assert not rig.runner.holds(wf)
    # Each outcome went with its activation: no claim of the workflow came in between.
    assert (await store.get_status(second.id))["status"] == "completed"


async def test_a_claim_right_after_the_copy_resumes_it_and_a_later_one_replays(
    rig: Rig, store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="workflows_worker")

    def replayed() -> int:
        return sum("replayed workflow" in r.getMessage() for r in caplog.records)

    wf = await two_steps.queue()
    assert await rig.runner.run(await rig.claim()) == "waiting"
    # Each outcome recorded alone, as when the copy here could not take it: the workflow is
    # claimed again to go on.
    first = rig.started[0]
    await rig.record(first, '"r0"')
    c = await rig.claim()
    assert (c.id, c.lease) == (wf, 2)
    # The claim right after the copy's: the claim's resolutions are what the copy has not seen.
    assert await rig.runner.run(c) == "waiting"
    assert replayed() == 0
    second = rig.started[1]
    await rig.record(second, '"r1"')
    # A claim came between (another worker's, given back): the copy is out of date.
    await store.release(await rig.claim(), rig.worker_id)
    c = await rig.claim()
    assert c.lease == 4
    assert await rig.runner.run(c) == "completed"
    assert replayed() == 1
    assert (await store.get_status(wf))["result"] == ["r0", "r1"]


async def test_steps_go_on_while_an_earlier_write_is_slow_and_are_written_together(
    rig: Rig, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sequential workflow of quick steps must not wait for a commit every second step:
    # behind a slow write its copy goes on, its next activities start, and the activations
    # that piled up are written in one batch.
    wf = await five_steps.queue()
    assert await rig.runner.run(await rig.claim()) == "waiting"
    gate = asyncio.Event()
    sizes: list[int] = []
    advance = store.advance

    async def slow_advance(worker_id: str, items: Any) -> Any:
        sizes.append(len(items))
        await gate.wait()
        return await advance(worker_id, items)

    monkeypatch.setattr(store, "advance", slow_advance)
    resumed = []
    for i in range(4):
        c = rig.started[i]
        resumed.append(asyncio.create_task(rig.runner.advance(c, "completed", f'"r{i}"', None)))
        await until(lambda i=i: len(rig.started) == i + 2, f"activity {i + 1} started")
    assert sizes == [1]  # the first write still held; the rest wait behind it
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*resumed), 20) == [True] * 4
    assert await rig.runner.advance(rig.started[4], "completed", '"r4"', None) is True
    assert (await wait_status(store, wf, {"completed"}))["result"] == [f"r{i}" for i in range(5)]
    assert sizes[1] == 3
    for c in rig.started:
        assert (await store.get_status(c.id))["status"] == "completed"
