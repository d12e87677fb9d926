"""Time, randomness and ids inside workflow code, the same on every replay; and a check, when
a workflow is declared, for calls that would differ (``datetime.now()``, ``time.time()``, the
``random`` module, ``uuid.uuid4()``).

The check reads the workflow function's source (nested functions included) when it is
decorated: no sandbox, no patched modules, nothing at run time. It sees the workflow's own
body, not the helpers it calls. ``WORKFLOWS_DETERMINISM_CHECK`` says what a finding does:
``warn`` (the default; a :class:`DeterminismWarning`), ``error`` (a ``ConfigurationError``
at declaration) or ``off``.
"""

from __future__ import annotations

import ast
import inspect
import random as _random
import textwrap
import uuid as _uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

from workflows.errors import ConfigurationError

__all__ = ["DeterminismWarning", "check_workflow", "now", "random", "uuid4"]


class DeterminismWarning(UserWarning):
    """Workflow code calls something that gives a different value when it is replayed."""


def _instance(what: str) -> Any:
    # Imported here: api imports this module for the declaration check.
    from workflows.api import _require_instance

    return _require_instance(what)


def now() -> datetime:
    """The current time (UTC) for workflow code: read from the worker's clock (the database's
    time) the first time, recorded in the history, and the recorded value on every replay.
    Each call takes a history position, like a step."""
    value: datetime = _instance("workflows.now()").now()
    return value


def random() -> _random.Random:
    """A ``random.Random`` of this execution's own, seeded by its id: the same numbers in the
    same order on every replay (draw them in the same order)."""
    rng: _random.Random = _instance("workflows.random()").random()
    return rng


def uuid4() -> _uuid.UUID:
    """A random UUID (version 4) from :func:`random`: the same on every replay."""
    return _uuid.UUID(int=random().getrandbits(128), version=4)


# What to use instead, by the call found: (module or class, attribute) -> helper.
_INSTEAD = {
    ("datetime", "now"): "workflows.now()",
    ("datetime", "utcnow"): "workflows.now()",
    ("datetime", "today"): "workflows.now()",
    ("date", "today"): "workflows.now().date()",
    ("time", "time"): "workflows.now().timestamp()",
    ("time", "time_ns"): "workflows.now().timestamp()",
    ("uuid", "uuid1"): "workflows.uuid4()",
    ("uuid", "uuid4"): "workflows.uuid4()",
    ("os", "urandom"): "workflows.random().randbytes(n)",
    ("secrets", "token_hex"): "workflows.random()",
}


def _dotted(node: ast.expr) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def _finding(fn: Callable[..., Any], call: ast.Call) -> str | None:
    path = _dotted(call.func)
    if len(path) < 2:
        # A bare name imported from a module: `from time import time`, `from random import choice`.
        if len(path) == 1:
            target = fn.__globals__.get(path[0])
            module = getattr(target, "__module__", None)
            if module == "random" or (module, path[0]) in (("time", "time"), ("uuid", "uuid4")):
                owner = "random" if module == "random" else str(module)
                return _advice(f"{path[0]}()", owner, path[0])
        return None
    owner, attr = path[-2], path[-1]
    if owner == "random" or (len(path) == 2 and path[0] == "random"):
        return _advice(".".join(path) + "()", "random", attr)
    if (owner, attr) in _INSTEAD:
        return _advice(".".join(path) + "()", owner, attr)
    return None


def _advice(call: str, owner: str, attr: str) -> str:
    if owner == "random":
        instead = f"workflows.random().{attr}()"
    else:
        instead = _INSTEAD.get((owner, attr), "workflows.now()")
    return f"calls {call}, which differs on replay: use {instead}"


def check_workflow(fn: Callable[..., Any], path: str, mode: str) -> None:
    """Warn (or raise, with ``mode`` ``error``) for each call in ``fn``'s source that would
    give another value on replay. Source that cannot be read is not checked."""
    if mode == "off":
        return
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
        first = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError, SyntaxError):
        return
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found = _finding(fn, node)
            if found is not None:
                findings.append(f"workflow {path} (line {first + node.lineno - 1}) {found}")
    for message in findings:
        if mode == "error":
            raise ConfigurationError(message)
        warnings.warn(message, DeterminismWarning, stacklevel=4)
