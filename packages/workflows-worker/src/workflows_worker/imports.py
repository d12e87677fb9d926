"""Finding decorated functions by the import path recorded on an execution, importing only
application code.

The path comes from a row, which any role that can insert into ``executions`` writes: to import
it blindly would run the top-level code of any module on the worker's path. A module is
imported only if it is already imported, listed in ``WORKFLOWS_WORKER_IMPORTS`` (names or
prefixes), or found under the directory the worker started in or that of an ``-A`` module,
and not among the installed packages or the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.api import REGISTRY, Function
from workflows.config import Settings

__all__ = [
    "FunctionNotFound",
    "ImportPolicy",
    "add_cwd_to_path",
    "import_app_modules",
    "known_workflow_versions",
]

# The folders of the modules imported with -A (their top-level package's parent).
_APP_ROOTS: list[Path] = []


class FunctionNotFound(Exception):
    """The recorded function cannot be imported, is not allowed, or is not decorated."""


def add_cwd_to_path() -> None:
    # As with `python -m`: the folder the worker starts in is importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_app_modules(modules: list[str]) -> None:
    for module in modules:
        imported = importlib.import_module(module)
        top = sys.modules[module.partition(".")[0]]
        for location in _locations(top) or _locations(imported):
            root = location.parent
            if root not in _APP_ROOTS:
                _APP_ROOTS.append(root)


def _locations(module: Any) -> list[Path]:
    paths = list(getattr(module, "__path__", None) or [])
    if not paths and getattr(module, "__file__", None):
        paths = [module.__file__]
    return [Path(p).resolve() for p in paths]


def _installed_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    return tuple(Path(d).resolve() for d in dirs)


@dataclass(frozen=True)
class ImportPolicy:
    """Which modules a worker may import to find a recorded function."""

    roots: tuple[Path, ...]
    allowed: tuple[str, ...] = ()
    installed: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ImportPolicy:
        roots = [Path.cwd().resolve(), *_APP_ROOTS]
        return cls(
            tuple(dict.fromkeys(roots)),
            settings.worker_imports,
            _installed_dirs(),
        )

    def resolve(self, path: str, kind: str) -> Function[Any, Any]:
        found = REGISTRY.get(path)
        if found is None:
            found = self._find(path)
        if found.kind != kind:
            raise FunctionNotFound(f"{path} is a @{found.kind}, but the execution is a {kind}")
        return found

    def _find(self, path: str) -> Function[Any, Any]:
        module_name, sep, qualname = path.partition(":")
        if not sep or not module_name or not qualname:
            raise FunctionNotFound(f"{path!r} is not a function path of the form module:name")
        if module_name not in sys.modules:
            self.check(module_name)
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
        return obj

    def check(self, module_name: str) -> None:
        """Raise :class:`FunctionNotFound` unless ``module_name`` may be imported.

        Each enclosing package is checked before the next is looked up (finding ``a.b``
        imports ``a``), so nothing outside the policy runs.
        """
        if any(module_name == a or module_name.startswith(a + ".") for a in self.allowed):
            return
        parts = module_name.split(".")
        if not all(p.isidentifier() for p in parts):
            raise FunctionNotFound(f"{module_name!r} is not a module name")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            loaded = sys.modules.get(name)
            if loaded is not None:
                locations = _locations(loaded)
            else:
                try:
                    spec = importlib.util.find_spec(name)
                except (ImportError, ValueError) as exc:
                    raise FunctionNotFound(f"cannot find module {name!r}: {exc}") from None
                if spec is None:
                    raise FunctionNotFound(f"no module named {name!r}")
                if spec.submodule_search_locations:
                    locations = [Path(p).resolve() for p in spec.submodule_search_locations]
                elif spec.origin and spec.has_location:
                    locations = [Path(spec.origin).resolve()]
                else:
                    locations = []
            if not locations or not all(self._is_application(p) for p in locations):
                raise FunctionNotFound(
                    f"module {module_name!r} is not allowed: workers import only application "
                    "code (modules under the directory the worker started in or of an -A "
                    "module, or listed in WORKFLOWS_WORKER_IMPORTS)"
                )

    def _is_application(self, location: Path) -> bool:
        if any(location.is_relative_to(d) for d in self.installed):
            return False
        return any(location.is_relative_to(r) for r in self.roots)


def known_workflow_versions() -> dict[str, int]:
    return {
        path: fn.version
        for path, fn in REGISTRY.items()
        if fn.kind == "workflow" and fn.version is not None
    }
