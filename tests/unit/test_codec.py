"""The payload codecs: the default JSON codec, the typed converter, wrappers (Fernet), and how a
process gets its codec. Pure: no database (the integration tests run them through workers)."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from cryptography.fernet import Fernet, MultiFernet
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows import codec, job
from workflows.codec import DEFAULT, JsonCodec, PayloadWrapper
from workflows.config import Settings
from workflows.crypto import FernetWrapper
from workflows.errors import ConfigurationError, SerializationError
from workflows.history import ScheduleActivity, StepRecord
from workflows.replay import WorkflowInstance
from workflows.typed_codec import TypedJsonCodec


@dataclasses.dataclass(frozen=True)
class Order:
    id: uuid.UUID
    total: Decimal
    placed_at: datetime
    lines: tuple[str, ...] = ()


class Invoice(pydantic.BaseModel):
    number: int
    issued: date
    amount: Decimal


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Unregistered:
    x: int


TYPED = TypedJsonCodec(types=[Order, Invoice, Color])
KEY = Fernet.generate_key()


# ---- the default codec ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00")),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=5).filter(lambda k: "\x00" not in k and not k.startswith("$")),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_default_codec_writes_what_json_dumps_writes_byte_for_byte(value: Any, other: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert DEFAULT.encode(value) == codec.encode(value) == expected
    call = DEFAULT.encode_call((value,), {"k": other}, max_bytes=None)
    assert call == codec.encode_call((value,), {"k": other}, max_bytes=None)
    assert json.loads(call) == {"args": [value], "kwargs": {"k": other}}
    assert DEFAULT.decode(DEFAULT.encode(value)) == value


@pytest.mark.parametrize("key", [1, 1.5, True, None, -7])
def test_default_codec_refuses_dict_keys_json_would_turn_into_strings(key: Any) -> None:
    for encode in (
        lambda: codec.encode({"ok": {key: 1}}),
        lambda: codec.encode_call(([{key: "x"}],), {}, max_bytes=None),
        lambda: DEFAULT.encode_call((), {"nested": {key: 1}}, max_bytes=None),
    ):
        with pytest.raises(SerializationError, match=r"dict key .* of type"):
            encode()


@job(queue="codec-unit")
async def takes_kwargs(**kwargs: Any) -> None: ...


async def test_queue_many_refuses_keyword_names_that_are_not_strings() -> None:
    # Refused before any database is needed.
    with pytest.raises(SerializationError, match="keyword argument names must be strings"):
        await takes_kwargs.queue_many([((), {"a": 1}), ((), {1: 2})])  # type: ignore[dict-item]


def test_default_codec_keeps_string_keys_that_look_like_numbers_and_braces_in_strings() -> None:
    value = {"1": {"null": "{", "true": ['"1":', "{x}"]}, 'a"1': 2, "e": {"-2.5e3": None}}
    assert json.loads(codec.encode(value)) == value
    assert json.loads(codec.encode_call(("{}", "{"), {"x": "}{"}, max_bytes=None))["args"] == [
        "{}",
        "{",
    ]


def test_reserved_keys_are_refused_by_every_codec() -> None:
    for payloads in (DEFAULT, TYPED):
        for value in ({"$workflows": "datetime", "value": "x"}, [{"$workflows_wrapped": "a"}]):
            with pytest.raises(SerializationError, match="reserved for the payload codec"):
                payloads.encode(value)


def test_a_default_worker_refuses_an_encrypted_payload_instead_of_misreading_it() -> None:
    stored = JsonCodec(wrapper=FernetWrapper(KEY)).encode_call((1,), {}, max_bytes=None)
    with pytest.raises(SerializationError, match="no wrapper: give it the producers' codec"):
        DEFAULT.decode_call(stored)


# ---- the typed converter ----------------------------------------------------------------------

safe_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8
)
aware = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**200), 2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text
    | st.datetimes()
    | aware
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=8)
    | st.sampled_from(Color)
)
hashables = scalars | st.tuples(scalars, scalars)
orders = st.builds(
    Order,
    id=st.uuids(),
    total=st.decimals(allow_nan=False, allow_infinity=False),
    placed_at=aware,
    lines=st.lists(safe_text, max_size=3).map(tuple),
)
invoices = st.builds(
    Invoice,
    number=st.integers(-(2**31), 2**31),
    issued=st.dates(),
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=10**9),
)
typed_values = st.recursive(
    scalars | orders | invoices,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(hashables, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.dictionaries(safe_text.filter(lambda k: not k.startswith("$")), inner, max_size=3)
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True would hide a change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, datetime | time):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(typed_values, st.dictionaries(st.sampled_from(["a", "b"]), typed_values, max_size=2))
def test_typed_values_come_back_the_same_type_and_value(value: Any, kwargs: Any) -> None:
    assert _same(TYPED.decode(TYPED.encode(value)), value)
    args, back = TYPED.decode_call(TYPED.encode_call((value,), kwargs, max_bytes=None))
    assert _same(args, [value]) and _same(back, kwargs)
    # What inspection shows is plain JSON any tool can print.
    json.dumps(TYPED.view(json.loads(TYPED.encode(value))))


def test_typed_values_are_tagged_objects_readable_as_json() -> None:
    stored = TYPED.encode({"at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "c": Color.RED})
    assert json.loads(stored) == {
        "at": {"$workflows": "datetime", "value": "2024-05-01T12:00:00+00:00"},
        "c": {"$workflows": f"{Color.__module__}.Color", "value": "red"},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a"}, "dict key '1' of type int"),
        ({(1, 2): "a"}, "dict key .* of type tuple"),
        (Unregistered(1), "Unregistered, which is not registered with this codec"),
        (OrderedDict(a=1), "subclass of dict that would come back as a plain dict"),
        (object(), "object, which this codec cannot store"),
        (float("nan"), "not JSON-serializable"),
        ({"$workflows_x": 1}, "reserved"),
    ],
)
def test_typed_codec_refuses_what_would_not_come_back_equal(value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        TYPED.encode(value, what="result")


def test_a_list_holding_itself_is_refused_not_a_recursion_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="nested more than"):
        TYPED.encode(loop)


def test_decoding_builds_only_registered_classes_never_imports_a_named_path() -> None:
    before = set(sys.modules)
    for tag in ("subprocess.Popen", "os.system", "tests.unit.test_codec.Unregistered"):
        hostile = json.dumps({"$workflows": tag, "value": {"args": ["true"]}})
        with pytest.raises(SerializationError, match="not registered with this codec"):
            TYPED.decode(hostile)
    assert set(sys.modules) == before
    # A codec that registered Order does not decode it for one that did not.
    stored = TYPED.encode(Order(uuid.uuid4(), Decimal(1), datetime.now(UTC)))
    with pytest.raises(SerializationError, match="Order', which is not registered"):
        TypedJsonCodec().decode(stored)


@pytest.mark.parametrize(
    "stored",
    [
        {"$workflows": "datetime", "value": "yesterday"},
        {"$workflows": "decimal", "value": "1.2.3"},
        {"$workflows": "bytes", "value": "***"},
        {"$workflows": "uuid", "value": 5},
        {"$workflows": "timedelta", "value": [1, 2]},
        {"$workflows": "set", "value": [[1]]},
        {"$workflows": "datetime"},
        {"$workflows": 5, "value": 1},
        {"$workflows": "datetime", "value": "2024-01-01", "extra": 1},
        {"$workflows": f"{Order.__module__}.Order", "value": {"id": 1, "nope": 2}},
        {"$workflows": f"{Order.__module__}.Order", "value": [1]},
        {"$workflows": f"{Invoice.__module__}.Invoice", "value": {"number": "x"}},
        {"$workflows": f"{Color.__module__}.Color", "value": "green"},
    ],
)
def test_a_malformed_tagged_value_fails_with_a_serialization_error(stored: Any) -> None:
    with pytest.raises(SerializationError):
        TYPED.decode(json.dumps(stored))


def test_register_refuses_what_it_cannot_rebuild_and_name_clashes() -> None:
    typed = TypedJsonCodec()
    with pytest.raises(ConfigurationError, match="not a dataclass, a pydantic model or an Enum"):
        typed.register(dict)
    with pytest.raises(ConfigurationError, match="built-in tag"):
        typed.register(Order, name="datetime")
    typed.register(Order, name="order")
    typed.register(Order, name="order")  # the same again is harmless
    with pytest.raises(ConfigurationError, match="registered already"):
        typed.register(Invoice, name="order")
    # A name survives a move of the class: decoding looks the name up, not the module.
    moved = TypedJsonCodec()
    moved.register(Order, name="order")
    value = Order(uuid.uuid4(), Decimal("2.50"), datetime.now(UTC))
    assert moved.decode(typed.encode(value)) == value


# ---- wrappers ---------------------------------------------------------------------------------


def test_fernet_payloads_are_json_envelopes_of_ciphertext_only() -> None:
    wrapped = TypedJsonCodec(types=[Order], wrapper=FernetWrapper(KEY))
    value = {"card": "4111-SECRET", "order": Order(uuid.uuid4(), Decimal(3), datetime.now(UTC))}
    first, second = wrapped.encode(value), wrapped.encode(value)
    for stored in (first, second):
        envelope = json.loads(stored)
        assert set(envelope) == {"$workflows_wrapped", "data"}
        assert envelope["$workflows_wrapped"] == "fernet"
        assert "SECRET" not in stored and "Order" not in stored
    # Not deterministic, and it need not be: both decode to the same value.
    assert first != second
    assert wrapped.decode(first) == wrapped.decode(second) == value


def test_a_wrong_key_fails_clearly_and_never_shows_a_key() -> None:
    stored = JsonCodec(wrapper=FernetWrapper(KEY)).encode("x")
    other = Fernet.generate_key()
    with pytest.raises(SerializationError, match="cannot be decrypted") as failure:
        JsonCodec(wrapper=FernetWrapper(other)).decode(stored)
    assert KEY.decode() not in str(failure.value) and other.decode() not in str(failure.value)
    with pytest.raises(ConfigurationError, match="not a Fernet key") as bad:
        FernetWrapper("not-a-key-" + KEY.decode()[:20])
    assert KEY.decode()[:20] not in str(bad.value)


def test_multifernet_rotation_reads_old_payloads_and_writes_with_the_new_key() -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old = JsonCodec(wrapper=FernetWrapper(old_key)).encode({"v": 1})
    rotated = JsonCodec(wrapper=FernetWrapper(MultiFernet([Fernet(new_key), Fernet(old_key)])))
    assert rotated.decode(old) == {"v": 1}
    assert JsonCodec(wrapper=FernetWrapper(new_key)).decode(rotated.encode(2)) == 2


def test_payload_limit_counts_the_stored_envelope() -> None:
    wrapped = JsonCodec(wrapper=FernetWrapper(KEY))
    plain_size = len(codec.encode("x" * 700))
    assert plain_size < 1000
    with pytest.raises(SerializationError, match=r"once wrapped .* over the limit of 1000"):
        wrapped.encode("x" * 700, max_bytes=1000)


class Rot13(PayloadWrapper):
    """A wrapper of the tests' own: any scheme plugs in through the same interface."""

    scheme = "rot13"

    def wrap(self, text: str) -> str:
        import codecs

        return codecs.encode(text.encode("unicode_escape").decode("ascii"), "rot13")

    def unwrap(self, data: str) -> str:
        import codecs

        return codecs.decode(data, "rot13").encode("ascii").decode("unicode_escape")


