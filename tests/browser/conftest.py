"""Fixtures for the dashboard's browser tests: a database, a real worker process, a real
`workflows dashboard` process, and headless Chromium (Debian's, driven by Playwright; nothing
is downloaded). ``WORKFLOWS_TEST_CHROMIUM`` names the browser (`nox -s browser` sets it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser import dash_app
from workflows import workers
from workflows_postgres import client

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGES = ROOT / "docs" / "images"
# As the machine's probe ran it: without the networking flags Chromium keeps trying to reach
# Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("WORKFLOWS_TEST_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found is None:
        pytest.fail(
            "Chromium is not installed: `apt-get install chromium`, or set "
            "WORKFLOWS_TEST_CHROMIUM (`nox -s browser` and .ci/run find or install it)"
        )
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(autouse=True)
def _fresh_client() -> Iterator[None]:
    yield
    # Each test has its own database: the process's default store must not outlive it.
    client.reset_sync()


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    folder = tmp_path / "flags"
    folder.mkdir()
    return folder


def _env(database_url: str, flags: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "WORKFLOWS_DATABASE_URL": database_url,
        "WORKFLOWS_WORKER_HEARTBEAT_INTERVAL": "0.5",
        "WORKFLOWS_WORKER_POLL_INTERVAL": "0.2",
        "WORKFLOWS_RETRY_BACKOFF": "0.05",
        "DASH_FLAGS": str(flags),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # Only a test that asks for a token gets one.
    env.pop("WORKFLOWS_DASHBOARD_TOKEN", None)
    env.update(extra)
    return env


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something true."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def worker(database_url: str, flags: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `currant worker` process serving the dash queue, registered."""
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "currant"), "worker", "-q", dash_app.QUEUE, "--log-level", "INFO"],
        cwd=ROOT,
        env=_env(database_url, flags),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: workers.list_sync(), "the worker to register")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


class Dashboards:
    """Starts `workflows dashboard` processes; every one is stopped after the test."""

    def __init__(self, database_url: str, flags: Path, log_dir: Path) -> None:
        self.database_url = database_url
        self.flags = flags
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"dashboard-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [str(BIN / "workflows"), "dashboard", *args],
            cwd=ROOT,
            env=_env(self.database_url, self.flags, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start(self, *args: str, host: str = "127.0.0.1", **env: str) -> str:
        """The base URL of a new dashboard, once it answers."""
        port = free_port()
        proc = self.command("--host", host, "--port", str(port), *args, **env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url) or proc.poll() is not None, "the dashboard to answer")
        assert proc.poll() is None, self.log(proc)
        return url

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        index = self.procs.index(proc)
        return (self.log_dir / f"dashboard-{index}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


@pytest.fixture
def dashboards(database_url: str, flags: Path, tmp_path: Path) -> Iterator[Dashboards]:
    d = Dashboards(database_url, flags, tmp_path)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context and page (Playwright dismisses a dialog nobody handles)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    # The body, not the viewport: as tall as the content, no empty band below it.
    page.locator("body").screenshot(path=str(path))
    return path
