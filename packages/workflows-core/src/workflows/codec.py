"""JSON encoding of arguments, results and errors. Never pickle.

:func:`encode` refuses, with :class:`SerializationError`, every value PostgreSQL or the driver
would refuse later (so nothing half-written reaches the database): values JSON cannot express
(NaN, infinity, other types), U+0000, lone surrogates, more than :data:`MAX_DEPTH` levels of
nesting, numbers longer than ``numeric`` holds, and text over ``max_bytes`` bytes of UTF-8.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from itertools import accumulate
from typing import Any

from workflows.errors import SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# Arrays and objects nested in one stored value. PostgreSQL 15's json parser takes about
# 14,500 levels at the default max_stack_depth (2 MB), but a worker decodes the value again
# with json.loads, which stops near the interpreter's recursion limit (1,000 frames by
# default, some of them already in use): 512 leaves room for both.
MAX_DEPTH = 512
_DEPTH_SCAN_FROM = 2 * MAX_DEPTH
# What an error's stored message keeps; the traceback keeps its last MAX_TRACEBACK_CHARS.
MAX_MESSAGE_CHARS = 4000
MAX_TRACEBACK_CHARS = 8000
# Digits of a number's integer part that PostgreSQL's numeric (and so jsonb) holds.
_PG_NUMERIC_DIGITS = 131072

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

# The encoder writes U+0000 as the escape \u0000, which jsonb refuses. It is an escape only
# after an even number of backslashes: a user's literal backslash before "u0000" is written
# \\u0000 and is fine.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# A JSON string in the encoder's output (whose escapes are all a backslash and one more
# character, or \uXXXX whose first character is enough to skip here).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_LONG_DIGITS = re.compile(rf"(?<![0-9])[0-9]{{{_PG_NUMERIC_DIGITS + 1}}}")
# For the depth scan, on UTF-8 bytes (where these ASCII bytes never occur inside a multi-byte
# character): escapes, everything but brackets and quotes, and curly to square brackets.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_BRACKET_RUN = re.compile(rb"\[+|\]+")
_OPEN = ord("[")
# What an error message cannot hold: U+0000 (jsonb) and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def encode(value: Any, *, what: str = "value", max_bytes: int | None = None) -> str:
    """JSON text of ``value``; a clear :class:`SerializationError` if it cannot be stored.

    The text of an ordinary value is exactly ``json.dumps`` with ``ensure_ascii=False``,
    ``allow_nan=False`` and ``separators=(",", ":")``: recorded step history compares it.
    """
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise SerializationError(
            f"{what} is nested too deeply to encode as JSON (at most {MAX_DEPTH} levels)"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {safe_str(exc)}") from None
    # A memchr in the common case (no backslash at all); the regex only for a likely NUL.
    if "\\" in text and "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise SerializationError(f"{what} contains a NUL character (\\u0000), which jsonb refuses")
    data = None
    if text.isascii():
        # The usual case: no surrogate possible and one byte a character, so no encode().
        size = len(text)
    else:
        try:
            data = text.encode()
        except UnicodeEncodeError:
            raise SerializationError(
                f"{what} contains a lone surrogate (a half of a UTF-16 pair such as '\\ud800'), "
                "which is not valid UTF-8 and cannot be stored"
            ) from None
        size = len(data)
    if max_bytes is not None and size > max_bytes:
        raise SerializationError(
            f"{what} is {size} bytes as JSON, over the limit of {max_bytes} "
            "(WORKFLOWS_MAX_PAYLOAD_BYTES)"
        )
    # Nesting deeper than MAX_DEPTH takes more than 2 * MAX_DEPTH characters.
    if size > _DEPTH_SCAN_FROM and _depth(text.encode() if data is None else data) > MAX_DEPTH:
        raise SerializationError(
            f"{what} is nested more than {MAX_DEPTH} levels deep, which is refused so that "
            "PostgreSQL and the worker's JSON decoder can both read it back"
        )
    if size > _PG_NUMERIC_DIGITS and _has_long_number(text):
        raise SerializationError(
            f"{what} holds a number of more than {_PG_NUMERIC_DIGITS} digits, "
            "more than PostgreSQL's numeric holds"
        )
    return text


def _has_long_number(text: str) -> bool:
    # The encoder itself refuses integers over sys.get_int_max_str_digits() (4300 by
    # default): only a process that raised or lifted that limit can write one this long.
    if 0 < sys.get_int_max_str_digits() <= _PG_NUMERIC_DIGITS:
        return False
    return bool(_LONG_DIGITS.search(text) and _LONG_DIGITS.search(_STRING.sub('""', text)))


def _depth(data: bytes) -> int:
    """How deeply arrays and objects nest in the encoder's output (as UTF-8 bytes).

    Brackets inside strings do not count. Byte-wide C passes do the work, so a large payload
    costs a few copies of it, not a Python loop over its characters.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    skeleton = data.translate(None, _NOT_STRUCTURE)
    # Left: brackets and the quotes around strings. When every run of quotes is even, each
    # string is a `""` with nothing inside, so every bracket is outside: drop the quotes.
    # Otherwise some string holds brackets: keep what lies between the strings.
    if skeleton.count(b'""') * 2 == skeleton.count(b'"'):
        brackets = skeleton.translate(_SQUARE, b'"')
    else:
        brackets = b"".join(skeleton.split(b'"')[::2]).translate(_SQUARE)
    # Each pass drops the innermost pairs, so passes count levels: a few settle the usual
    # shallow payload. What is left of a deep one is counted run by run.
    depth = 0
    while brackets and depth < 8:
        brackets = brackets.replace(b"[]", b"")
        depth += 1
    if brackets:
        runs = _BRACKET_RUN.findall(brackets)
        depth += max(accumulate(len(run) if run[0] == _OPEN else -len(run) for run in runs))
    return depth


