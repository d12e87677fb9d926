"""Task runner for the monorepo: `nox` runs tests, lint and types; `nox -s chaos|bench|demo`."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "types"]

ROOT = Path(__file__).parent
# Every package in one pip command, so pip takes the local copies of workflows-core & co
# instead of looking for them on PyPI.
PACKAGES = [
    f"./{p.parent.relative_to(ROOT).as_posix()}/"
    for p in sorted(ROOT.glob("packages/*/pyproject.toml"))
]
SOURCES = [p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("packages/*/src"))]
# pyyaml: tests/unit/test_deploy.py reads the manifests under deploy/.
TEST_DEPS = ["pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "pyyaml"]
# Linters pinned: a new release must not fail CI on code nobody touched.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (a throwaway PostgreSQL starts on demand)."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("pytest", "tests/unit", "tests/integration", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """Crash tests: processes killed on purpose (prints its seeds and figures)."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("pytest", "-s", "tests/chaos", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    session.install(*PACKAGES, MYPY, "asyncpg-stubs")
    session.run("mypy", "--strict", *SOURCES)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Procrastinate, PgQueuer and DBOS (benchmarks/); `-- --quick` for a
    short run, `-- --help` for the options. Results land in benchmarks/results/."""
    session.install(*PACKAGES, "matplotlib")
    # The peers go into this session's environment only, never into the project's
    # dependencies; one that fails to install is reported as an error in the results instead
    # of stopping the benchmark.
    for peer in ("procrastinate", "pgqueuer", "dbos"):
        try:
            session.install(peer)
        except nox.command.CommandFailed:
            session.warn(f"could not install {peer}: its figures will show as errors")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The quickstart example, end to end."""
    session.install(*PACKAGES)
    session.run("bash", "examples/quickstart/run.sh", *session.posargs, external=True)
