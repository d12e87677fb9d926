"""Cron schedules: declared on ``@job``/``@workflow`` or managed at run time.

(Stub: the schedules work fills this module in.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Schedule:
    """When and with what a function runs on its own: ``cron`` in ``timezone``."""

    cron: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    catchup: bool = False
    name: str | None = None

    def validated(self) -> Schedule:
        return self
