"""JSON encoding of arguments, results and errors. Never pickle."""

from __future__ import annotations

import json
import traceback
from typing import Any

from workflows.errors import SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode(value: Any, *, what: str = "value", max_bytes: int | None = None) -> str:
    """JSON text of ``value``; a clear :class:`SerializationError` if it cannot be stored."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from None
    if "\x00" in text:
        # PostgreSQL's jsonb cannot hold U+0000 in a string.
        raise SerializationError(f"{what} contains a NUL character (\\u0000), which jsonb refuses")
    if max_bytes is not None and len(text) > max_bytes and len(text.encode()) > max_bytes:
        raise SerializationError(
            f"{what} is {len(text.encode())} bytes as JSON, over the limit of {max_bytes} "
            "(WORKFLOWS_MAX_PAYLOAD_BYTES)"
        )
    return text


def decode(text: str | bytes | None) -> Any:
    if text is None:
        return None
    return json.loads(text)


def encode_call(args: tuple[Any, ...], kwargs: dict[str, Any], *, max_bytes: int | None) -> str:
    return encode({"args": list(args), "kwargs": kwargs}, what="arguments", max_bytes=max_bytes)


def decode_call(text: str | bytes) -> tuple[list[Any], dict[str, Any]]:
    data = json.loads(text)
    return list(data.get("args", [])), dict(data.get("kwargs", {}))


def error_payload(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """What is stored of an exception: its type, message and (optionally) traceback."""
    payload: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if with_traceback:
        payload["traceback"] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        )[-8000:]
    return payload
