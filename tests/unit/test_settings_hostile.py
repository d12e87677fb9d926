"""Settings that cannot work are refused, from the environment and from code alike."""

from __future__ import annotations

import dataclasses

import pytest

from workflows.config import Settings, validate_schema_name
from workflows.errors import ConfigurationError
from workflows_postgres.queries import Queries, quote_ident

FLOAT_FIELDS = [f.name for f in dataclasses.fields(Settings) if f.type == "float"]


def test_nan_infinite_zero_and_negative_floats_are_refused_from_the_environment() -> None:
    # Every float field, so one added later is checked too.
    assert {"worker_heartbeat_interval", "default_timeout", "retry_backoff_max"} <= set(
        FLOAT_FIELDS
    )
    for name in FLOAT_FIELDS:
        key = "WORKFLOWS_" + name.upper()
        for raw in ("nan", "NaN", "inf", "-inf", "1e400", "0", "-1"):
            with pytest.raises(ConfigurationError, match=key) as caught:
                Settings.from_env({key: raw})
            assert "finite number greater than 0" in str(caught.value), (key, raw)


def test_nan_and_infinite_floats_are_refused_in_code() -> None:
    for name in FLOAT_FIELDS:
        for value in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ConfigurationError, match="WORKFLOWS_" + name.upper()):
                Settings(**{name: value})


def test_heartbeat_interval_of_half_the_timeout_or_more_is_refused_from_the_environment() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": "15"})
    message = str(caught.value)
    assert "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL (15)" in message
    assert "WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT (30)" in message
    with pytest.raises(ConfigurationError, match=r"INTERVAL \(5\).*TIMEOUT \(2\)"):
        Settings.from_env({"WORKFLOWS_WORKER_HEARTBEAT_TIMEOUT": "2"})


def test_heartbeat_interval_of_half_the_timeout_or_more_is_refused_in_code() -> None:
    with pytest.raises(ConfigurationError, match=r"INTERVAL \(10\).*TIMEOUT \(20\)"):
        Settings(worker_heartbeat_interval=10, worker_heartbeat_timeout=20)
    with pytest.raises(ConfigurationError, match="HEARTBEAT"):
        dataclasses.replace(Settings(), worker_heartbeat_interval=60.0)
    # The defaults and anything under half pass.
    assert Settings().worker_heartbeat_interval == 5.0
    assert Settings(worker_heartbeat_interval=0.3, worker_heartbeat_timeout=2.0)
    assert Settings.from_env({"WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": "14.9"})


@pytest.mark.parametrize(
    "name",
    ["public", "information_schema", "pg_catalog", "pg_temp", "pg_workflows", "a" * 57],
)
def test_reserved_and_too_long_schema_names_are_refused_everywhere(name: str) -> None:
    with pytest.raises(ConfigurationError, match="WORKFLOWS_SCHEMA"):
        Settings.from_env({"WORKFLOWS_SCHEMA": name})
    with pytest.raises(ConfigurationError, match="WORKFLOWS_SCHEMA"):
        Settings(schema=name)
    for check in (validate_schema_name, quote_ident, Queries.for_schema):
        with pytest.raises(ConfigurationError, match=repr(name)):
            check(name)


def test_schema_length_limit_comes_from_the_channel_names() -> None:
    longest = "s" * 56
    assert Settings(schema=longest).schema == longest
    # Every channel of the longest schema fits PostgreSQL's 63-byte limit on names.
    q = Queries.for_schema(longest)
    assert max(map(len, (q.work_channel, q.cancel_channel, q.done_channel, q.start_channel))) == 63
    with pytest.raises(ConfigurationError, match=r"at most 56 characters.*63-byte"):
        validate_schema_name(longest + "s")


def test_schema_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        Settings(schema="workflows\n")


def test_metrics_port_zero_from_the_environment_means_a_free_port() -> None:
    assert Settings.from_env({"WORKFLOWS_WORKER_METRICS_PORT": "0"}).worker_metrics_port == 0
    assert Settings.from_env({"WORKFLOWS_WORKER_METRICS_PORT": ""}).worker_metrics_port is None
    assert Settings.from_env({"WORKFLOWS_WORKER_METRICS_PORT": "9100"}).worker_metrics_port == 9100
    for raw in ("-1", "65536", "http"):
        with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_METRICS_PORT"):
            Settings.from_env({"WORKFLOWS_WORKER_METRICS_PORT": raw})


