"""Task runner for the monorepo: `nox` runs tests, lint and types;
`nox -s install_check|wheels|chaos|browser|bench|demo`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
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
# The same with the `dashboard` extra (the web stack), for the sessions that type-check, serve
# or measure the dashboard. Asked of currant, the umbrella: pip's resolver fails to match
# currant's own `workflows-cli` requirement to a local folder given with an extra.
WITH_DASHBOARD = [
    p.rstrip("/") + "[dashboard]" if p == "./packages/currant/" else p for p in PACKAGES
]
SOURCES = [p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("packages/*/src"))]
# Linters pinned: a new release must not fail CI on code nobody touched.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
# pyyaml: tests/unit/test_deploy.py reads the manifests under deploy/. mypy:
# tests/unit/test_typing.py runs it on the README's examples (its error codes are pinned too).
# cryptography, pydantic: the payload codec's tests (Fernet, typed models); httpx2: Starlette's
# TestClient, for the dashboard's tests that need no browser.
TEST_DEPS = [
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "pyyaml",
    MYPY,
    "cryptography",
    "pydantic>=2",
    "httpx2",
    # tests/integration/test_tracing.py: spans read back from the SDK's in-memory exporter.
    "opentelemetry-api",
    "opentelemetry-sdk",
]
# tests/integration/test_frameworks.py runs the examples under examples/ (Django, SQLAlchemy
# with asyncpg, FastAPI through httpx).
TEST_DEPS += ["django", "sqlalchemy[asyncio]", "fastapi", "httpx"]
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
    _provide_pgbouncer(session)
    # With the dashboard's stack: tests/integration/test_codec.py serves its pages.
    session.install(*WITH_DASHBOARD, *TEST_DEPS)
    session.run("pytest", "tests/unit", "tests/integration", "tests/kit", *session.posargs)


PGBOUNCER_MISSING = (
    "pgbouncer is not installed and could not be installed (tests/integration/test_poolers.py "
    "runs it): `sudo apt-get install pgbouncer` (Debian/Ubuntu), or set "
    "WORKFLOWS_TEST_PGBOUNCER to its path"
)


def _provide_pgbouncer(session: nox.Session) -> None:
    """Install Debian's pgbouncer when the machine has none (the pooler tests start it).

    Unlike promtool, it is installed rather than extracted: it needs libraries (c-ares) a
    fresh machine lacks, and its package starts nothing.
    """
    if (
        os.environ.get("WORKFLOWS_TEST_PGBOUNCER")
        or shutil.which("pgbouncer")
        or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    ):
        return
    sudo = _sudo()
    if shutil.which("apt-get") is None or sudo is None:
        session.error(PGBOUNCER_MISSING)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run(*sudo, "apt-get", "update", "-q", external=True, env=env)
        session.run(*sudo, "apt-get", "install", "-y", "-q", "pgbouncer", external=True, env=env)
    except nox.command.CommandFailed:
        session.error(PGBOUNCER_MISSING)


def _sudo() -> list[str] | None:
    """The prefix that runs a command as root: none needed, sudo without a password, or None."""
    if os.geteuid() == 0:
        return []
    can_sudo = shutil.which("sudo") is not None and (
        subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    )
    return ["sudo", "-n"] if can_sudo else None


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
    sudo = _sudo()
    # apt downloads as the `_apt` user, who cannot write to a private temporary folder; as
    # root, say that root downloads, rather than let apt warn that it falls back to it.
    download_options = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
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


# Each package by its short name (core, postgres, ...): its folder, the [project] table of its
# pyproject.toml and its import name (that of its src folder: workflows-core is `workflows`).
PROJECTS = {
    path.parent.name.removeprefix("workflows-"): (
        path.parent,
        tomllib.loads(path.read_text())["project"],
        next(p.name for p in (path.parent / "src").iterdir() if p.is_dir()),
    )
    for path in sorted(ROOT.glob("packages/*/pyproject.toml"))
}
# Run in the session's environment: import the package and every module under it (an
# undeclared dependency fails here, at import), then make sure the names after it are not
# importable at all. Modules under an extra's subpackage (argv[2], comma-separated; "-" for
# none) are left out: they need the extra, checked in a variant of its own.
IMPORT_EVERYTHING = """
import importlib, importlib.util, pkgutil, sys
name, skipped, *absent = sys.argv[1:]
skipped = [] if skipped == "-" else skipped.split(",")
package = importlib.import_module(name)
modules = [
    m.name for m in pkgutil.walk_packages(package.__path__, name + ".")
    if not any(m.name == s or m.name.startswith(s + ".") for s in skipped)
]
for module in modules:
    importlib.import_module(module)
