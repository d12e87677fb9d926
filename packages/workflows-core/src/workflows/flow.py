"""Flow control's values, checked where they are given: rates, keys and limits.

The limits themselves live in the database (``workflows.queues``, ``workflows.rate_limits``)
so that every worker sees the same numbers; the store enforces them where executions start.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflows.errors import ConfigurationError

# Keys end up in a btree index (and in notifications' payloads nowhere): bounded well below
# what an index entry holds.
MAX_KEY_BYTES = 500
# An int4 column, and far past anything a single key could need.
MAX_LIMIT = 1_000_000
MAX_RATE_STARTS = 1_000_000
MAX_RATE_PERIOD = 7 * 86400.0

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")

KeyOption = str | Callable[..., str | None] | None


@dataclass(frozen=True)
class Rate:
    """At most ``starts`` starts in any ``period`` seconds."""

    starts: int
    period: float

    def __str__(self) -> str:
        for unit, secs in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
            if self.period == secs:
                return f"{self.starts}/{unit}"
        period = f"{self.period:g}"
        return f"{self.starts}/s" if period == "1" else f"{self.starts}/{period}s"


def parse_rate(value: Any) -> Rate:
    """``"100/m"``, ``"5/s"``, ``"1000/h"``, ``"10/30s"`` (10 per 30 seconds), or a Rate."""
    if isinstance(value, Rate):
        rate = value
    elif isinstance(value, str):
        m = _RATE.match(value.lower())
        if m is None or m[3] not in _UNITS:
            raise ConfigurationError(
                f"rate must look like '100/m' (starts per s, m, h or d; or '10/30s'), got {value!r}"
            )
        rate = Rate(int(m[1]), float(m[2] or 1) * _UNITS[m[3]])
    else:
        raise ConfigurationError(f"rate must be a string like '100/m', got {value!r}")
    if not 1 <= rate.starts <= MAX_RATE_STARTS:
        raise ConfigurationError(
            f"a rate allows 1 to {MAX_RATE_STARTS:,} starts per period, got {rate.starts}"
        )
    if not 0.001 <= rate.period <= MAX_RATE_PERIOD:
        raise ConfigurationError(f"a rate's period is 1 ms to 7 days, got {rate.period:g} seconds")
    return rate


def check_limit(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= MAX_LIMIT:
        raise ConfigurationError(f"{name} must be {minimum} to {MAX_LIMIT:,}, got {value}")
    return value


def check_key(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    if not value or value != value.strip():
        raise ConfigurationError(f"{name} must be non-empty, without surrounding spaces")
    if "\x00" in value:
        raise ConfigurationError(f"{name} must not contain NUL characters")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ConfigurationError(f"{name} is over {MAX_KEY_BYTES} bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{name} must be valid text (no lone surrogates)") from None
    return value


def check_key_option(name: str, value: Any) -> None:
    """A decorator's key: a string, or a function of the call's arguments, or None."""
    if value is None or callable(value):
        return
    check_key(name, value)


def resolve_key(
    name: str, value: KeyOption, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The key of one call: computed from its arguments when ``value`` is a function."""
    if value is None:
        return None
    if callable(value):
        key = value(*args, **kwargs)
        if key is None:
            return None
        return check_key(f"{name} (as computed)", key)
    return value
