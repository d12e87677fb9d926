"""The kit as a user adopts it: an application and its tests in a folder outside this
repository, run with only the installed packages (a job test, a workflow test with a week-long
sleep and a day-long signal timeout, a replay test against a history exported with the CLI),
and mypy --strict on that code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "user_suite"
PYPROJECT = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""


def _suite(tmp_path: Path, server: str) -> tuple[Path, dict[str, str]]:
    """The user's folder, with a history exported from a running order in histories/."""
    app = tmp_path / "shop_app"
    app.mkdir()
    for name in ("shop.py", "test_shop.py", "record_history.py"):
        shutil.copy(SUITE / name, app / name)
    (app / "pyproject.toml").write_text(PYPROJECT)
    env = _env(server)
    recorded = _run([sys.executable, "record_history.py", server], app, env)
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    assert (app / "histories" / "order-waiting.json").is_file()
    return app, env


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _env(server: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    # Nothing of this repository on the path: the installed packages only.
    env.pop("PYTHONPATH", None)
    env["WORKFLOWS_TEST_DATABASE_URL"] = server
    return env


def test_a_users_suite_runs_and_type_checks(tmp_path: Path, workflows_server: str) -> None:
    app, env = _suite(tmp_path, workflows_server)
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], app, env)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout, tests.stdout[-2000:]
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "shop.py", "test_shop.py"]
    typed = _run(mypy, app, env)
    assert typed.returncode == 0, typed.stdout[-3000:]


def test_a_replay_after_an_unguarded_change_fails_in_the_users_suite(
    tmp_path: Path, workflows_server: str
) -> None:
    app, env = _suite(tmp_path, workflows_server)
    # The deploy that breaks in-flight orders: a new step before the sleep, unguarded.
    source = (app / "shop.py").read_text()
    changed = source.replace(
        "    await sleep(7 * 86400)  # a week's grace\n",
        "    await send_receipt.run(order_id)\n    await sleep(7 * 86400)  # a week's grace\n",
    ).replace(
        "@workflow(queue=",
        "@activity()\nasync def send_receipt(order_id: str) -> None:\n    return None\n\n\n"
        "@workflow(queue=",
    )
    assert changed != source
    (app / "shop.py").write_text(changed)
    tests = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "replay"], app, env
    )
    assert tests.returncode == 1, tests.stdout[-3000:]
    assert "NonDeterminismError" in tests.stdout and "send_receipt" in tests.stdout


pytestmark = pytest.mark.timeout(600)


def test_the_readmes_testing_example_passes_as_written(
    tmp_path: Path, workflows_server: str
) -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Testing your jobs and workflows") :]
    start = section.index("```python\n") + len("```python\n")
    example = section[start : section.index("```\n", start)]
    app = tmp_path / "readme_app"
    app.mkdir()
    shutil.copy(root / "examples" / "quickstart" / "app.py", app / "app.py")
    (app / "test_readme.py").write_text(example)
    (app / "pyproject.toml").write_text(PYPROJECT)
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=app,
        env=_env(workflows_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "5 passed" in tests.stdout, tests.stdout[-2000:]