def test_metrics_host_defaults_to_every_interface_and_is_checked() -> None:
    assert Settings().worker_metrics_host == "0.0.0.0"
    for host in ("127.0.0.1", "::1", "::", "localhost", "metrics.internal"):
        assert Settings.from_env({"WORKFLOWS_WORKER_METRICS_HOST": host}).worker_metrics_host == (
            host
        )
    for raw in ("", "two words", "[::1]", "host/", "-lead"):
        with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_METRICS_HOST"):
            Settings.from_env({"WORKFLOWS_WORKER_METRICS_HOST": raw})


def test_worker_imports_is_a_comma_separated_list_of_module_names() -> None:
    assert Settings().worker_imports == ()
    parsed = Settings.from_env({"WORKFLOWS_WORKER_IMPORTS": " app , app.tasks,billing_2 ,"})
    assert parsed.worker_imports == ("app", "app.tasks", "billing_2")
    assert Settings.from_env({"WORKFLOWS_WORKER_IMPORTS": ""}).worker_imports == ()
    for raw in ("my-app", "app..tasks", "app.", "1app", "app tasks", "os;rm"):
        with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_IMPORTS"):
            Settings.from_env({"WORKFLOWS_WORKER_IMPORTS": raw})
    with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_IMPORTS"):
        Settings(worker_imports=["app"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_IMPORTS"):
        Settings(worker_imports=("app", "bad name"))


def test_a_refused_setting_never_shows_the_database_url() -> None:
    url = "postgresql://bob:s3cret@db/app"
    for env in (
        {"WORKFLOWS_DATABASE_URL": url, "WORKFLOWS_DEFAULT_TIMEOUT": "inf"},
        {"WORKFLOWS_DATABASE_URL": url, "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": "30"},
    ):
        with pytest.raises(ConfigurationError) as caught:
            Settings.from_env(env)
        assert "s3cret" not in str(caught.value)


def test_current_settings_follow_every_change_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # current() reads os.environ's own mapping (no encoding per name): a change of any
    # variable, a removal, and a bad value must be seen at the next call, as from_env() would.
    for name in (f.name for f in dataclasses.fields(Settings)):
        monkeypatch.delenv("WORKFLOWS_" + name.upper(), raising=False)
    assert Settings.current() == Settings.from_env({})
    monkeypatch.setenv("WORKFLOWS_SCHEMA", "other_schema")
    monkeypatch.setenv("WORKFLOWS_MAX_PAYLOAD_BYTES", "1234")
    assert Settings.current().schema == "other_schema"
    assert Settings.current().max_payload_bytes == 1234
    monkeypatch.setenv("WORKFLOWS_RETENTION_FAILED", "3d")
    assert Settings.current() == Settings.from_env()
    monkeypatch.delenv("WORKFLOWS_SCHEMA")
    assert Settings.current().schema == "workflows"
    monkeypatch.setenv("WORKFLOWS_DEFAULT_TIMEOUT", "nan")
    with pytest.raises(ConfigurationError, match="WORKFLOWS_DEFAULT_TIMEOUT"):
        Settings.current()


@pytest.mark.parametrize("raw", ["0", "-3", "many", "10001", "99999999999"])
def test_a_worker_concurrency_out_of_range_is_refused_naming_its_variable(raw: str) -> None:
    # Past PostgreSQL's integer, a claim's limit would fail every round of the worker.
    with pytest.raises(ConfigurationError, match="WORKFLOWS_WORKER_MAX_CONCURRENT"):
        Settings.from_env({"WORKFLOWS_WORKER_MAX_CONCURRENT": raw})
    assert Settings.from_env({"WORKFLOWS_WORKER_MAX_CONCURRENT": "10000"}).worker_max_concurrent


@pytest.mark.parametrize("concurrency", [0, -1, 10_001, 2**40])
def test_a_worker_concurrency_out_of_range_in_code_is_refused(concurrency: int) -> None:
    from workflows_worker.worker import Worker

    with pytest.raises(ConfigurationError, match="concurrency must be from 1 to 10,000"):
        Worker(["work"], settings=Settings(), concurrency=concurrency)
