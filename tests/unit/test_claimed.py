"""Claims made without the dataclass's __init__ (the worker's hot path) are the same objects
as those made with it: every field set, equal, hashable, frozen."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from workflows.records import ChildRow, Claimed, claimed_of, eager_claims
from workflows_postgres.store import _claimed

FIELDS = {f.name for f in dataclasses.fields(Claimed)}


def test_claimed_of_is_the_claim_the_constructor_makes() -> None:
    values = {
        "id": "0190a1b2-0000-7000-8000-000000000001",
        "kind": "activity",
        "name": "app:step",
        "queue": "default",
        "args": '{"args":[1],"kwargs":{}}',
        "attempts": 2,
        "max_retries": 3,
        "timeout": 30.0,
        "lease": 4,
        "version": None,
        "wakeups": 1,
        "parent_id": "0190a1b2-0000-7000-8000-000000000002",
        "deadline": datetime(2026, 1, 1, tzinfo=UTC),
        "pickup_latency": 0.25,
        "parent_seq": 7,
        "resolutions": None,
        "trace_context": None,
    }
    assert values.keys() == FIELDS
    fast, made = claimed_of(values), Claimed(**values)
    assert fast == made and hash(fast) == hash(made) and repr(fast) == repr(made)
    assert dataclasses.replace(fast, lease=5) == dataclasses.replace(made, lease=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.lease = 9  # type: ignore[misc]


def test_eager_claims_and_claimed_rows_set_every_field() -> None:
    # Fails when a field is added to Claimed and not to the claims built from dicts.
    child = ChildRow(
        id="c1",
        kind="activity",
        name="app:step",
        queue="q",
        priority=0,
        args="{}",
        max_retries=2,
        timeout=5.0,
        version=None,
        workflow_timeout=None,
        seq=3,
        eager=True,
    )
    (claim,) = eager_claims("wf", [child, dataclasses.replace(child, id="c2", eager=False)], "tc")
    assert vars(claim).keys() == FIELDS
    assert claim == Claimed(
        id="c1",
        kind="activity",
        name="app:step",
        queue="q",
        args="{}",
        attempts=1,
        max_retries=2,
        timeout=5.0,
        lease=1,
        version=None,
        wakeups=0,
        parent_id="wf",
        deadline=None,
        pickup_latency=0.0,
        parent_seq=3,
        trace_context="tc",
    )
    row = {
        "id": "j1",
        "kind": "workflow",
        "name": "app:flow",
        "queue": "q",
        "args": "{}",
        "attempts": 1,
        "max_retries": 0,
        "timeout_seconds": None,
        "lease": 2,
        "version": 3,
        "wakeups": 1,
        "parent_id": None,
        "deadline": None,
        "pickup_latency": 0.5,
        "parent_seq": None,
        "resolutions": '[{"seq":0,"kind":"activity","name":"app:step","status":"completed",'
        '"result":1,"error":null}]',
        "trace_context": None,
    }
    decoded = _claimed(row)  # type: ignore[arg-type]
    assert vars(decoded).keys() == FIELDS
    assert decoded.timeout is None and decoded.version == 3 and decoded.lease == 2
    assert decoded.resolutions is not None
    [resolution] = decoded.resolutions
    assert (resolution.seq, resolution.status, resolution.result) == (0, "completed", 1)
