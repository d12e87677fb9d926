"""workflows.configure(): settings in code, over the WORKFLOWS_* variables (no database)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import workflows
from workflows.config import Settings, configured


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    workflows.configure(reset=True)
    yield
    workflows.configure(reset=True)


def test_a_configured_value_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKFLOWS_SCHEMA", "from_env")
    monkeypatch.setenv("WORKFLOWS_DEFAULT_RETRIES", "7")
    assert Settings.current().schema == "from_env"
    returned = workflows.configure(schema="from_code")
    assert returned.schema == "from_code"
    assert Settings.current().schema == "from_code"
    # What was not configured still comes from the environment, and follows it.
    assert Settings.current().default_retries == 7
    monkeypatch.setenv("WORKFLOWS_DEFAULT_RETRIES", "8")
    assert Settings.current().default_retries == 8
    monkeypatch.setenv("WORKFLOWS_SCHEMA", "changed_env")
    assert Settings.current().schema == "from_code"


def test_calls_add_up_and_reset_goes_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWS_SCHEMA", "from_env")
    workflows.configure(schema="one")
    workflows.configure(default_retries=5)
    now = Settings.current()
    assert (now.schema, now.default_retries) == ("one", 5)
    assert configured() == {"schema": "one", "default_retries": 5}
    # No arguments: the settings in effect, unchanged.
    assert workflows.configure() == now
    again = workflows.configure(reset=True, default_timeout=9)
    assert (again.schema, again.default_retries, again.default_timeout) == ("from_env", 3, 9.0)
    workflows.configure(reset=True)
    assert Settings.current() == Settings.from_env()
    assert configured() == {}


def test_values_are_taken_as_fields_or_as_the_variables_text() -> None:
    s = workflows.configure(
        database_url="postgresql://u@h/db",
        worker_max_concurrent="4",
        retention="2d",
        retention_failed=timedelta(hours=1),
        worker_imports=["a.b", "c"],
        data_dir=Path("/tmp/x"),
        quiet_embedded=True,
        log_format="JSON",
        worker_poll_interval=2,
    )
    assert s.database_url == "postgresql://u@h/db"
    assert s.worker_max_concurrent == 4
    assert s.retention == 2 * 86400.0
    assert s.retention_failed == 3600.0
    assert s.worker_imports == ("a.b", "c")
    assert s.data_dir == Path("/tmp/x")
    assert s.quiet_embedded is True
    assert s.log_format == "json"
    assert s.worker_poll_interval == 2.0 and isinstance(s.worker_poll_interval, float)


def test_a_bad_variable_that_is_configured_over_is_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLOWS_WORKER_MAX_CONCURRENT", "lots")
    with pytest.raises(workflows.ConfigurationError, match="WORKFLOWS_WORKER_MAX_CONCURRENT"):
        Settings.current()
    assert workflows.configure(worker_max_concurrent=3).worker_max_concurrent == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shema": "x"}, r"configure\(\): unknown setting 'shema'"),
        ({"schema": "Bad-Name"}, r"configure\(\): schema='Bad-Name': must be a lower-case"),
        ({"schema": "public"}, "schema='public': is reserved"),
        ({"schema": None}, "schema=None: must not be None"),
        ({"worker_max_concurrent": 0}, "worker_max_concurrent=0: must be from 1 to 10,000"),
        ({"worker_max_concurrent": 2.5}, "worker_max_concurrent=2.5: must be a whole number"),
        ({"worker_max_concurrent": True}, "worker_max_concurrent=True: must be a whole number"),
        ({"default_timeout": float("nan")}, "default_timeout=nan: must be a finite number"),
        ({"retention": "soon"}, "retention='soon': 'soon' is not a duration"),
        ({"quiet_embedded": "maybe"}, "quiet_embedded='maybe': must be 1, true"),
        ({"worker_imports": 3}, "worker_imports=3: must be a list or tuple"),
        ({"worker_imports": ["not a module"]}, "is not a module name"),
        ({"log_level": ["INFO"]}, r"log_level=\['INFO'\]: must be text, got list"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    settings: dict[str, object], message: str
) -> None:
    workflows.configure(schema="kept")
    with pytest.raises(workflows.ConfigurationError, match=message):
        workflows.configure(**settings)
    assert configured() == {"schema": "kept"}


def test_a_bad_database_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(workflows.ConfigurationError) as info:
        workflows.configure(database_url=b"postgresql://u:s3cret@h/db")
    assert "database_url" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_settings_whose_combination_cannot_work_are_refused() -> None:
    with pytest.raises(workflows.ConfigurationError, match="below half"):
        workflows.configure(worker_heartbeat_interval=20, worker_heartbeat_timeout=30)
    assert configured() == {}


def test_the_database_url_is_not_in_the_repr_of_settings() -> None:
    settings = workflows.configure(database_url="postgresql://u:s3cret@h/db")
    assert "s3cret" not in repr(settings)


def test_a_read_racing_a_configure_never_caches_the_old_values() -> None:
    # Readers build Settings while configure() changes them: once configure() has returned,
    # no reader may have left the previous value in the cache.
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            Settings.current()

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for n in range(1, 300):
            workflows.configure(default_retries=n)
            assert Settings.current().default_retries == n
    finally:
        stop.set()
        for thread in readers:
            thread.join()