def test_inspection_unwraps_when_it_can_and_shows_the_envelope_when_it_cannot() -> None:
    stored = json.loads(TypedJsonCodec(wrapper=Rot13()).encode({"at": date(2024, 1, 2)}))
    assert TypedJsonCodec(wrapper=Rot13()).view(stored) == {
        "at": {"$workflows": "date", "value": "2024-01-02"}
    }
    for other in (DEFAULT, JsonCodec(wrapper=FernetWrapper(KEY))):
        assert other.view(stored) == stored
    assert codec.wrapped_scheme(stored) == "rot13"
    assert codec.wrapped_scheme({"a": 1}) is None
    with pytest.raises(SerializationError, match="wrapped as 'rot13'"):
        JsonCodec(wrapper=FernetWrapper(KEY)).decode_stored(stored)


# ---- a process's codec ------------------------------------------------------------------------

CODEC_FOR_PATH = TypedJsonCodec(types=[Order])
NOT_A_CODEC = object()


def test_current_is_the_default_then_the_setting_then_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKFLOWS_CODEC", raising=False)
    assert codec.current() is DEFAULT
    monkeypatch.setenv("WORKFLOWS_CODEC", f"{__name__}:CODEC_FOR_PATH")
    assert codec.current() is CODEC_FOR_PATH
    other = TypedJsonCodec()
    codec.use(other)
    try:
        assert codec.current() is other
    finally:
        codec.use(None)
    assert codec.current() is CODEC_FOR_PATH


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_here:codec", "cannot import it .ModuleNotFoundError"),
        (f"{__name__}:missing", "cannot import it .AttributeError"),
        (f"{__name__}:NOT_A_CODEC", "is a object, not a codec"),
    ],
)
def test_a_bad_codec_path_is_one_clear_configuration_error(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"WORKFLOWS_CODEC={path!r}.*{message}"):
        codec.load(path)


