"""JSON encoding of arguments, results and errors. Never pickle.

:func:`encode` refuses, with :class:`SerializationError`, every value PostgreSQL or the driver
would refuse later (so nothing half-written reaches the database): values JSON cannot express
(NaN, infinity, other types), U+0000, lone surrogates, more than :data:`MAX_DEPTH` levels of
nesting, numbers longer than ``numeric`` holds, and text over ``max_bytes`` bytes of UTF-8. It
also refuses what would not come back as it went in: a dict key that is not a string (JSON
turns ``1`` into ``"1"``) and a key starting with :data:`RESERVED_PREFIX`.

Payloads (arguments, results, signal payloads) go through a codec object (:class:`JsonCodec`,
the default, or a subclass such as :class:`workflows.typed_codec.TypedJsonCodec`), optionally
with a :class:`PayloadWrapper` (encryption, compression) over the stored text. A process has
one: :func:`use` sets it in code, ``WORKFLOWS_CODEC`` names it, :func:`current` returns it.
Errors stay plain JSON whatever the codec (see docs/codec.md).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import traceback
from abc import ABC, abstractmethod
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from workflows.errors import ConfigurationError, SerializationError

if TYPE_CHECKING:
    from workflows.config import Settings

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
# _ENCODER's C encoder, made once: JSONEncoder.encode makes one (and a Python closure) on
# every call, a third of encoding a call's few arguments. Without the circular-reference
# markers, which one encoder shared by threads cannot hold: a value it refuses (a cycle
# among them, as RecursionError) is encoded again by _ENCODER, whose error is the one given.
_C_ENCODE: Any = None
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _C_ENCODE = _c_make_encoder(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )

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

# Dict keys starting with this belong to the library: the typed codec's tags (TYPE_KEY) and the
# envelope of a wrapped payload (WRAPPED_KEY). A user's key there would be misread on the way
# back, so encoding refuses it.
RESERVED_PREFIX = "$workflows"
TYPE_KEY = "$workflows"
WRAPPED_KEY = "$workflows_wrapped"
# A key json wrote from a number, True, False or None ends in a digit, e or l before `":`;
# _ODD_KEY then matches the whole key. Inside a string every quote is escaped, so a match
# there is rare and only costs a walk (_check_keys) that finds nothing.
_KEY_END = re.compile(r'":(?<=[0-9el]":)')  # the literal first: a fast scan for `":`
_ODD_KEY = re.compile(r'"(?:-?[0-9][0-9.eE+-]*|true|false|null)":')


def encode(value: Any, *, what: str = "value", max_bytes: int | None = None) -> str:
    """JSON text of ``value``; a clear :class:`SerializationError` if it cannot be stored.

    The text of an ordinary value is exactly ``json.dumps`` with ``ensure_ascii=False``,
    ``allow_nan=False`` and ``separators=(",", ":")``: recorded step history compares it.
    """
    return _dump(value, what, max_bytes, 0)


def _dump(value: Any, what: str, max_bytes: int | None, braces: int | None) -> str:
    """:func:`encode`; ``braces``: the ``{`` the caller's own wrapping adds (None: the keys
    are checked already)."""
    if value is None and (max_bytes is None or max_bytes >= 4):
        # What most jobs and steps return: the encoder's call would cost more than the rest.
        return "null"
    try:
        text = "".join(_C_ENCODE(value, 0))
    except Exception:
        text = None  # said below, by _ENCODER (also when there is no C encoder)
    try:
        if text is None:
            text = _ENCODER.encode(value)
    except RecursionError:
        raise SerializationError(
            f"{what} is nested too deeply to encode as JSON (at most {MAX_DEPTH} levels)"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {safe_str(exc)}") from None
    # json writes int, float, bool and None keys as strings without a word. Only a dict can
    # hold a key: with no `{` beyond the caller's own there is none, and a call of plain
    # values pays one C scan. Otherwise C-speed searches of the text find a candidate (a key
    # such as "1" or "null", or a reserved one), and only then does a walk of the value decide.
    if (
        braces is not None
        and text.count("{") > braces
        and (
            (_KEY_END.search(text) is not None and _ODD_KEY.search(text) is not None)
            or RESERVED_PREFIX in text
        )
    ):
        _check_keys(value, what)
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


def _check_keys(value: Any, what: str) -> None:
    # Runs after the encoder succeeded: no cycle, and at most MAX_DEPTH-ish levels (a stack,
    # not recursion, all the same).
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SerializationError(
                        f"{what} holds a dict key {safe_str(key, limit=40)!r} of type "
                        f"{type(key).__name__}: JSON object keys are strings, so it would come "
                        "back as a different key; use string keys"
                    )
                if key.startswith(RESERVED_PREFIX):
                    raise SerializationError(
                        f"{what} holds a dict key {safe_str(key, limit=40)!r}: keys starting "
                        f"with {RESERVED_PREFIX!r} are reserved for the payload codec"
                    )
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def decode(text: str | bytes | None) -> Any:
    """Plain JSON: the library's own values (errors, rows). Payloads: :meth:`JsonCodec.decode`."""
    if text is None:
        return None
    return json.loads(text)


