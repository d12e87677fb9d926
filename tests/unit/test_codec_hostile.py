"""Hostile values at the codec: refused with SerializationError before any database sees them.

Pure: what PostgreSQL refuses (U+0000 in jsonb, invalid UTF-8, too much nesting, numbers
numeric cannot hold) is known here and checked against a real server in
tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows import codec
from workflows.errors import SerializationError

MIB = 1024 * 1024


def nested(depth: int, leaf: Any = None) -> Any:
    """``depth`` levels of lists around ``leaf``: nested(2) is [[None]]."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def reference_depth(value: Any) -> int:
    """What codec._depth must find, from the Python value itself."""
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@pytest.fixture
def recursion_limit() -> Iterator[None]:
    before = sys.getrecursionlimit()
    yield
    sys.setrecursionlimit(before)


@pytest.fixture
def int_digits_unlimited() -> Iterator[None]:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(before)


# ---- NUL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "\x00",
        ["ok", {"deep": ["a\x00b"]}],
        {"outer": {"key\x00": 1}},
        {"\x00": None},
    ],
)
def test_nul_anywhere_is_refused_naming_what(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"signal payload contains a NUL"):
        codec.encode(value, what="signal payload")


@pytest.mark.parametrize("before", ["", "\\", "\\\\", "C:\\", "a\\\\\\"])
def test_nul_is_told_from_a_backslash_followed_by_u0000(before: str) -> None:
    # A user's backslash is written \\ : after an even run of them "u0000" is plain text.
    text = before + "\\u0000"
    assert json.loads(codec.encode({text: [text]})) == {text: [text]}
    # After an odd run, the encoder's escape of a real NUL.
    with pytest.raises(SerializationError, match="NUL"):
        codec.encode({"k": [before + "\x00"]})


# ---- lone surrogates and bytes ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["\ud800", {"k": ["x\udfffy"]}, {"key\udc80": 1}])
def test_lone_surrogate_in_key_or_value_is_refused(value: Any) -> None:
    with pytest.raises(SerializationError, match="result contains a lone surrogate"):
        codec.encode(value, what="result")


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    text = "€" * 400_000  # 400,000 characters, 1,200,000 bytes
    with pytest.raises(SerializationError, match=r"1200002 bytes as JSON, over the limit"):
        codec.encode(text, what="arguments", max_bytes=MIB)
    assert codec.encode("€" * 349_000, max_bytes=MIB) == json.dumps(
        "€" * 349_000, ensure_ascii=False
    )


# ---- nesting ---------------------------------------------------------------------------------


def test_nesting_over_max_depth_is_refused_even_when_python_encodes_it() -> None:
    assert codec.encode(nested(codec.MAX_DEPTH, 1)) == "[" * 512 + "1" + "]" * 512
    with pytest.raises(SerializationError, match="nested more than 512 levels"):
        codec.encode(nested(codec.MAX_DEPTH + 1, 1))
    with pytest.raises(SerializationError, match="nested more than 512 levels"):
        codec.encode({"a": nested(codec.MAX_DEPTH, {})})


def test_deep_nesting_with_a_raised_recursion_limit_is_still_refused(
    recursion_limit: None,
) -> None:
    sys.setrecursionlimit(50_000)
    with pytest.raises(SerializationError, match="nested more than 512 levels"):
        codec.encode(nested(10_000))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert codec.encode(["[" * 5000, "{" * 5000, '"[\\'])
    # Closing brackets in strings cannot hide real depth either.
    hidden = nested(600, ["]" * 700, '"]]', "\\"])
    with pytest.raises(SerializationError, match="nested more than 512 levels"):
        codec.encode(hidden)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('[]{}"\\ax€\n'), max_size=8),
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('[]{}"\\k'), max_size=4), children, max_size=4
        )
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=30))
def test_depth_scan_matches_the_values_nesting(value: Any, extra: int) -> None:
    value = nested(extra, value)
    text = codec.encode(value)
    assert text == json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert codec._depth(text.encode()) == reference_depth(value)


# ---- other values JSON or numeric cannot hold ---------------------------------------------------


def test_every_encoder_failure_is_a_serialization_error_naming_what() -> None:
    for value in (float("nan"), float("inf"), float("-inf"), object(), {(1, 2): 3}):
        with pytest.raises(SerializationError, match="arguments is not JSON-serializable"):
            codec.encode_call((), {"x": [value]}, max_bytes=None)
    with pytest.raises(SerializationError, match="arguments is nested too deeply"):
        codec.encode_call((nested(10_000),), {}, max_bytes=None)


def test_integer_numeric_cannot_hold_is_refused_when_python_allows_it(
    int_digits_unlimited: None,
) -> None:
    with pytest.raises(SerializationError, match="more than 131072 digits"):
        codec.encode([10**131072])
    # As text, the same digits are fine.
    assert codec.encode(["9" * 131073])


# ---- error payloads ----------------------------------------------------------------------------


class RaisingStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class NotAString(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]


class SneakyStr(str):
    def __len__(self) -> int:
        raise RuntimeError("len")


class ReturnsSubclass(Exception):
    def __str__(self) -> str:
        return SneakyStr("odd \x00 message")


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (RaisingStr(), "<unprintable RaisingStr: __str__ raised RuntimeError>"),
        (NotAString(), "<unprintable NotAString: __str__ raised TypeError>"),
        (ReturnsSubclass(), "odd \ufffd message"),
        (ValueError("nul \x00 and \ud800 surrogate"), "nul \ufffd and \ufffd surrogate"),
    ],
)
def test_error_payload_never_raises_and_is_always_storable(
    exc: BaseException, message: str
) -> None:
    payload = codec.error_payload(raised(exc))
    assert payload["type"] == type(exc).__name__
    assert payload["message"] == message
    assert type(exc).__name__ in payload["traceback"]
    assert json.loads(codec.encode(payload)) == payload


def test_error_payload_cuts_a_huge_message_and_says_so() -> None:
    payload = codec.error_payload(raised(RuntimeError("m" * 5_000_000)))
    assert payload["message"] == "m" * 4000 + "... [cut: 5000000 characters in all]"
    assert len(payload["traceback"]) == codec.MAX_TRACEBACK_CHARS
    assert len(codec.encode(payload, max_bytes=MIB)) < 13_000


def test_safe_str_for_log_lines() -> None:
    assert codec.safe_str(RaisingStr()) == "<unprintable RaisingStr: __str__ raised RuntimeError>"
    assert codec.safe_str("x" * 10, limit=3) == "xxx... [cut: 10 characters in all]"
    assert codec.safe_str("x" * 5000, limit=None) == "x" * 5000
    assert type(codec.safe_str(SneakyStr("ok"))) is str