present = [a for a in absent if importlib.util.find_spec(a) is not None]
if present:
    sys.exit(f"{name} must not bring in {present}: they are not among its declared dependencies")
print(f"{name}: imported {len(modules) + 1} modules; not installed: {', '.join(absent) or '-'}")
"""
# The subpackages that need an extra of their package: (package, extra) -> subpackage.
EXTRA_MODULES = {
    ("cli", "dashboard"): "workflows_cli.dashboard",
    ("currant", "testing"): "currant.pytest_plugin",
}


def _requirement_name(requirement: str) -> str:
    """``psycopg[binary]>=3.1`` -> ``psycopg``, normalised as PyPI does (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _install_plan(package: str) -> tuple[list[str], str, list[str]]:
    """What `install_check` installs for ``package`` (its folder and those of the packages of
    ours it depends on, directly or not), its import name, and the import names that must
    then be missing: every other package of ours and every third-party dependency declared in
    this repository that ``package`` does not need."""
    short_names = {
        _requirement_name(project["name"]): short for short, (_, project, _) in PROJECTS.items()
    }

    def requirements(short: str) -> list[str]:
        return [_requirement_name(r) for r in PROJECTS[short][1].get("dependencies", [])]

    needed: set[str] = set()
    todo = [package]
    while todo:
        short = todo.pop()
        if short not in needed:
            needed.add(short)
            todo.extend(short_names[r] for r in requirements(short) if r in short_names)
    third_party = {r for short in needed for r in requirements(short) if r not in short_names}
    declared_anywhere = {
        _requirement_name(r)
        for _, project, _ in PROJECTS.values()
        for group in [
            project.get("dependencies", []),
            *project.get("optional-dependencies", {}).values(),
        ]
        for r in group
    }
    absent = [PROJECTS[short][2] for short in sorted(PROJECTS.keys() - needed)]
    absent += sorted(
        r.replace("-", "_") for r in declared_anywhere - third_party - short_names.keys()
    )
    folders = [f"./{PROJECTS[short][0].relative_to(ROOT).as_posix()}/" for short in sorted(needed)]
    return folders, PROJECTS[package][2], absent


# virtualenv seeds pip from its own cache in about 1 s, where `python -m venv` takes 3.5 s to run
# ensurepip: most of a session whose install is a few seconds.
@nox.session(venv_backend="virtualenv")
# The bottom layer first: core needs one folder, currant all five.
@nox.parametrize(
    "package",
    [
        *sorted(PROJECTS, key=lambda short: len(_install_plan(short)[0])),
        *(f"{short}[{extra}]" for short, extra in EXTRA_MODULES),
    ],
)
def install_check(session: nox.Session, package: str) -> None:
    """One package installed alone: it imports whole and brings in nothing undeclared.

    Only its folder and those of the packages of ours it declares go in (the third-party
    dependencies come from the index), so the producer install, core + postgres, is seen to
    stay free of the worker, the CLI, click and prometheus_client. A package with an extra is
    checked twice: without it (its extra's modules left out, and the command that needs them
    says how to get them) and with it (everything imports).
    """
    short, _, extra = package.rstrip("]").partition("[")
    folders, name, absent = _install_plan(short)
    if extra:
        extra_names = {
            _requirement_name(r).replace("-", "_")
            for r in PROJECTS[short][1]["optional-dependencies"][extra]
        }
        absent = [a for a in absent if a not in extra_names]
        own = f"./{PROJECTS[short][0].relative_to(ROOT).as_posix()}/"
        folders = [f.rstrip("/") + f"[{extra}]" if f == own else f for f in folders]
    skipped = [m for (s, e), m in EXTRA_MODULES.items() if s == short and e != extra]
    # Local folders for our packages, which are not on PyPI; the third-party ones from the index.
    session.install(*folders)
    session.run("python", "-m", "pip", "check", "--disable-pip-version-check", silent=True)
    # Away from the repository, so only the installed copy can be imported.
    tmp = Path(session.create_tmp())
    script = tmp / "import_everything.py"
    script.write_text(IMPORT_EVERYTHING)
    with session.chdir(tmp):
        session.run("python", script.name, name, ",".join(skipped) or "-", *absent)
        if (short, "dashboard") in EXTRA_MODULES and not extra:
            # Without the extra, the command says what to install (exit 1), and nothing else.
            out = session.run("workflows", "dashboard", silent=True, success_codes=[1])
            if "pip install 'currant[dashboard]'" not in (out or ""):
                session.error(f"`workflows dashboard` without its extra said: {out!r}")


@nox.session
def chaos(session: nox.Session) -> None:
    """Crash tests: processes killed on purpose (prints its seeds and figures)."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run("pytest", "-s", "tests/chaos", *session.posargs)


# Debian's chromium, driven by Playwright through its own executable: nothing is downloaded.
CHROMIUM_MISSING = (
    "Chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu), or set "
    "WORKFLOWS_TEST_CHROMIUM to a Chromium or Chrome executable. `.ci/run` installs it."
)


@nox.session
def browser(session: nox.Session) -> None:
    """The dashboard in headless Chromium: pages, actions, escaping, read-only, the token
    (screenshots go to docs/images/)."""
    chromium = os.environ.get("WORKFLOWS_TEST_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if chromium is None:
        session.error(CHROMIUM_MISSING)
    session.install(*WITH_DASHBOARD, *TEST_DEPS, "playwright>=1.45")
    session.run(
        "pytest", "tests/browser", *session.posargs, env={"WORKFLOWS_TEST_CHROMIUM": chromium}
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    # Every extra whose modules are checked: the dashboard's web stack, the kit's pytest,
    # OpenTelemetry's API (workflows.tracing) and cryptography (workflows.crypto).
    every_extra = [
        p.rstrip("/") + "[dashboard,testing,otel,crypto]" if p == "./packages/currant/" else p
        for p in PACKAGES
    ]
    session.install(*every_extra, MYPY, "asyncpg-stubs")
    session.run("mypy", "--strict", *SOURCES)


@nox.session
def schema(session: nox.Session) -> None:
    """Regenerate workflows_postgres/schema.sql from the migrations (`-- --check`: compare only)."""
    session.install(*PACKAGES)
    session.run("python", "tools/schema_dump.py", *session.posargs)


# Absurd (issue 16): pinned, since the schema comes from absurdctl (its SQL, bundled in that
# package, of the same release) and must match the SDK's calls.
ABSURD = ("absurd-sdk==0.5.1", "absurdctl==0.5.1")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Procrastinate, PgQueuer, DBOS and Absurd (benchmarks/); `-- --quick`
    for a short run, `-- --help` for the options. Results land in benchmarks/results/."""
    session.install(*WITH_DASHBOARD, "matplotlib")
    # The peers go into this session's environment only, never into the project's
    # dependencies; one that fails to install is reported as an error in the results instead
    # of stopping the benchmark.
    for peer in ("procrastinate", "pgqueuer", "dbos", *ABSURD):
        try:
            session.install(peer)
        except nox.command.CommandFailed:
            session.warn(f"could not install {peer}: its figures will show as errors")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The quickstart example, end to end (run.sh installs into a virtualenv of its own)."""
    session.run("bash", "examples/quickstart/run.sh", *session.posargs, external=True)


# Where `wheels` leaves what it builds; gitignored.
DIST = ROOT / "dist"


# virtualenv, as install_check: its pip comes from a cache, where `python -m venv` runs ensurepip.
@nox.session(venv_backend="virtualenv")
def wheels(session: nox.Session) -> None:
    """Build the five sdists and wheels into dist/, install the wheels, and check what PyPI
    would get (tests/wheels): the license in each, complete metadata, the package's README
    as its page, the version its code reports."""
    # Built here, not each in an isolated environment of its own: ten environments for five
    # small pure-Python packages cost more than all the builds.
    session.install("build", "hatchling>=1.27", "pytest", "pytest-asyncio", "pytest-timeout")
    stems = [re.sub(r"[-_.]+", "_", project["name"]).lower() for _, project, _ in PROJECTS.values()]
    DIST.mkdir(exist_ok=True)
    for stem in stems:  # ours only: anything else a developer keeps in dist/ stays
        for old in [*DIST.glob(f"{stem}-*.whl"), *DIST.glob(f"{stem}-*.tar.gz")]:
            old.unlink()
    for folder, _, _ in PROJECTS.values():
        # No target named: the sdist, then the wheel built from it, as pip builds from PyPI.
        session.run(
            "python",
            "-m",
            "build",
            "--no-isolation",
            "--outdir",
            str(DIST),
            str(folder),
            silent=True,
        )
    built = sorted(str(p) for stem in stems for p in DIST.glob(f"{stem}-*.whl"))
    # The wheels themselves (their dependencies from the index), so the test imports the built
    # code and reads the version it reports.
    session.install(*built)
    session.run("pytest", "tests/wheels", *session.posargs, env={"WORKFLOWS_WHEELS_DIR": str(DIST)})
