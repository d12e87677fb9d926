"""Dependencies point down only, and every package declares what it imports.

Read from the source with ``ast`` (every import statement, inside functions and
``if TYPE_CHECKING:`` blocks too), so a layer crossed by a lazy import is caught as well as one
at the top of a module. The declared dependencies come from each package's pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = Path(__file__).parents[2] / "packages"

# Distributions whose import name is not their name with "-" as "_" (prometheus-client and
# psycopg[binary] need no entry); "pyyaml": "yaml" would be one.
IMPORT_NAMES: dict[str, str] = {"opentelemetry-api": "opentelemetry"}


@dataclass(frozen=True)
class Package:
    name: str  # the import name: workflows, workflows_postgres, ...
    src: Path
    # Import names of what pyproject.toml declares: [project].dependencies and every extra.
    declared: frozenset[str]


@dataclass(frozen=True)
class Import:
    module: str  # top-level name
    where: str  # path:line, for the failure message


def _distribution_name(requirement: str) -> str:
    """``psycopg[binary]>=3.1`` -> ``psycopg``; normalised as PyPI does (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _load_packages() -> dict[str, Package]:
    projects = {}
    for pyproject in sorted(PACKAGES.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        (src,) = (p for p in (pyproject.parent / "src").iterdir() if p.is_dir())
        requirements = [
            *project.get("dependencies", []),
            *(r for extra in project.get("optional-dependencies", {}).values() for r in extra),
        ]
        projects[_distribution_name(project["name"])] = (src, requirements)
    # Our distributions import as their src folder, not as their name (workflows-core ->
    # workflows).
    ours = {dist: src.name for dist, (src, _) in projects.items()}

    def import_name(dist: str) -> str:
        return ours.get(dist) or IMPORT_NAMES.get(dist) or dist.replace("-", "_")

    return {
        src.name: Package(
            src.name,
            src,
            frozenset(import_name(_distribution_name(r)) for r in requirements) - {src.name},
        )
        for src, requirements in projects.values()
    }


def _imports(package: Package) -> list[Import]:
    found: list[Import] = []
    for path in sorted(package.src.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(PACKAGES.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue  # relative imports stay inside the package
            found.extend(Import(n.partition(".")[0], f"{where}:{node.lineno}") for n in names)
    return found


LOADED = _load_packages()
OURS = frozenset(LOADED)
STDLIB = frozenset(sys.stdlib_module_names)


def _outside(package: str, allowed: frozenset[str]) -> list[str]:
    """Each import of ``package`` outside itself, the standard library and ``allowed``."""
    return [
        f"{i.where}: {i.module}"
        for i in _imports(LOADED[package])
        if i.module not in allowed | STDLIB | {package}
    ]


def test_every_package_is_found() -> None:
    assert set(LOADED) == {
        "workflows",
        "workflows_postgres",
        "workflows_worker",
        "workflows_cli",
        "currant",
    }


@pytest.mark.parametrize("package", sorted(LOADED))
def test_imports_only_what_its_pyproject_declares(package: str) -> None:
    # Declared means named by the package itself: leaning on another package's dependencies
    # (asyncpg through workflows-postgres) breaks the day that package drops one.
    undeclared = _outside(package, LOADED[package].declared)
    assert not undeclared, (
        f"{package} imports what packages/*/pyproject.toml does not declare for it "
        f"(declare it, or add its import name to IMPORT_NAMES): {undeclared}"
    )


# Core's one dependency: the cron parser, pure Python with no dependencies of its own (a
# schedule is validated where it is declared, in producers too).
CORE_DEPENDENCIES = frozenset({"cronsim"})
# Its optional dependencies (extras): the OpenTelemetry API (`otel`), imported by
# workflows/tracing.py alone, and cryptography (`crypto`), by workflows/crypto.py; both lazily
# (no I/O either), so `import workflows` (and a producer) never loads them
# (tests/integration/test_tracing.py checks the import of workflows leaves OpenTelemetry out).
CORE_OPTIONAL = frozenset({"opentelemetry", "cryptography"})
CORE_EXTRAS = CORE_OPTIONAL


def test_core_imports_the_standard_library_and_the_cron_parser_alone() -> None:
    # No I/O in core: not even a dependency declared by mistake may be imported.
    assert LOADED["workflows"].declared == CORE_DEPENDENCIES | CORE_OPTIONAL
    assert not _outside("workflows", CORE_DEPENDENCIES | CORE_OPTIONAL)
    where_of = {"opentelemetry": "tracing.py", "cryptography": "crypto.py"}
    for module, home in where_of.items():
        found = [i.where for i in _imports(LOADED["workflows"]) if i.module == module]
        assert found, module
        assert all(where.split(":")[0].endswith(home) for where in found), found


def test_core_imports_its_extras_lazily() -> None:
    at_module_level = []
    for path in sorted(LOADED["workflows"].src.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            at_module_level += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in CORE_EXTRAS
            ]
    assert not at_module_level


@pytest.mark.parametrize(
    ("package", "never"),
    [
        ("workflows", OURS - {"workflows"} | {"asyncpg", "psycopg", "click", "prometheus_client"}),
        (
            "workflows_postgres",
            {"workflows_worker", "workflows_cli", "currant", "click", "prometheus_client"},
        ),
        ("workflows_worker", {"workflows_cli", "currant", "click"}),
        ("workflows_cli", {"currant"}),
    ],
)
def test_dependencies_point_down_only(package: str, never: set[str]) -> None:
    # The producer install (core + postgres) stays light, and nothing below the CLI needs it.
    assert not LOADED[package].declared & never
    crossing = [f"{i.where}: {i.module}" for i in _imports(LOADED[package]) if i.module in never]
    assert not crossing, f"{package} imports a package above it or one it must not: {crossing}"


def test_the_worker_reaches_the_store_through_its_interface_only() -> None:
    # workflows-postgres is a dependency of the worker's install (it provides the store, found
    # through the workflows.stores entry point), never of its code: no SQL, no driver, no
    # store class in the worker, only workflows.store.WorkerStore.
    behind = {"workflows_postgres", "asyncpg", "psycopg"}
    crossing = [
        f"{i.where}: {i.module}" for i in _imports(LOADED["workflows_worker"]) if i.module in behind
    ]
    assert not crossing, f"the worker goes around workflows.store.WorkerStore: {crossing}"
