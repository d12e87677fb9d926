"""A step run without options: its options are worked out once per function, and again after
any attribute of the function changes."""

from __future__ import annotations

import pytest

from workflows import activity
from workflows.api import _NO_OPTIONS, _step_options
from workflows.errors import ConfigurationError


@activity(queue="step-options", timeout=30, retries=2)
async def charge(amount: int) -> int:
    return amount


@activity(queue="step-options", concurrency_key=lambda account: account)
async def keyed(account: str) -> str:
    return account


def test_a_changed_attribute_shows_in_the_next_steps_options() -> None:
    first = _step_options(charge, _NO_OPTIONS, (1,), {})
    assert (first.queue, first.timeout, first.retries) == ("step-options", 30, 2)
    assert _step_options(charge, _NO_OPTIONS, (2,), {}) is first
    charge.timeout = 5
    charge.queue_name = "elsewhere"
    try:
        changed = _step_options(charge, _NO_OPTIONS, (3,), {})
        assert (changed.queue, changed.timeout) == ("elsewhere", 5)
    finally:
        charge.timeout = 30
        charge.queue_name = "step-options"


def test_an_attribute_set_to_a_bad_value_fails_the_next_step() -> None:
    _step_options(charge, _NO_OPTIONS, (1,), {})
    charge.queue_name = "not a queue!"
    try:
        with pytest.raises(ConfigurationError):
            _step_options(charge, _NO_OPTIONS, (1,), {})
    finally:
        charge.queue_name = "step-options"


def test_a_key_computed_from_the_arguments_is_computed_for_each_step() -> None:
    assert _step_options(keyed, _NO_OPTIONS, ("a",), {}).concurrency_key == "a"
    assert _step_options(keyed, _NO_OPTIONS, ("b",), {}).concurrency_key == "b"
