"""Log output: the JSON format's fields, the text format's line, the settings that choose them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner

from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows.records import Claimed
from workflows_cli.logs import JsonFormatter, setup_logging
from workflows_cli.worker_cmd import cli as currant
from workflows_worker.logs import CONTEXT_FIELDS, bound, execution_fields, get_logger


def _claimed(**changes: Any) -> Claimed:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "kind": "job",
        "name": "app:send",
        "queue": "emails",
        "args": "{}",
        "attempts": 2,
        "max_retries": 3,
        "timeout": 10.0,
        "lease": 1,
        "version": None,
        "wakeups": 0,
        "parent_id": None,
        "deadline": None,
        "pickup_latency": None,
        **changes,
    }
    return Claimed(**values)


class _Lines(logging.Handler):
    """Formats each record as the CLI's handler would, into a list."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[list[str]]:
    handler = _Lines(JsonFormatter())
    logger = logging.getLogger("workflows_worker")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_a_record_about_an_execution_carries_its_fields_and_the_worker_id(
    json_lines: list[str],
) -> None:
    log = get_logger("workflows_worker.test_logs")
    c = _claimed()
    worker_id = str(uuid.uuid4())

    async def run() -> None:
        with bound(worker_id=worker_id):
            # A task started inside the worker's context, as the executor's are.
            async def execution() -> None:
                with bound(**execution_fields(c)):
                    log.info("completed job %s", c.name, extra={"duration": 0.25})

            await asyncio.create_task(execution())
            log.info("worker %s stopping", worker_id[:8])

    asyncio.run(run())

    first, second = (json.loads(line) for line in json_lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "workflows_worker.test_logs"
    assert first["message"] == "completed job app:send"
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert {k: first[k] for k in ("execution_id", "kind", "name", "queue", "attempt")} == {
        "execution_id": c.id,
        "kind": "job",
        "name": "app:send",
        "queue": "emails",
        "attempt": 2,
    }
    assert first["worker_id"] == worker_id
    assert first["duration"] == 0.25
    assert "exception" not in first
    # Outside the execution's task: the worker's fields only.
    assert second["worker_id"] == worker_id
    assert "execution_id" not in second and "name" not in second


def test_fields_passed_with_extra_win_over_the_bound_ones(json_lines: list[str]) -> None:
    log = get_logger("workflows_worker.test_logs")
    activity, workflow = _claimed(kind="activity"), _claimed(kind="workflow", name="app:flow")

    with bound(**execution_fields(activity)):
        log.info("completed workflow", extra=execution_fields(workflow))

    (line,) = (json.loads(text) for text in json_lines)
    assert (line["execution_id"], line["kind"], line["name"]) == (
        workflow.id,
        "workflow",
        "app:flow",
    )


def test_an_exception_is_written_as_its_traceback_text(json_lines: list[str]) -> None:
    log = get_logger("workflows_worker.test_logs")
    try:
        raise RuntimeError("database went away\nsecond line")
    except RuntimeError:
        log.exception("database round failed")

    (line,) = json_lines
    assert "\n" not in line, "one object per line"
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: database went away\nsecond line" in record["exception"]


def test_a_field_json_cannot_hold_is_written_as_its_text(json_lines: list[str]) -> None:
    log = get_logger("workflows_worker.test_logs")
    execution_id = uuid.uuid4()

    log.warning("odd field", extra={"execution_id": execution_id, "since": datetime(2026, 1, 2)})

    record = json.loads(json_lines[0])
    assert record["execution_id"] == str(execution_id)
    assert record["since"] == "2026-01-02 00:00:00"


def test_setup_logging_text_keeps_the_message_without_the_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    handler = setup_logging("info", "text", stream=stream)
    assert handler is not None
    handler.addFilter(CONTEXT_FIELDS)
    c = _claimed()

    with bound(**execution_fields(c), worker_id="w-1"):
        logging.getLogger("workflows_postgres.listener").info("listener connection lost")
    logging.getLogger("workflows_worker.x").debug("not at INFO")

    (line,) = stream.getvalue().splitlines()
    assert line.endswith(" INFO workflows_postgres.listener: listener connection lost")
    assert c.id not in line and "w-1" not in line


def test_setup_logging_json_adds_the_context_to_other_packages_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    handler = setup_logging("WARNING", "json", stream=stream)
    assert handler is not None
    handler.addFilter(CONTEXT_FIELDS)

    with bound(worker_id="w-2"):
        logging.getLogger("workflows_postgres.listener").warning("listener connection lost")
        logging.getLogger("workflows_postgres.listener").info("below the level")
    # Called again (a second command in one process), it replaces its own handler.
    assert setup_logging("WARNING", "json", stream=stream) is not None
    assert len(root.handlers) == 1

    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["logger"], record["worker_id"]) == ("workflows_postgres.listener", "w-2")


