"""Durations as people write them: ``90s``, ``15m``, ``12h``, ``7d``, ``2w``.

Retention settings and ``idempotency_ttl`` take them; ``0`` and ``forever`` mean no end.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from workflows.errors import preview

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
# What timedelta and PostgreSQL's interval both hold (timedelta's limit, 999,999,999 days,
# is far past interval's: about 178 million years), with room to spare.
MAX_SECONDS = 100 * 365 * 86400

FOREVER = ("0", "forever")

# Seconds, where 0 means no end (unlike the other float settings, which must be above 0).
Duration = float


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a number and a unit, s/m/h/d/w); 0 for ``0`` or ``forever``.

    ValueError naming the accepted forms otherwise.
    """
    raw = text.strip().lower()
    if raw in FOREVER:
        return 0.0
    found = _DURATION.fullmatch(raw)
    if found is None:
        raise ValueError(
            f"{preview(text)} is not a duration: a number and a unit (90s, 15m, 12h, 7d, 2w), "
            "or 0 / forever for no end"
        )
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    check_seconds(seconds)
    return seconds


def age_seconds(text: str) -> float | None:
    """Seconds in ``text`` written as a number and a unit (``"30m"``: an age, as ``--since``
    takes it), None when it is not written so (an ISO-8601 time, say)."""
    found = _DURATION.fullmatch(text.strip().lower())
    return None if found is None else float(found.group(1)) * _UNITS[found.group(2)]


def check_seconds(seconds: float) -> None:
    """ValueError unless ``seconds`` is a finite length from 0 to 100 years."""
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS):
        raise ValueError("must be a duration from 0 to 100 years")


def to_seconds(value: object, what: str) -> float:
    """A duration given as text (``"7d"``), seconds (int or float) or a ``timedelta``.

    ValueError saying ``what`` was wrong otherwise (bool is refused: ``True`` is no length).
    """
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(
            f"{what} must be a duration (text like '7d', seconds or a timedelta), "
            f"got {type(value).__name__}"
        )
    check_seconds(seconds)
    return seconds
