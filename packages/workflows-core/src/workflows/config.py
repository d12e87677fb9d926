"""Settings read from ``WORKFLOWS_*`` environment variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from workflows.codec import DEFAULT_MAX_PAYLOAD_BYTES
from workflows.durations import Duration, check_seconds, parse_duration
from workflows.errors import ConfigurationError, preview

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
# The longest notification channel is "<schema>_cancel" (see workflows_postgres.queries), and
# PostgreSQL refuses or truncates channel names past 63 bytes: a longer schema would leave the
# workers listening on a channel nobody notifies.
MAX_SCHEMA_LENGTH = 63 - len("_cancel")
# `public` holds the application's own tables; `pg_*` and `information_schema` are PostgreSQL's.
_RESERVED_SCHEMAS = frozenset({"public", "information_schema"})
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


# ---- parsing: the text of a variable -> a value (ValueError if it is not one) -------------


def _optional_int(raw: str) -> int | None:
    return None if raw == "" else int(raw)


def _optional_str(raw: str) -> str | None:
    return raw or None


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be 1, true, yes, on or 0, false, no, off (or empty)")


def _optional_duration(raw: str) -> float | None:
    # Empty: unset, as if the variable were absent (a per-status retention falls back).
    return parse_duration(raw) if raw else None


def _names(raw: str) -> tuple[str, ...]:
    # Blank items are skipped, so a trailing comma (or an empty variable) is harmless.
    return tuple(item.strip() for item in raw.split(",") if item.strip())


# ---- checks: a value, however it was built -> ValueError if it cannot work ----------------


def _log_format(value: str) -> None:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")


DETERMINISM_CHECKS = ("warn", "error", "off")


def _determinism_check(value: str) -> None:
    if value not in DETERMINISM_CHECKS:
        raise ValueError(f"must be one of {', '.join(DETERMINISM_CHECKS)}")


POOLERS = ("none", "transaction", "session")


def _pooler(value: str) -> None:
    if value not in POOLERS:
        raise ValueError(f"must be one of {', '.join(POOLERS)}")


TRACING_MODES = ("auto", "on", "off")


def _tracing(value: str) -> None:
    if value not in TRACING_MODES:
        raise ValueError("must be auto (traced when opentelemetry-api is installed), on or off")


def _log_level(value: str) -> None:
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")


def _positive_float(value: float) -> None:
    # float() reads "nan" and "inf": a NaN compares false with everything (every check of a
    # timeout against it passes or fails silently) and PostgreSQL's make_interval refuses
    # infinity, so either would fail far from its cause.
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a finite number greater than 0")


def _positive_int(value: int) -> None:
    if value < 1:
        raise ValueError("must be at least 1")


def _non_negative_int(value: int) -> None:
    if value < 0:
        raise ValueError("must be 0 or more")


# The most executions a worker runs at once (as `currant worker -c` takes): each run's slot and
# thread are the worker's, and a claim's limit must fit the database's integer.
MAX_CONCURRENCY = 10_000


def _concurrency(value: int) -> None:
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"must be from 1 to {MAX_CONCURRENCY:,}")


# The most executions a worker may claim ahead (as `currant worker --prefetch` takes): each
# is held in its memory, and a claim's limit must fit the database's integer.
MAX_PREFETCH = 10_000


def _prefetch(value: int) -> None:
    if not 0 <= value <= MAX_PREFETCH:
        raise ValueError(f"must be from 0 to {MAX_PREFETCH:,}")


def _duration(value: float | None) -> None:
    if value is not None:
        check_seconds(value)


def _port(value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(
            "must be a TCP port (1-65535), 0 for a free port the OS picks, or empty for none"
        )


def _host(value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    # fullmatch: `$` would let a trailing newline through.
    if not _HOST_NAME.fullmatch(value):
        raise ValueError(
            "must be an IP address or a host name (0.0.0.0: every IPv4 interface, "
            "127.0.0.1: this machine only)"
        )


def _module_names(value: tuple[str, ...]) -> None:
    if not isinstance(value, tuple):
        raise ValueError("must be a tuple of module names")
    for name in value:
        if not (isinstance(name, str) and all(p.isidentifier() for p in name.split("."))):
            raise ValueError(
                f"{name!r} is not a module name (dotted Python identifiers, comma-separated)"
            )


_CODEC_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", re.ASCII)


def _codec_path(value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _CODEC_PATH.fullmatch(value)):
        raise ValueError("must be the import path of a codec object, as `myapp.codecs:codec`")


def _schema(name: str) -> None:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError("must be a lower-case SQL identifier (letters, digits, underscore)")
    if len(name) > MAX_SCHEMA_LENGTH:
        raise ValueError(
            f"must be at most {MAX_SCHEMA_LENGTH} characters: its notification channels "
            "(<schema>_cancel the longest) must fit PostgreSQL's 63-byte limit on channel names"
        )
    if name in _RESERVED_SCHEMAS or name.startswith("pg_"):
        raise ValueError(
            "is reserved (public, information_schema, pg_*): use a schema of the library's own"
        )


@dataclass(frozen=True)
class Settings:
    """Every knob, with the documented defaults. Field ``x`` is read from ``WORKFLOWS_X``.

    Built from the environment or in code, the values are checked the same way: an invalid
    one raises ``ConfigurationError`` naming its variable.
    """

    # Not in the repr: it may hold a password, and a Settings gets printed and logged.
    database_url: str | None = dataclasses.field(default=None, repr=False)
    schema: str = "workflows"
    data_dir: Path | None = None
    worker_heartbeat_interval: float = 5.0
    worker_heartbeat_timeout: float = 30.0
    worker_poll_interval: float = 1.0
    worker_max_concurrent: int = 10
    # Executions a worker may claim ahead of free slots, to start as slots free up; 0: none
    # (see the README, "Claiming ahead": a crash counts their attempts though they never ran).
    worker_prefetch: int = 0
    worker_shutdown_grace: float = 30.0
    # None: no metrics server; 0: a free port the OS picks (the worker logs it).
    worker_metrics_port: int | None = None
    # Every interface by default, so a scrape from outside a container reaches it.
    worker_metrics_host: str = "0.0.0.0"
    # Module names or prefixes (dotted), from a comma-separated WORKFLOWS_WORKER_IMPORTS.
    worker_imports: tuple[str, ...] = ()
    default_timeout: float = 300.0
    default_workflow_timeout: float = 3600.0
    default_retries: int = 3
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    worker_sticky_cache: int = 1000
    # Log output of `currant worker` (and `workflows migrate`): text or json, one per line.
    log_format: str = "text"
    log_level: str = "INFO"
    # Silences the notice that the embedded development database is in use.
    quiet_embedded: bool = False
    # workflows_queue_depth counts exactly up to this many per queue and status, and past it
    # reports the planner's estimate (workflows_queue_depth_estimated says which).
    worker_queue_depth_exact_limit: int = 100_000
    # Seconds a finished execution (and its tree) is kept; 0: forever. A per-status one that
    # is None falls back to `retention` (see retention_for). Text like "7d" in the variables.
    retention: Duration = 7 * 86400.0
    retention_completed: Duration | None = None
    retention_failed: Duration | None = 30 * 86400.0
    retention_cancelled: Duration | None = None
    # What a call that differs on replay (datetime.now() in a workflow...) does when the
    # workflow is declared: see workflows.determinism.
    determinism_check: str = "warn"
    # What sits between this process and PostgreSQL: none (a direct connection), a PgBouncer-
    # like pooler in transaction mode (producers only: no session state, no LISTEN, no
    # prepared statements kept) or in session mode (see the README, "Poolers").
    pooler: str = "none"
    # OpenTelemetry spans of enqueues, attempts and signals (workflows.tracing): auto traces
    # when opentelemetry-api is importable, on requires it, off never imports it.
    tracing: str = "auto"
    # The import path (`module:attribute`) of this process's payload codec; None: plain JSON.
    # See workflows.codec.current() and docs/codec.md.
    codec: str | None = None

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            try:
                check(value)
            except ValueError as exc:
                raise ConfigurationError(f"{_env_name(name)}={value!r}: {exc}") from None
        interval, timeout = self.worker_heartbeat_interval, self.worker_heartbeat_timeout
        # Peers declare a worker dead after `timeout` seconds without a beat. With fewer than
        # two beats in that window, one late beat (a slow query, a pause) has a live worker's
        # executions recovered and run a second time.
        if not interval < timeout / 2:
            raise ConfigurationError(
                f"WORKFLOWS_WORKER_HEARTBEAT_INTERVAL ({interval:g}) must be below half of "
                f"WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT ({timeout:g}), so that one late "
                "heartbeat does not get a live worker declared dead"
            )

    def retention_for(self, status: str) -> float | None:
        """Seconds a finished execution of ``status`` is kept, None for forever."""
        own = {
            "completed": self.retention_completed,
            "failed": self.retention_failed,
            "cancelled": self.retention_cancelled,
        }[status]
        seconds = self.retention if own is None else own
        return seconds or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = _env_name(field.name)
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
        """``from_env()`` of this process's environment, with what :func:`configure` set
        winning over its variables; parsed again only when either changed.

        Producers call this on every enqueue; parsing every variable each time cost more than
        a tenth of the call.
        """
        key = tuple(map(_raw_env.get, _ENV_KEYS))
        cached = _current.get(key)
        if cached is None:
            # configure() empties the cache: a Settings built from the overrides it replaced
            # must not be stored after it did.
            generation = _configured.generation
            cached = _with_overrides(cls.from_env(_unconfigured_env()), _configured.values)
            with _configured.lock:
                if generation == _configured.generation:
                    _current.clear()
                    _current[key] = cached
        return cached


def _env_name(field: str) -> str:
    return "WORKFLOWS_" + field.upper()


_PARSERS: dict[str, Callable[[str], Any]] = {
    "database_url": _optional_str,
    "schema": str,
    "data_dir": _optional_path,
    "worker_heartbeat_interval": float,
    "worker_heartbeat_timeout": float,
    "worker_poll_interval": float,
    "worker_max_concurrent": int,
    "worker_prefetch": int,
    "worker_shutdown_grace": float,
    "worker_metrics_port": _optional_int,
    "worker_metrics_host": str,
    "worker_imports": _names,
    "default_timeout": float,
    "default_workflow_timeout": float,
    "default_retries": int,
    "max_payload_bytes": int,
    "retry_backoff": float,
    "retry_backoff_max": float,
    "worker_sticky_cache": int,
    "log_format": lambda raw: raw.lower(),
    "log_level": lambda raw: raw.upper(),
    "quiet_embedded": _flag,
    "worker_queue_depth_exact_limit": int,
    "retention": parse_duration,
    "retention_completed": _optional_duration,
    "retention_failed": _optional_duration,
    "retention_cancelled": _optional_duration,
    "determinism_check": lambda raw: raw.lower(),
    "pooler": lambda raw: raw.lower(),
    "tracing": lambda raw: raw.lower(),
    "codec": _optional_str,
}

# database_url has none on purpose: its message would quote a password.
_CHECKS: dict[str, Callable[[Any], None]] = {
    "schema": _schema,
    "worker_heartbeat_interval": _positive_float,
    "worker_heartbeat_timeout": _positive_float,
    "worker_poll_interval": _positive_float,
    "worker_max_concurrent": _concurrency,
    "worker_prefetch": _prefetch,
    "worker_shutdown_grace": _positive_float,
    "worker_metrics_port": _port,
    "worker_metrics_host": _host,
    "worker_imports": _module_names,
    "default_timeout": _positive_float,
    "default_workflow_timeout": _positive_float,
    "default_retries": _non_negative_int,
    "max_payload_bytes": _positive_int,
    "retry_backoff": _positive_float,
    "retry_backoff_max": _positive_float,
    "worker_sticky_cache": _non_negative_int,
    "log_format": _log_format,
    "log_level": _log_level,
    "worker_queue_depth_exact_limit": _positive_int,
    "retention": _duration,
    "retention_completed": _duration,
    "retention_failed": _duration,
    "retention_cancelled": _duration,
    "determinism_check": _determinism_check,
    "pooler": _pooler,
    "tracing": _tracing,
    "codec": _codec_path,
}


_ENV_NAMES = tuple(_env_name(name) for name in _PARSERS)
_current: dict[tuple[Any, ...], Settings] = {}


def _raw_environ() -> tuple[Mapping[Any, Any], tuple[Any, ...]]:
    """The mapping under ``os.environ`` and our names as its keys, to read with no encoding.

    ``os.environ.get`` encodes the name and decodes the value on each call: 27 of them were a
    fifth of an enqueue's CPU. ``os.environ`` keeps its values in ``_data`` under keys made by
    ``encodekey`` (bytes on POSIX, upper-case str on Windows) and writes through it, so reading
    there sees every change made through ``os.environ``, as ``os.environ.get`` does. Another
    implementation of ``os`` falls back to the public mapping.
    """
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encodekey):
        try:
            return data, tuple(encodekey(name) for name in _ENV_NAMES)
        except Exception:
            pass
    return os.environ, _ENV_NAMES


_raw_env, _ENV_KEYS = _raw_environ()


def validate_schema_name(name: str) -> str:
    """``name`` if it can be this library's schema, else ``ConfigurationError`` saying why."""
    try:
        _schema(name)
    except ValueError as exc:
        raise ConfigurationError(f"schema {name!r}: {exc}") from None
    return name