def encode_call(args: tuple[Any, ...], kwargs: dict[str, Any], *, max_bytes: int | None) -> str:
    """The stored arguments of a call, by the default codec (the producers' fast path)."""
    return _dump({"args": list(args), "kwargs": kwargs}, "arguments", max_bytes, 2)


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


# ---- codecs: how a process stores its payloads ---------------------------------------------


class PayloadWrapper(ABC):
    """A layer over the stored JSON text of a payload: encryption, compression.

    The database keeps ``{"$workflows_wrapped": scheme, "data": wrap(text)}``, so the jsonb
    columns still hold JSON. ``wrap`` need not be deterministic (replay decodes stored values,
    it never compares them). ``unwrap`` raises :class:`SerializationError` for data it cannot
    read (a wrong key, a corrupted token), with a message that holds no secret.
    """

    #: The name stored with each payload; ``unwrap`` is only handed this scheme's data.
    scheme: str = ""

    @abstractmethod
    def wrap(self, text: str) -> str:
        """``text`` (JSON) as printable ASCII to store."""

    @abstractmethod
    def unwrap(self, data: str) -> str:
        """The JSON text ``wrap`` was given."""


class JsonCodec:
    """The default codec: JSON values as they are (what ``json.dumps`` writes), optionally
    wrapped by a :class:`PayloadWrapper`.

    A converter subclass (:class:`workflows.typed_codec.TypedJsonCodec`) overrides
    :meth:`to_json` and :meth:`from_json`. Encoding and decoding raise
    :class:`SerializationError` with a one-line message.
    """

    def __init__(self, *, wrapper: PayloadWrapper | None = None) -> None:
        if wrapper is not None:
            if not isinstance(wrapper, PayloadWrapper):
                kind = type(wrapper).__name__
                raise ConfigurationError(
                    f"wrapper must be a workflows.codec.PayloadWrapper, not {kind}"
                )
            scheme = wrapper.scheme
            if not (isinstance(scheme, str) and scheme and scheme.isascii() and len(scheme) < 64):
                raise ConfigurationError("a PayloadWrapper's scheme must be a short ASCII name")
        self.wrapper = wrapper

    def __repr__(self) -> str:
        scheme = None if self.wrapper is None else self.wrapper.scheme
        return f"{type(self).__name__}(wrapper={scheme!r})"

    # ---- the converter: a value <-> what json holds (plain lists, dicts, str, numbers) ----

    def to_json(self, value: Any, what: str) -> Any:
        """``value`` as plain JSON data; the default takes JSON values as they are."""
        return value

    def from_json(self, data: Any) -> Any:
        """The value ``to_json`` was given, from its JSON data."""
        return data

    # Whether to_json checked every dict key already (the default leaves it to _dump).
    _keys_checked = False

    # ---- payloads --------------------------------------------------------------------------

    def encode(self, value: Any, *, what: str = "value", max_bytes: int | None = None) -> str:
        """The stored text of ``value``."""
        braces = None if self._keys_checked else 0
        if self.wrapper is None:
            return _dump(self.to_json(value, what), what, max_bytes, braces)
        return self._wrap(_dump(self.to_json(value, what), what, None, braces), what, max_bytes)

    def encode_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], *, max_bytes: int | None
    ) -> str:
        """The stored arguments of a call."""
        call = self.to_json({"args": list(args), "kwargs": kwargs}, "arguments")
        braces = None if self._keys_checked else 2
        if self.wrapper is None:
            return _dump(call, "arguments", max_bytes, braces)
        return self._wrap(_dump(call, "arguments", None, braces), "arguments", max_bytes)

    def decode(self, text: str | bytes | None) -> Any:
        """The value of stored text."""
        if text is None:
            return None
        return self.decode_stored(json.loads(text))

    def decode_stored(self, data: Any) -> Any:
        """The value of a stored payload already parsed as JSON (inside a larger document)."""
        if type(data) is dict and WRAPPED_KEY in data:
            data = self._unwrap(data)
        return self.from_json(data)

    def decode_call(self, text: str | bytes) -> tuple[list[Any], dict[str, Any]]:
        """The arguments and keyword arguments of stored call text."""
        # As before codecs: arguments written by hand that are no such object fail the call
        # like any error of its code (AttributeError, TypeError), retried as such.
        call = self.decode(text)
        return list(call.get("args", [])), dict(call.get("kwargs", {}))

    def view(self, data: Any) -> Any:
        """What inspection (status, history, the dashboard) shows of a stored payload parsed
        as JSON: unwrapped when this codec can, else the envelope as stored (never raises).
        Typed values stay in their tagged JSON form, which any JSON tool can print."""
        if type(data) is dict and WRAPPED_KEY in data and self.wrapper is not None:
            try:
                return self._unwrap(data)
            except SerializationError:
                return data
        return data

    def _wrap(self, text: str, what: str, max_bytes: int | None) -> str:
        assert self.wrapper is not None
        try:
            data = self.wrapper.wrap(text)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"{what} could not be wrapped ({self.wrapper.scheme}): {type(exc).__name__}"
            ) from None
        if type(data) is not str or not data.isascii():
            raise SerializationError(
                f"the {self.wrapper.scheme} wrapper returned no ASCII text for {what}"
            )
        stored = _ENCODER.encode({WRAPPED_KEY: self.wrapper.scheme, "data": data})
        if max_bytes is not None and len(stored) > max_bytes:
            raise SerializationError(
                f"{what} is {len(stored)} bytes once wrapped ({self.wrapper.scheme}), over the "
                f"limit of {max_bytes} (WORKFLOWS_MAX_PAYLOAD_BYTES)"
            )
        return stored

    def _unwrap(self, envelope: dict[str, Any]) -> Any:
        scheme, data = envelope.get(WRAPPED_KEY), envelope.get("data")
        shown = safe_str(scheme, limit=40)
        if self.wrapper is None:
            raise SerializationError(
                f"the payload is wrapped ({shown}: encrypted or compressed) and this process's "
                "codec has no wrapper: give it the producers' codec (WORKFLOWS_CODEC or "
                "workflows.codec.use())"
            )
        if scheme != self.wrapper.scheme or type(data) is not str or len(envelope) != 2:
            raise SerializationError(
                f"the payload is wrapped as {shown!r}, which this codec's wrapper "
                f"({self.wrapper.scheme}) does not read"
            )
        text = self.wrapper.unwrap(data)
        try:
            return json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise SerializationError(
                f"the {self.wrapper.scheme} payload does not hold JSON once unwrapped"
            ) from None