def test_setup_logging_leaves_an_applications_own_handlers_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    theirs = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [theirs])
    monkeypatch.setattr(root, "level", logging.ERROR)

    assert setup_logging("DEBUG", "json") is None

    assert root.handlers == [theirs]
    assert root.level == logging.ERROR


def test_setup_logging_refuses_unknown_formats_and_levels() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        setup_logging("INFO", "xml")
    with pytest.raises(ValueError, match="log level must be one of"):
        setup_logging("LOUD", "text")


def test_log_settings_from_the_environment() -> None:
    assert (Settings().log_format, Settings().log_level) == ("text", "INFO")
    assert Settings().quiet_embedded is False
    assert Settings().worker_queue_depth_exact_limit == 100_000
    settings = Settings.from_env(
        {
            "WORKFLOWS_LOG_FORMAT": " JSON ",
            "WORKFLOWS_LOG_LEVEL": "debug",
            "WORKFLOWS_QUIET_EMBEDDED": "1",
            "WORKFLOWS_WORKER_QUEUE_DEPTH_EXACT_LIMIT": "50",
        }
    )
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert settings.quiet_embedded is True
    assert settings.worker_queue_depth_exact_limit == 50
    for raw, expected in (("true", True), ("on", True), ("0", False), ("no", False), ("", False)):
        assert Settings.from_env({"WORKFLOWS_QUIET_EMBEDDED": raw}).quiet_embedded is expected


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("WORKFLOWS_LOG_FORMAT", "xml", "must be one of text, json"),
        ("WORKFLOWS_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR"),
        ("WORKFLOWS_LOG_LEVEL", "", "must be one of"),
        ("WORKFLOWS_QUIET_EMBEDDED", "maybe", "must be 1, true, yes, on or 0"),
        ("WORKFLOWS_WORKER_QUEUE_DEPTH_EXACT_LIMIT", "0", "must be at least 1"),
        ("WORKFLOWS_WORKER_QUEUE_DEPTH_EXACT_LIMIT", "lots", "invalid literal"),
    ],
)
def test_bad_log_settings_are_refused_naming_the_variable(key: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=key) as caught:
        Settings.from_env({key: raw})
    assert message in str(caught.value)


def test_the_worker_command_refuses_bad_log_options_before_touching_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pointing nowhere: the command must fail on the option, never get as far as connecting.
    monkeypatch.setenv("WORKFLOWS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    runner = CliRunner()

    usage = runner.invoke(currant, ["worker", "-q", "q", "--log-format", "xml"])
    assert usage.exit_code == 2
    assert "'xml' is not one of 'text', 'json'" in usage.output

    monkeypatch.setenv("WORKFLOWS_LOG_LEVEL", "LOUD")
    bad_env = runner.invoke(currant, ["worker", "-q", "q"])
    assert bad_env.exit_code == 1
    assert (
        "WORKFLOWS_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR" in bad_env.output
    )
    assert "Traceback" not in bad_env.output
