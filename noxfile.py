"""Task runner for the monorepo: `nox` runs tests, lint and types; `nox -s chaos|bench|demo`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
# tests/unit/test_deploy.py checks deploy/ with promtool. No PyPI package ships it; Debian's
# `prometheus` package does.
PROMTOOL_MISSING = (
    "promtool is not on PATH and could not be fetched: install it "
    "(Debian/Ubuntu: `sudo apt-get install prometheus`; elsewhere Prometheus's release archive)"
)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (a throwaway PostgreSQL starts on demand)."""
    _provide_promtool(session)
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("pytest", "tests/unit", "tests/integration", *session.posargs)


def _provide_promtool(session: nox.Session) -> None:
    """Put promtool on the session's PATH unless the machine has one (kept in nox's cache)."""
    if shutil.which("promtool") is not None:
        return
    # Absolute: the fetch works in a folder of its own, and the link must hold from anywhere.
    cached = (ROOT / session.cache_dir / "promtool").resolve()
    cached.parent.mkdir(parents=True, exist_ok=True)
    if not cached.is_file():
        _fetch_promtool(session, cached)
    link = Path(session.bin) / "promtool"
    link.unlink(missing_ok=True)
    link.symlink_to(cached)


def _fetch_promtool(session: nox.Session, dest: Path) -> None:
    """Take promtool out of Debian's `prometheus` package instead of installing the package.

    Installing it (about 8 s, a dozen JS packages, a system user) also enables a Prometheus
    server at boot and starts it on :9090 from its postinst; only a policy-rc.d that forbids
    starts, as Docker-style images have, keeps it from running. Downloading the .deb and
    extracting one file takes about 1.5 s and leaves nothing running or enabled.
    """
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        session.error(PROMTOOL_MISSING)
    if os.geteuid() == 0:
        # apt downloads as the `_apt` user, who cannot write to a private temporary folder;
        # say that root downloads, rather than let apt warn that it falls back to it.
        sudo: list[str] | None = []
        download_options = ["-o", "APT::Sandbox::User=root"]
    else:
        can_sudo = shutil.which("sudo") is not None and (
            subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
        )
        sudo = ["sudo", "-n"] if can_sudo else None
        download_options = []
    try:
        if sudo is not None:
            # A fresh machine may have no package lists, an old one a version the mirror dropped.
            session.run(*sudo, "apt-get", "update", "-q", external=True)
        with tempfile.TemporaryDirectory() as tmp, session.chdir(tmp):
            # Without root or sudo the lists already on the machine may still be enough.
            session.run("apt-get", "download", "-q", *download_options, "prometheus", external=True)
            (deb,) = Path(tmp).glob("prometheus_*.deb")
            session.run("dpkg-deb", "--extract", str(deb), "root", external=True)
            part = dest.with_name(f"{dest.name}.{os.getpid()}")
            shutil.copy2(Path(tmp, "root", "usr", "bin", "promtool"), part)
            os.replace(part, dest)  # a session running in parallel never sees half a file
    except nox.command.CommandFailed:
        session.error(PROMTOOL_MISSING)


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


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The quickstart example, end to end (run.sh installs into a virtualenv of its own)."""
    session.run("bash", "examples/quickstart/run.sh", *session.posargs, external=True)