@pytest.mark.parametrize("raw", ["codec", "a b:c", "mod:", ":attr", "mod:attr:x"])
def test_the_codec_setting_must_be_an_import_path(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="WORKFLOWS_CODEC"):
        Settings.from_env({"WORKFLOWS_CODEC": raw})
    assert Settings.from_env({"WORKFLOWS_CODEC": "app.codecs:payloads"}).codec == (
        "app.codecs:payloads"
    )
    assert Settings.from_env({"WORKFLOWS_CODEC": ""}).codec is None


def test_use_refuses_what_is_not_a_codec() -> None:
    with pytest.raises(ConfigurationError, match=r"a codec is a workflows\.codec\.JsonCodec"):
        codec.use(json)  # type: ignore[arg-type]


# ---- replay ------------------------------------------------------------------------------------


async def _activity_twice() -> list[Any]:
    # Stands in for an @activity's .run(): the engine sees only the step and its recorded result.
    from workflows.history import StepOptions
    from workflows.replay import current_instance

    instance = current_instance()
    assert instance is not None
    first = await instance.step(ScheduleActivity(-1, "app:load", (), {}, StepOptions()))
    second = await instance.step(ScheduleActivity(-1, "app:load", (), {}, StepOptions()))
    return [first, second, type(first).__name__]


@pytest.mark.parametrize("wrapper", [None, FernetWrapper(KEY)])
def test_replay_hands_the_code_the_same_typed_value_every_time(
    wrapper: PayloadWrapper | None,
) -> None:
    payloads = TypedJsonCodec(types=[Order], wrapper=wrapper)
    value = Order(uuid.uuid4(), Decimal("9.99"), datetime(2024, 1, 1, tzinfo=UTC), ("a",))
    # As a worker records it (the activity's result, stored) and reads it back on each replay.
    stored = [payloads.encode(value), payloads.encode(Decimal("0.10"))]
    outcomes = []
    for _ in range(3):
        history = [
            StepRecord(seq, "activity", "app:load", "completed", payloads.decode(text), None, seq)
            for seq, text in enumerate(stored)
        ]
        _, activation = WorkflowInstance.replay(_activity_twice, (), {}, history)
        assert activation.status == "completed"
        outcomes.append(activation.result)
    assert outcomes[0] == [value, Decimal("0.10"), "Order"]
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert payloads.decode(payloads.encode(outcomes[0])) == outcomes[0]
