"""Finding decorated functions by the import path recorded on an execution."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from workflows.api import REGISTRY, Function


class FunctionNotFound(Exception):
    """The recorded function cannot be imported, or is not a decorated function."""


def add_cwd_to_path() -> None:
    # As with `python -m`: the folder the worker starts in is importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_app_modules(modules: list[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def resolve(path: str, kind: str) -> Function[Any, Any]:
    found = REGISTRY.get(path)
    if found is None:
        module_name, sep, qualname = path.partition(":")
        if not sep or not module_name or not qualname:
            raise FunctionNotFound(f"{path!r} is not a function path of the form module:name")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise FunctionNotFound(
                f"cannot import module {module_name!r} for {path}: {type(exc).__name__}: {exc}"
            ) from None
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise FunctionNotFound(f"module {module_name!r} has no {qualname!r}")
        if not isinstance(obj, Function):
            raise FunctionNotFound(
                f"{path} is not a @job, @activity or @workflow function "
                f"(found {type(obj).__name__})"
            )
        found = obj
    if found.kind != kind:
        raise FunctionNotFound(f"{path} is a @{found.kind}, but the execution is a {kind}")
    return found


def known_workflow_versions() -> dict[str, int]:
    return {
        path: fn.version
        for path, fn in REGISTRY.items()
        if fn.kind == "workflow" and fn.version is not None
    }
