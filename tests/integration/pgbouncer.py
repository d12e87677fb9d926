"""A throwaway PgBouncer in front of the test server, started like the test PostgreSQL.

Debian's ``pgbouncer`` package (``.ci/run`` installs it): the binary is looked up on PATH, then
in /usr/sbin (not on a normal user's PATH), or taken from ``WORKFLOWS_TEST_PGBOUNCER``. It
refuses to run as root, so as root it runs as the ``postgres`` system user, as the test server
does. Its configuration, log and pid file live in a temporary folder of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from workflows_postgres.cluster import _server_user, free_port

PGBOUNCER_ENV = "WORKFLOWS_TEST_PGBOUNCER"
PGBOUNCER_MISSING = (
    "pgbouncer is not installed: `sudo apt-get install pgbouncer` (Debian/Ubuntu; `.ci/run` "
    f"installs it), or set {PGBOUNCER_ENV} to a pgbouncer executable"
)
_START_TIMEOUT = 20.0


def find_pgbouncer() -> str:
    configured = os.environ.get(PGBOUNCER_ENV, "").strip()
    if configured:
        return configured
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(PGBOUNCER_MISSING)
    return found


@contextlib.contextmanager
def pgbouncer(server_url: str, *, pool_mode: str, pool_size: int) -> Iterator[str]:
    """Yield ``server_url`` rewritten to go through a PgBouncer in ``pool_mode``.

    Every database of the server is served (a ``*`` entry), each with at most ``pool_size``
    server connections per user: clients beyond that share them (or wait for one).
    """
    target = urlsplit(server_url)
    if target.password:
        raise RuntimeError("the PgBouncer fixture supports the trust-auth test server only")
    user = target.username or "postgres"
    tmp = Path(tempfile.mkdtemp(prefix="workflows-pgbouncer-"))
    # As root, pgbouncer runs as the server user, which must read its files and write its log.
    tmp.chmod(0o755)
    port = free_port()
    (tmp / "userlist.txt").write_text(f'"{user}" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={target.hostname} port={target.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {tmp / 'userlist.txt'}",
                f"pool_mode = {pool_mode}",
                f"default_pool_size = {pool_size}",
                "min_pool_size = 0",
                # Each transaction on the next server connection, not on the last one used: one
                # client's statements land on different server sessions even when it is alone.
                "server_round_robin = 1",
                "reserve_pool_size = 0",
                "max_client_conn = 500",
                f"admin_users = {user}",
                # Long enough for a client that waits on a pool kept busy by the others.
                "query_wait_timeout = 60",
                f"logfile = {tmp / 'pgbouncer.log'}",
                f"pidfile = {tmp / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    as_user: dict[str, Any] = {}
    run_as = _server_user()
    if run_as is not None:
        for path in tmp.iterdir():
            os.chown(path, run_as.uid, run_as.gid)
        os.chown(tmp, run_as.uid, run_as.gid)
        as_user = {
            "user": run_as.uid,
            "group": run_as.gid,
            "extra_groups": list(run_as.groups),
            "cwd": "/",
        }
    process = subprocess.Popen(
        [find_pgbouncer(), str(tmp / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **as_user,
    )
    try:
        _wait_listening(process, port, tmp / "pgbouncer.log")
        yield urlunsplit(target._replace(netloc=f"{user}@127.0.0.1:{port}"))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    end = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < end:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"pgbouncer exited at start: {err.strip()} {text[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on port {port} in {_START_TIMEOUT:g} s")