# ---- configuration in code: configure() ---------------------------------------------------


class _Configured:
    """What configure() set, process-wide. ``generation`` moves on every change, so that a
    Settings built from the values it replaced is not cached after them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {}
        self.generation = 0


_configured = _Configured()
_FIELD_NAMES = frozenset(_PARSERS)


def _unconfigured_env() -> Mapping[str, str] | None:
    # A variable that configure() overrides is not read at all: a bad value there is moot.
    if not _configured.values:
        return None
    hidden = {_env_name(name) for name in _configured.values}
    return {key: value for key, value in os.environ.items() if key not in hidden}


def _with_overrides(settings: Settings, values: Mapping[str, Any]) -> Settings:
    return dataclasses.replace(settings, **values) if values else settings


def _number(value: Any, *, integer: bool) -> Any:
    # bool is an int to Python, but True is no count of anything.
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ValueError(f"must be {'a whole number' if integer else 'a number'}")
    return value if integer else float(value)


def _in_code(name: str, value: Any) -> Any:
    """``value`` given to configure() or Client() for field ``name``, as the field holds it;
    ValueError if it cannot be one. Text is read as the variable's text would be."""
    parse = _PARSERS[name]
    if isinstance(value, str):
        return parse(value.strip())
    optional = parse in (_optional_int, _optional_str, _optional_path, _optional_duration)
    if value is None:
        if optional:
            return None
        raise ValueError("must not be None")
    if parse is float:
        return _number(value, integer=False)
    if parse in (int, _optional_int):
        return _number(value, integer=True)
    if parse is _optional_path:
        if not isinstance(value, os.PathLike):
            raise ValueError("must be a path (str or os.PathLike) or None")
        return Path(value).expanduser()
    if parse is _names:
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list or tuple of module names (or comma-separated text)")
        return tuple(value)
    if parse is _flag:
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
        return value
    if parse in (parse_duration, _optional_duration):
        if isinstance(value, timedelta):
            value = value.total_seconds()
        return _number(value, integer=False)
    raise ValueError(f"must be text, got {type(value).__name__}")


