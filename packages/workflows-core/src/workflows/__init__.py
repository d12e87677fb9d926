"""workflows: durable jobs and workflows on PostgreSQL alone."""

from importlib import metadata as _metadata

from workflows import executions, queues, rate_limits, schedules, workers
from workflows.admin import migrate, migrate_sync
from workflows.api import (
    ActivityFunction,
    JobFunction,
    WorkflowFunction,
    activity,
    cancel,
    cancel_sync,
    get_result,
    get_result_sync,
    get_status,
    get_status_sync,
    get_version,
    job,
    send_signal,
    send_signal_sync,
    sleep,
    wait_for_signal,
    workflow,
)
from workflows.client import Client
from workflows.config import configure
from workflows.determinism import DeterminismWarning, now, random, uuid4
from workflows.errors import (
    ActivityError,
    AmbiguousIdError,
    ChildWorkflowError,
    ConfigurationError,
    DatabaseUnavailableError,
    ExecutionCancelledError,
    ExecutionFailedError,
    ExecutionNotFoundError,
    NonDeterminismError,
    NotRetryableError,
    PermissionDeniedError,
    ScheduleNotFoundError,
    SchemaNotReadyError,
    SerializationError,
    SignalError,
    SignalTimeoutError,
    VersionError,
    WorkflowNotFoundError,
    WorkflowsError,
    WorkflowTimeoutError,
)
from workflows.ids import ExecutionId
from workflows.retention import prune, prune_sync
from workflows.retries import retry, retry_many, retry_many_sync, retry_sync
from workflows.schedules import Schedule
from workflows.states import Kind, Status

# The version is written once, in pyproject.toml, and read back from the installed
# distribution. No fallback for a copy that is not installed: it could not run anyway (core finds
# its store through the installed entry points).
__version__ = _metadata.version("workflows-core")

__all__ = [
    "ActivityError",
    "ActivityFunction",
    "AmbiguousIdError",
    "ChildWorkflowError",
    "Client",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeterminismWarning",
    "ExecutionCancelledError",
    "ExecutionFailedError",
    "ExecutionId",
    "ExecutionNotFoundError",
    "JobFunction",
    "Kind",
    "NonDeterminismError",
    "NotRetryableError",
    "PermissionDeniedError",
    "Schedule",
    "ScheduleNotFoundError",
    "SchemaNotReadyError",
    "SerializationError",
    "SignalError",
    "SignalTimeoutError",
    "Status",
    "VersionError",
    "WorkflowFunction",
    "WorkflowNotFoundError",
    "WorkflowTimeoutError",
    "WorkflowsError",
    "activity",
    "cancel",
    "cancel_sync",
    "configure",
    "executions",
    "get_result",
    "get_result_sync",
    "get_status",
    "get_status_sync",
    "get_version",
    "job",
    "migrate",
    "migrate_sync",
    "now",
    "prune",
    "prune_sync",
    "queues",
    "random",
    "rate_limits",
    "retry",
    "retry_many",
    "retry_many_sync",
    "retry_sync",
    "schedules",
    "send_signal",
    "send_signal_sync",
    "sleep",
    "uuid4",
    "wait_for_signal",
    "workers",
    "workflow",
]