def wrapped_scheme(data: Any) -> str | None:
    """The scheme of a stored payload left wrapped (see :meth:`JsonCodec.view`), else None:
    what the CLI and the dashboard show as ``<encrypted: scheme>``."""
    if type(data) is dict and WRAPPED_KEY in data:
        return safe_str(data[WRAPPED_KEY], limit=40)
    return None


DEFAULT = JsonCodec()

# Set by use(); None: the one WORKFLOWS_CODEC names, else DEFAULT.
_used: JsonCodec | None = None
_loaded: dict[str, JsonCodec] = {}


def use(codec: JsonCodec | None) -> None:
    """Make ``codec`` this process's codec (over ``WORKFLOWS_CODEC``); None: back to the
    setting. Producers and workers must use the same one: call it where the module that
    declares the functions is imported (workers import it too)."""
    global _used
    if codec is not None and not isinstance(codec, JsonCodec):
        raise ConfigurationError(
            f"a codec is a workflows.codec.JsonCodec (or a subclass), not {type(codec).__name__}"
        )
    _used = codec


def current(settings: Settings | None = None) -> JsonCodec:
    """This process's codec: the one :func:`use` set, else the one ``WORKFLOWS_CODEC`` names
    (``module:attribute``, imported once), else :data:`DEFAULT`."""
    if _used is not None:
        return _used
    if settings is None:
        from workflows.config import Settings

        settings = Settings.current()
    path = settings.codec
    if path is None:
        return DEFAULT
    found = _loaded.get(path)
    if found is None:
        found = _loaded[path] = load(path)
    return found


def load(path: str) -> JsonCodec:
    """The codec object at ``module:attribute`` (ConfigurationError naming WORKFLOWS_CODEC)."""
    module_name, _, attribute = path.partition(":")
    # As the worker finds its application (and `python -m` does): from the folder the process
    # started in. A console script's sys.path holds only its own folder, so `workflows status`
    # run in the project would not find the project's codec. Appended: nothing is shadowed.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise ConfigurationError(
            f"WORKFLOWS_CODEC={path!r}: cannot import it ({type(exc).__name__}: "
            f"{safe_str(exc, limit=200)})"
        ) from None
    if not isinstance(found, JsonCodec):
        raise ConfigurationError(
            f"WORKFLOWS_CODEC={path!r} is a {type(found).__name__}, not a codec "
            "(a workflows.codec.JsonCodec or a subclass)"
        )
    return found