def checked_overrides(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` (Settings field names) as the fields hold them, each checked like its
    variable; ConfigurationError naming the field otherwise (never quoting a database URL)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _FIELD_NAMES:
            raise ConfigurationError(
                f"{where}: unknown setting {name!r} (the settings are the WORKFLOWS_* "
                "variables' names in lower case without the prefix, such as schema)"
            )
        try:
            held = _in_code(name, value)
            check = _CHECKS.get(name)
            if check is not None:
                check(held)
        except ValueError as exc:
            if name == "database_url":
                raise ConfigurationError(
                    f"{where}: database_url must be a postgresql:// URL or libpq connection "
                    "string (text), or None"
                ) from None
            raise ConfigurationError(f"{where}: {name}={preview(value)}: {exc}") from None
        out[name] = held
    return out


def configure(*, reset: bool = False, **settings: Any) -> Settings:
    """Set settings for this process in code; they win over the ``WORKFLOWS_*`` variables.

    Each keyword is a :class:`Settings` field (``database_url``, ``schema``, ...), given as
    the field holds it or as the variable's text. Calls add up; ``reset=True`` first drops
    everything configured before (``configure(reset=True)`` alone goes back to the
    environment). Returns the settings now in effect (``configure()``: without changing any).
    Raises ``ConfigurationError`` naming the field for an unknown name or a bad value, and
    then changes nothing.
    """
    given = checked_overrides(settings, "configure()")
    with _configured.lock:
        values = {} if reset else dict(_configured.values)
        values.update(given)
        if values != _configured.values:
            hidden = {_env_name(name) for name in values}
            env = {k: v for k, v in os.environ.items() if k not in hidden}
            # Built (and so checked as a whole) before anything changes.
            _with_overrides(Settings.from_env(env), values)
            _configured.values = values
            _configured.generation += 1
            _current.clear()
    return Settings.current()


def configured() -> dict[str, Any]:
    """What :func:`configure` set (a copy): field name -> value."""
    with _configured.lock:
        return dict(_configured.values)