def decode(text: str | bytes | None) -> Any:
    if text is None:
        return None
    return json.loads(text)


def encode_call(args: tuple[Any, ...], kwargs: dict[str, Any], *, max_bytes: int | None) -> str:
    return encode({"args": list(args), "kwargs": kwargs}, what="arguments", max_bytes=max_bytes)


def decode_call(text: str | bytes) -> tuple[list[Any], dict[str, Any]]:
    data = json.loads(text)
    return list(data.get("args", [])), dict(data.get("kwargs", {}))


def storable(text: str) -> str:
    """``text`` with U+0000 and lone surrogates replaced by U+FFFD, so jsonb can hold it."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def safe_str(value: object, *, limit: int | None = MAX_MESSAGE_CHARS) -> str:
    """``str(value)`` that never raises: for error messages and log lines.

    A ``__str__`` that raises or returns a non-string gives a placeholder naming the type;
    the text is cut to ``limit`` characters (saying so) and made storable (:func:`storable`).
    """
    try:
        text = str(value)
    except Exception as exc:
        # type(...).__name__ is a plain str for every class: this line cannot raise again.
        text = f"<unprintable {type(value).__name__}: __str__ raised {type(exc).__name__}>"
    if type(text) is not str:
        # A str subclass may override anything used below.
        text = str.__str__(text)
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... [cut: {len(text)} characters in all]"
    return storable(text)


def error_payload(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """What is stored of an exception: its type, message and (optionally) traceback.

    Never raises, whatever the exception holds, and its encoding never fails: the message is
    :func:`safe_str` (at most :data:`MAX_MESSAGE_CHARS`), the traceback its last
    :data:`MAX_TRACEBACK_CHARS` characters.
    """
    payload: dict[str, Any] = {
        "type": storable(type(exc).__name__),
        "message": safe_str(exc),
    }
    if with_traceback:
        try:
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            text = "".join(lines)[-MAX_TRACEBACK_CHARS:]
        except Exception as failure:
            text = f"<traceback unavailable: {type(failure).__name__}>"
        payload["traceback"] = storable(text)
    return payload
