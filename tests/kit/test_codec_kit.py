"""The test kit with a typed, encrypted payload codec: assert_enqueued compares the values the
code was called with, and a job runs to its typed result."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from currant.testing import Environment
from tests.integration import codec_app
from workflows import codec


@pytest.fixture
def typed_codec() -> Iterator[None]:
    codec.use(codec_app.payloads)
    yield
    codec.use(None)


async def test_assert_enqueued_matches_typed_encrypted_arguments(
    workflows_env: Environment, typed_codec: None
) -> None:
    when = datetime(2024, 5, 2, tzinfo=UTC)
    await codec_app.bill.queue(codec_app.RECEIPT, "card", when=when)
    found = await workflows_env.assert_enqueued(
        codec_app.bill, args=[codec_app.RECEIPT, "card"], kwargs={"when": when}, count=1
    )
    # What it returns is what get_status shows: unwrapped (this process has the key), tagged.
    assert found[0]["args"]["kwargs"]["when"] == {
        "$workflows": "datetime",
        "value": "2024-05-02T00:00:00+00:00",
    }
    with pytest.raises(AssertionError, match="found 0 matching"):
        await workflows_env.assert_enqueued(codec_app.bill, kwargs={"when": datetime.now(UTC)})
