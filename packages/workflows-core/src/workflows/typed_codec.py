"""A codec for more than plain JSON: dates and times, UUIDs, decimals, bytes, tuples, sets,
and the dataclasses, pydantic models and enums registered with it.

Each such value is stored as a tagged object, ``{"$workflows": TAG, "value": ...}``: TAG is a
built-in name (``datetime``, ``uuid``...) or the name a class was registered under. Decoding
builds only registered classes, looked up by that name: a payload never names a module to
import, so a hostile one can at most fail with :class:`SerializationError`.

What would not come back equal is refused rather than changed: dict keys that are not strings
(or that start with ``$workflows``), subclasses of the built-in types (an ``OrderedDict``, a
``str`` subclass), unregistered classes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from workflows.codec import (
    MAX_DEPTH,
    RESERVED_PREFIX,
    TYPE_KEY,
    JsonCodec,
    PayloadWrapper,
    safe_str,
)
from workflows.errors import ConfigurationError, SerializationError

T = TypeVar("T", bound=type)

_PLAIN = (str, int, float, bool)


def _decode_bytes(value: Any) -> bytes:
    return base64.b64decode(_str(value), validate=True)


def _decode_timedelta(value: Any) -> timedelta:
    if not (isinstance(value, list) and len(value) == 3 and all(type(x) is int for x in value)):
        raise ValueError("not [days, seconds, microseconds]")
    return timedelta(days=value[0], seconds=value[1], microseconds=value[2])


def _str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError("not a string")
    return value


def _items(value: Any) -> list[Any]:
    if type(value) is not list:
        raise ValueError("not a list")
    return value


# Built-in tags: how a stored value is rebuilt (from its already decoded "value").
_BUILTIN_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": lambda v: datetime.fromisoformat(_str(v)),
    "date": lambda v: date.fromisoformat(_str(v)),
    "time": lambda v: time.fromisoformat(_str(v)),
    "timedelta": _decode_timedelta,
    "uuid": lambda v: uuid.UUID(_str(v)),
    "decimal": lambda v: Decimal(_str(v)),
    "bytes": _decode_bytes,
    "tuple": lambda v: tuple(_items(v)),
    "set": lambda v: set(_items(v)),
    "frozenset": lambda v: frozenset(_items(v)),
}


class TypedJsonCodec(JsonCodec):
    """JSON plus ``datetime``, ``date``, ``time``, ``timedelta``, ``UUID``, ``Decimal``,
    ``bytes``, ``tuple``, ``set``, ``frozenset`` and the classes in ``types`` (dataclasses,
    pydantic v2 models, enums), with an optional ``wrapper`` (see :class:`PayloadWrapper`).

    A class is stored under the name it is registered with: by default
    ``module.QualifiedName``; pass ``register(cls, name=...)`` to keep a stored name when the
    class moves. Producers and workers must register the same classes under the same names.
    """

    _keys_checked = True

    def __init__(
        self, types: Iterable[type] = (), *, wrapper: PayloadWrapper | None = None
    ) -> None:
        super().__init__(wrapper=wrapper)
        self._by_name: dict[str, type] = {}
        self._by_type: dict[type, str] = {}
        for cls in types:
            self.register(cls)

    def __repr__(self) -> str:
        scheme = None if self.wrapper is None else self.wrapper.scheme
        return f"TypedJsonCodec(types={sorted(self._by_name)!r}, wrapper={scheme!r})"

    def register(self, cls: T, *, name: str | None = None) -> T:
        """Let values of ``cls`` (a dataclass, a pydantic v2 model or an Enum) be stored and
        rebuilt. Returns ``cls``, so it also serves as a class decorator."""
        if not isinstance(cls, type):
            raise ConfigurationError(f"register() takes a class, not {safe_str(cls, limit=60)}")
        if not (dataclasses.is_dataclass(cls) or _is_pydantic(cls) or issubclass(cls, enum.Enum)):
            raise ConfigurationError(
                f"{cls.__qualname__} is not a dataclass, a pydantic model or an Enum: "
                "only those can be registered with a TypedJsonCodec"
            )
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
        if not (isinstance(name, str) and name and len(name) <= 200):
            raise ConfigurationError("a registered name is a non-empty string of at most 200")
        if name in _BUILTIN_DECODERS:
            raise ConfigurationError(f"{name!r} is a built-in tag of the codec: pick another name")
        known = self._by_name.get(name)
        if known is not None and known is not cls:
            raise ConfigurationError(
                f"{name!r} is registered already, for {known.__module__}.{known.__qualname__}"
            )
        other = self._by_type.get(cls)
        if other is not None and other != name:
            raise ConfigurationError(f"{cls.__qualname__} is registered already, as {other!r}")
        self._by_name[name] = cls
        self._by_type[cls] = name
        return cls

    # ---- encoding ----------------------------------------------------------------------------

    def to_json(self, value: Any, what: str) -> Any:
        try:
            return self._to(value, what, 0)
        except RecursionError:
            # Two frames a level: the interpreter's limit may come before MAX_DEPTH.
            raise SerializationError(
                f"{what} is nested more than {MAX_DEPTH} levels deep (or holds itself)"
            ) from None

    def _to(self, value: Any, what: str, depth: int) -> Any:
        kind = type(value)
        if kind in _PLAIN or value is None:
            return value
        if depth >= MAX_DEPTH:
            raise SerializationError(
                f"{what} is nested more than {MAX_DEPTH} levels deep (or holds itself)"
            )
        depth += 1
        if kind is dict:
            return {self._key(k, what): self._to(v, what, depth) for k, v in value.items()}
        if kind is list:
            return [self._to(v, what, depth) for v in value]
        if kind is tuple or kind is set or kind is frozenset:
            items = [self._to(v, what, depth) for v in value]
            return {TYPE_KEY: kind.__name__, "value": items}
        if kind is datetime or kind is date or kind is time:
            return {TYPE_KEY: kind.__name__, "value": value.isoformat()}
        if kind is timedelta:
            return {TYPE_KEY: "timedelta", "value": [value.days, value.seconds, value.microseconds]}
        if kind is uuid.UUID:
            return {TYPE_KEY: "uuid", "value": str(value)}
        if kind is Decimal:
            return {TYPE_KEY: "decimal", "value": str(value)}
        if kind is bytes:
            return {TYPE_KEY: "bytes", "value": base64.b64encode(value).decode("ascii")}
        name = self._by_type.get(kind)
        if name is not None:
            return {TYPE_KEY: name, "value": self._fields(value, what, depth)}
        raise SerializationError(f"{what} holds {_refusal(value)}")

    def _key(self, key: Any, what: str) -> str:
        if type(key) is not str:
            raise SerializationError(
                f"{what} holds a dict key {safe_str(key, limit=40)!r} of type "
                f"{type(key).__name__}: only str keys come back as they went in"
            )
        if key.startswith(RESERVED_PREFIX):
            raise SerializationError(
                f"{what} holds a dict key {safe_str(key, limit=40)!r}: keys starting with "
                f"{RESERVED_PREFIX!r} are reserved for the payload codec"
            )
        return key

    def _fields(self, value: Any, what: str, depth: int) -> Any:
        if isinstance(value, enum.Enum):
            return self._to(value.value, what, depth)
        if dataclasses.is_dataclass(value):
            return {
                f.name: self._to(getattr(value, f.name), what, depth)
                for f in dataclasses.fields(value)
                if f.init
            }
        # A pydantic model: its own JSON form, which its validation reads back.
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:
            raise SerializationError(
                f"{what}: {type(value).__qualname__} cannot be dumped as JSON: "
                f"{safe_str(exc, limit=200)}"
            ) from None
        return self._to(dumped, what, depth)

    # ---- decoding ----------------------------------------------------------------------------

    def from_json(self, data: Any) -> Any:
        try:
            return self._from(data)
        except RecursionError:
            raise SerializationError("a stored payload is nested too deeply to decode") from None

    def _from(self, data: Any) -> Any:
        kind = type(data)
        if kind is dict:
            if TYPE_KEY in data:
                return self._tagged(data)
            return {k: self._from(v) for k, v in data.items()}
        if kind is list:
            return [self._from(v) for v in data]
        return data

    def _tagged(self, data: dict[str, Any]) -> Any:
        tag = data[TYPE_KEY]
        if type(tag) is not str or len(data) != 2 or "value" not in data:
            raise SerializationError(
                f"a stored payload holds a malformed {TYPE_KEY!r} object (a tag and a value)"
            )
        shown = safe_str(tag, limit=80)
        builtin = _BUILTIN_DECODERS.get(tag)
        cls = None if builtin is not None else self._by_name.get(tag)
        if builtin is None and cls is None:
            raise SerializationError(
                f"a stored payload holds type {shown!r}, which is not registered with this "
                "codec: register the class (TypedJsonCodec(types=[...]) or .register()) "
                "in every producer and worker"
            )
        inner = self._from(data["value"])
        try:
            if builtin is not None:
                return builtin(inner)
            assert cls is not None
            return _build(cls, inner)
        except (TypeError, ValueError, InvalidOperation, binascii.Error) as exc:
            # Pydantic's ValidationError is a ValueError.
            raise SerializationError(
                f"a stored {shown!r} value cannot be rebuilt: {_first_line(exc)}"
            ) from None


def _build(cls: type, value: Any) -> Any:
    if issubclass(cls, enum.Enum):
        return cls(value)
    if dataclasses.is_dataclass(cls):
        if type(value) is not dict:
            raise ValueError("not an object of fields")
        return cls(**value)
    return cls.model_validate_json(json.dumps(value))  # type: ignore[attr-defined]


def _first_line(exc: BaseException) -> str:
    return safe_str(exc, limit=300).partition("\n")[0]


def _is_pydantic(cls: type) -> bool:
    # Without importing pydantic: a v2 model has these (v1's have parse_obj/dict instead).
    return callable(getattr(cls, "model_validate_json", None)) and callable(
        getattr(cls, "model_dump", None)
    )


def _refusal(value: Any) -> str:
    kind = type(value)
    name = kind.__qualname__
    if dataclasses.is_dataclass(value) or _is_pydantic(kind) or isinstance(value, enum.Enum):
        return (
            f"a value of type {name}, which is not registered with this codec: "
            f"TypedJsonCodec(types=[{name}]) or codec.register({name})"
        )
    for base in (dict, list, str, int, float, tuple, set, frozenset, bytes, datetime, date):
        if isinstance(value, base):
            return (
                f"a value of type {name}, a subclass of {base.__name__} that would come back as a "
                f"plain {base.__name__}: convert it first"
            )
    return f"a value of type {name}, which this codec cannot store"


__all__ = ["TypedJsonCodec"]
