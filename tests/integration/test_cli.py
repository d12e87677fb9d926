"""The CLI and the quick start as a new user runs them: real processes, real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def cli(
    *args: str, cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def enqueue_with_client(user_dir: Path, env: dict[str, str]) -> str:
    """Run the user's client.py, as they would; the job id it prints."""
    return subprocess.run(
        [sys.executable, "client.py"],
        cwd=user_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples" / "quickstart" / "app.py", tmp_path / "app.py")
    (tmp_path / "client.py").write_text(
        textwrap.dedent("""
        import asyncio, sys
        from app import send_email

        async def main():
            print(await send_email.queue(to="a@b.c", subject="Hi", body="..."))

        asyncio.run(main())
    """)
    )
    return tmp_path


@pytest.fixture
def env(empty_database_url: str) -> Iterator[dict[str, str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    environment["WORKFLOWS_DATABASE_URL"] = empty_database_url
    environment["WORKFLOWS_WORKER_POLL_INTERVAL"] = "0.2"
    yield environment


def test_quickstart_job_path_through_the_cli(user_dir: Path, env: dict[str, str]) -> None:
    first = cli("workflows", "migrate", cwd=user_dir, env=env)
    assert "applied migrations 1" in first.stdout
    second = cli("workflows", "migrate", cwd=user_dir, env=env)
    assert "up to date" in second.stdout

    job_id = enqueue_with_client(user_dir, env)

    listed = json.loads(
        cli(
            "workflows",
            "list",
            "--queue",
            "emails",
            "--status",
            "pending",
            "--json",
            cwd=user_dir,
            env=env,
        ).stdout
    )
    assert [row["id"] for row in listed] == [job_id]
    for key in (
        "id",
        "kind",
        "name",
        "queue",
        "status",
        "priority",
        "attempts",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    ):
        assert key in listed[0]
    assert listed[0]["kind"] == "job" and listed[0]["name"] == "app:send_email"

    worker = subprocess.Popen(
        [str(BIN / "currant"), "worker", "-q", "emails", "-q", "orders"],
        cwd=user_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(200):
            status = json.loads(
                cli("workflows", "status", job_id, "--json", cwd=user_dir, env=env).stdout
            )
            if status["status"] == "completed":
                break
            time.sleep(0.05)
        assert status["status"] == "completed"
        assert status["result"] == {"sent": True}
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=40)
    assert worker.returncode == 0, output
    assert f"started job app:send_email id={job_id}" in output
    assert f"completed job app:send_email id={job_id}" in output

    table = cli("workflows", "list", cwd=user_dir, env=env).stdout
    assert job_id in table and "completed" in table


def test_cancel_pending_job_and_finished_job(user_dir: Path, env: dict[str, str]) -> None:
    cli("workflows", "migrate", cwd=user_dir, env=env)
    job_id = enqueue_with_client(user_dir, env)
    cancelled = cli("workflows", "cancel", job_id, cwd=user_dir, env=env)
    assert f"cancelled {job_id}" in cancelled.stdout
    status = json.loads(cli("workflows", "status", job_id, "--json", cwd=user_dir, env=env).stdout)
    assert status["status"] == "cancelled"
    again = cli("workflows", "cancel", job_id, cwd=user_dir, env=env)
    assert again.returncode == 0 and "already cancelled" in again.stdout


def test_unknown_id_is_one_clean_line(user_dir: Path, env: dict[str, str]) -> None:
    cli("workflows", "migrate", cwd=user_dir, env=env)
    for args in (
        ("status", "00000000-0000-0000-0000-000000000000"),
        ("status", "nope"),
        ("cancel", "00000000-0000-0000-0000-000000000000"),
    ):
        result = cli("workflows", *args, cwd=user_dir, env=env, check=False)
        assert result.returncode == 4, result.stderr
        assert result.stderr.startswith("error: no execution")
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_unmigrated_database_is_one_clean_line(user_dir: Path, env: dict[str, str]) -> None:
    result = cli("workflows", "list", cwd=user_dir, env=env, check=False)
    assert result.returncode == 3, result.stderr
    assert "run `workflows migrate`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_clean_line_without_password(
    user_dir: Path, env: dict[str, str]
) -> None:
    env = {**env, "WORKFLOWS_DATABASE_URL": "postgresql://bob:s3cret@127.0.0.1:1/db"}
    for args in (("list",), ("migrate",), ("status", "00000000-0000-0000-0000-000000000000")):
        result = cli("workflows", *args, cwd=user_dir, env=env, check=False)
        assert result.returncode == 5, result.stderr
        assert "cannot connect" in result.stderr
        assert "s3cret" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_worker_refuses_invalid_queue_name(user_dir: Path, env: dict[str, str]) -> None:
    result = cli("currant", "worker", "-q", "bad queue'--", cwd=user_dir, env=env, check=False)
    assert result.returncode != 0
    assert "invalid queue name" in result.stderr
    assert "Traceback" not in result.stderr


def test_producer_install_needs_no_worker_or_cli_code(user_dir: Path, env: dict[str, str]) -> None:
    from importlib.metadata import PackageNotFoundError, requires

    def closure(dist: str, seen: set[str]) -> set[str]:
        for req in requires(dist) or []:
            if "extra ==" in req:
                continue
            name = req.split(";")[0].split("[")[0]
            for sep in "<>=!~ ":
                name = name.split(sep)[0]
            name = name.strip().lower()
            if name and name not in seen:
                seen.add(name)
                # Only what is installed can be walked; the packages we check all are.
                with contextlib.suppress(PackageNotFoundError):
                    closure(name, seen)
        return seen

    deps = closure("workflows-postgres", set())
    assert "workflows-core" in deps
    assert not deps & {
        "click",
        "prometheus-client",
        "prometheus_client",
        "workflows-worker",
        "workflows-cli",
    }

    cli("workflows", "migrate", cwd=user_dir, env=env)
    # A producer enqueues (async, sync, and in its own transactions) with those packages absent.
    (user_dir / "producer.py").write_text(
        textwrap.dedent("""
        import asyncio, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"click", "prometheus_client", "workflows_worker",
                                           "workflows_cli"}:
                    raise ImportError(f"blocked {name}")
        sys.meta_path.insert(0, Block())
        import asyncpg, os, psycopg
        from app import send_email

        async def main():
            url = os.environ["WORKFLOWS_DATABASE_URL"]
            ids = [await send_email.queue(to="async", subject="s", body="b"),
                   send_email.queue_sync(to="sync", subject="s", body="b")]
            with psycopg.connect(url) as conn:
                ids.append(send_email.options(conn=conn).queue_sync(to="tx", subject="s", body="b"))
            with psycopg.connect(url) as conn:
                send_email.options(conn=conn).queue_sync(to="rolled", subject="s", body="b")
                conn.rollback()
            conn = await asyncpg.connect(url)
            async with conn.transaction():
                ids.append(await send_email.options(conn=conn).queue(to="atx", subject="s", body="b"))
            await conn.close()
            assert not {"click", "prometheus_client", "workflows_worker"} & set(sys.modules)
            print(len(ids))

        asyncio.run(main())
    """)
    )
    out = subprocess.run(
        [sys.executable, "producer.py"],
        cwd=user_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    rows = json.loads(cli("workflows", "list", "--json", cwd=user_dir, env=env).stdout)
    assert sorted(r["args"]["kwargs"]["to"] for r in rows) == ["async", "atx", "sync", "tx"]


def test_worker_on_unmigrated_database_is_one_clean_line(
    user_dir: Path, env: dict[str, str]
) -> None:
    result = cli("currant", "worker", "-q", "emails", cwd=user_dir, env=env, check=False)
    assert result.returncode != 0
    assert "run `workflows migrate`" in result.stderr
    assert "Traceback" not in result.stderr
