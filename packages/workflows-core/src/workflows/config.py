"""Settings read from ``WORKFLOWS_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from workflows.codec import DEFAULT_MAX_PAYLOAD_BYTES
from workflows.errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _optional_port(raw: str) -> int | None:
    if raw.strip() == "":
        return None
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return value


def _schema(raw: str) -> str:
    if not _IDENTIFIER.match(raw):
        raise ValueError("must be a lower-case SQL identifier (letters, digits, underscore)")
    return raw


def _optional_str(raw: str) -> str | None:
    return raw or None


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


@dataclass(frozen=True)
class Settings:
    """Every knob, with the documented defaults. Field ``x`` is read from ``WORKFLOWS_X``."""

    database_url: str | None = None
    schema: str = "workflows"
    data_dir: Path | None = None
    worker_heartbeat_interval: float = 5.0
    worker_heartbeat_timeout: float = 30.0
    worker_poll_interval: float = 1.0
    worker_max_concurrent: int = 10
    worker_shutdown_grace: float = 30.0
    worker_metrics_port: int | None = None
    default_timeout: float = 300.0
    default_workflow_timeout: float = 3600.0
    default_retries: int = 3
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    worker_sticky_cache: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = "WORKFLOWS_" + field.name.upper()
            raw = env.get(key)
            if raw is None:
                continue
            parse = _PARSERS[field.name]
            try:
                values[field.name] = parse(raw.strip())
            except ValueError as exc:
                # The value itself may be a DSN with a password: name the variable, not its value.
                detail = str(exc) if field.name != "database_url" else "invalid value"
                raise ConfigurationError(f"{key}: {detail}") from None
        return cls(**values)

    @classmethod
    def current(cls) -> Settings:
        """``from_env()`` of this process's environment, parsed again only when it changed.

        Producers call this on every enqueue; parsing every variable each time cost more than
        a tenth of the call.
        """
        key = tuple(map(os.environ.get, _ENV_NAMES))
        cached = _current.get(key)
        if cached is None:
            cached = cls.from_env()
            _current.clear()
            _current[key] = cached
        return cached


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _optional_str,
    "schema": _schema,
    "data_dir": _optional_path,
    "worker_heartbeat_interval": _positive_float,
    "worker_heartbeat_timeout": _positive_float,
    "worker_poll_interval": _positive_float,
    "worker_max_concurrent": _positive_int,
    "worker_shutdown_grace": _positive_float,
    "worker_metrics_port": _optional_port,
    "default_timeout": _positive_float,
    "default_workflow_timeout": _positive_float,
    "default_retries": _non_negative_int,
    "max_payload_bytes": _positive_int,
    "retry_backoff": _positive_float,
    "retry_backoff_max": _positive_float,
    "worker_sticky_cache": _non_negative_int,
}


_ENV_NAMES = tuple("WORKFLOWS_" + name.upper() for name in _PARSERS)
_current: dict[tuple[str | None, ...], Settings] = {}


def validate_schema_name(name: str) -> str:
    try:
        return _schema(name)
    except ValueError as exc:
        raise ConfigurationError(f"schema {name!r}: {exc}") from None
