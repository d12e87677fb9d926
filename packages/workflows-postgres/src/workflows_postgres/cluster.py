"""Start and stop a PostgreSQL server from the binaries installed on this machine.

PostgreSQL refuses to run as root, so when this process is root the data folder is given to the
``postgres`` system user and ``initdb``/``pg_ctl`` run as that user.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workflows.errors import ConfigurationError, WorkflowsError

log = logging.getLogger(__name__)

SERVER_USER = "postgres"
"""The system user that runs the server when this process is root."""

_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_START_TIMEOUT = 60


class ClusterError(WorkflowsError):
    """``initdb`` or ``pg_ctl`` failed; the message carries what they said."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when there is none."""
    return next(candidate_bindirs(), None)


def candidate_bindirs() -> Iterator[Path]:
    """Every folder with PostgreSQL server binaries, best first, each once.

    Order: ``pg_ctl`` on PATH (symlinks resolved: Debian links single programs into
    /usr/local/bin without the rest beside them), ``pg_config --bindir``, then
    ``/usr/lib/postgresql/*/bin`` from the highest version down.
    """
    seen: set[Path] = set()
    for candidate in _bindir_guesses():
        try:
            candidate = candidate.resolve()
        except OSError:
            continue
        if candidate in seen or not _has_server_programs(candidate):
            continue
        seen.add(candidate)
        yield candidate


def _bindir_guesses() -> Iterator[Path]:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        yield Path(pg_ctl).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
                stdin=subprocess.DEVNULL,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            yield Path(out)
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        yield Path(folder)


def _version_key(folder: str) -> tuple[int, ...]:
    name = Path(folder).parent.name
    return (
        tuple(int(part) for part in name.split(".")) if re.fullmatch(r"\d+(\.\d+)*", name) else ()
    )


def _has_server_programs(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _SERVER_PROGRAMS)


def server_version(bindir: Path) -> int:
    """The major version of the server in ``bindir`` (``postgres --version``)."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    match = re.search(r"\)\s*(\d+)", out)
    if not match:
        raise ClusterError(f"cannot read the version of {bindir / 'postgres'}: {out.strip()!r}")
    return int(match[1])


def data_version(data_dir: Path) -> int | None:
    """The major version that initialised ``data_dir`` (its ``PG_VERSION``), None if none did."""
    try:
        return int((data_dir / "PG_VERSION").read_text().strip())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    except PermissionError:
        raise ConfigurationError(
            f"cannot read {data_dir}: it belongs to another user; set WORKFLOWS_DATA_DIR to a "
            "folder of yours"
        ) from None


def socket_dsn(socket_dir: Path, port: int, dbname: str, user: str = SERVER_USER) -> str:
    """A URL for a Unix-socket server that both psycopg and asyncpg accept."""
    return f"postgresql://{user}@/{dbname}?host={quote(str(socket_dir), safe='/')}&port={port}"


def make_dirs(path: Path, mode: int = 0o755) -> list[Path]:
    """Create ``path`` and its missing parents with ``mode`` (whatever the umask); return those
    created, top first. Folders that already exist are left exactly as they are."""
    missing: list[Path] = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            continue  # another process made it at the same moment: not ours to chmod
        folder.chmod(mode)
        created.append(folder)
    return created


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str


def _server_user() -> _RunAs | None:
    """Who must run the server programs: None for this process itself (not root)."""
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    # Imported here: Windows has no pwd module, and this module must import there too.
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ConfigurationError(
            f"PostgreSQL cannot run as root and there is no {SERVER_USER!r} system user to run it: "
            f"create one (`useradd --system {SERVER_USER}`) or run as a normal user"
        ) from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _RunAs(entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, entry.pw_name)


def _can_traverse(st: os.stat_result, user: _RunAs) -> bool:
    # The kernel picks exactly one class: owner, else group, else other.
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in user.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_traversable(path: Path, user: _RunAs) -> None:
    """Raise unless ``user`` can reach ``path`` through every existing parent folder.

    Never fixes it: widening the mode of a folder we did not create (``/root``, a home folder)
    would expose everything under it.
    """
    resolved = path.resolve()
    for parent in reversed(resolved.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return
        if not _can_traverse(st, user):
            raise ConfigurationError(
                f"the {user.name!r} user that runs PostgreSQL cannot enter {parent} "
                f"(mode {stat.filemode(st.st_mode)}), a parent of {resolved}: set "
                "WORKFLOWS_DATA_DIR to a folder whose parents are world-readable "
                "(for example /var/lib/workflows/pgdata)"
            )


class LocalCluster:
    """One PostgreSQL data folder and the server running on it.

    ``host`` None means no TCP at all: the server listens only on a Unix socket in
    ``socket_dir`` (default: the data folder). ``port`` None means 5432 for a socket-only
    server (the socket file lives in our own folder, so nothing collides) and a free port
    when ``host`` is set. ``fast`` trades durability for speed (tests only).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        bindir: Path | None = None,
        port: int | None = None,
        host: str | None = None,
        socket_dir: Path | None = None,
        fast: bool = False,
        max_connections: int = 200,
        log_file: Path | None = None,
    ) -> None:
        found = bindir if bindir is not None else find_pg_bindir()
        if found is None:
            raise ConfigurationError(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH, via "
                "pg_config or in /usr/lib/postgresql/*/bin: install PostgreSQL "
                "(apt-get install postgresql)"
            )
        self.bindir = found
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.host = host
        self.port = port if port is not None else (free_port() if host else 5432)
        self.socket_dir = (
            Path(socket_dir).expanduser().absolute() if socket_dir is not None else self.data_dir
        )
        self.fast = fast
        self.max_connections = max_connections
        self.log_file = (
            Path(log_file).expanduser().absolute()
            if log_file is not None
            else self.data_dir / "postgresql.log"
        )
        self._user = _server_user()

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.data_dir)!r}, port={self.port}, host={self.host!r})"

    def initialized(self) -> bool:
        return data_version(self.data_dir) is not None

    def init(self) -> None:
        """``initdb`` the data folder (creating it); a no-op when it is already initialised."""
        if self.initialized():
            return
        self._check_socket_path()
        if self._user is not None:
            # Before creating anything, so a refused path leaves no litter behind.
            _check_traversable(self.data_dir, self._user)
        make_dirs(self.data_dir.parent)
        created = not self.data_dir.exists()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if created:
            self.data_dir.chmod(0o700)
        self._give_to_server_user(self.data_dir)
        args = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SERVER_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            # The C locale exists everywhere; the caller's LANG may name one that is not installed.
            "--locale=C",
        ]
        if self.fast:
            args.append("--no-sync")
        log.debug("initialising a PostgreSQL data folder in %s", self.data_dir)
        result = self._run(args)
        if result.returncode != 0:
            raise ClusterError(
                f"initdb failed for {self.data_dir}: {_tail(result.stderr or result.stdout)}"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections; a no-op if it runs."""
        if not self.initialized():
            raise ClusterError(
                f"{self.data_dir} is not a PostgreSQL data folder: call init() first"
            )
        if self.running():
            log.debug("PostgreSQL in %s is already running", self.data_dir)
            return
        self._check_version()
        if self._user is not None:
            _check_traversable(self.data_dir, self._user)
        self._prepare_socket_dir()
        self._prepare_log_file()
        settings: list[tuple[str, str]] = [
            ("listen_addresses", self.host or ""),
            ("port", str(self.port)),
            ("unix_socket_directories", str(self.socket_dir)),
            ("max_connections", str(self.max_connections)),
        ]
        if self.fast:
            settings += [
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ]
        # pg_ctl hands -o to /bin/sh, so every value is shell-quoted.
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings)
        args = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(_START_TIMEOUT),
            "-o",
            options,
            "start",
        ]
        log.debug("starting PostgreSQL in %s (port %d)", self.data_dir, self.port)
        result = self._run(args, timeout=_START_TIMEOUT + 30)
        if result.returncode != 0:
            raise ClusterError(
                f"PostgreSQL in {self.data_dir} did not start: {_tail(result.stderr)}"
                f"{self._log_tail()}"
            )

    def running(self) -> bool:
        if not self.initialized():
            return False
        result = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"])
        return result.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``); a no-op if it is not running."""
        if not self.running():
            return
        log.debug("stopping PostgreSQL in %s (%s)", self.data_dir, mode)
        args = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
        result = self._run(args, timeout=_START_TIMEOUT + 30)
        if result.returncode != 0:
            raise ClusterError(
                f"PostgreSQL in {self.data_dir} did not stop: {_tail(result.stderr)}"
            )

    def dsn(self, dbname: str = "postgres") -> str:
        if self.host:
            # Connect to the loopback address whatever the server listens on ('*', '0.0.0.0').
            return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{dbname}"
        return socket_dsn(self.socket_dir, self.port, dbname)

    def _check_version(self) -> None:
        have = data_version(self.data_dir)
        binaries = server_version(self.bindir)
        if have is not None and have != binaries:
            raise ClusterError(
                f"{self.data_dir} was initialised by PostgreSQL {have} but {self.bindir} holds "
                f"PostgreSQL {binaries}: use a matching server or another data folder"
            )

    def _check_socket_path(self) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path).encode()) > _MAX_SOCKET_PATH:
            raise ConfigurationError(
                f"the socket path {socket_path} is longer than {_MAX_SOCKET_PATH} bytes, the limit "
                "for Unix sockets: use a shorter data folder or socket_dir"
            )

    def _prepare_socket_dir(self) -> None:
        self._check_socket_path()
        if self.socket_dir == self.data_dir:
            return
        for folder in make_dirs(self.socket_dir):
            self._give_to_server_user(folder)
        if self._user is not None:
            _check_traversable(self.socket_dir, self._user)

    def _prepare_log_file(self) -> None:
        if self._user is None or self.log_file.parent == self.data_dir:
            return
        make_dirs(self.log_file.parent)
        _check_traversable(self.log_file, self._user)
        # pg_ctl opens the log as the server user, through the shell.
        self.log_file.touch(exist_ok=True)
        self._give_to_server_user(self.log_file)

    def _give_to_server_user(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.uid, self._user.gid)

    def _log_tail(self) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return f"\n--- {self.log_file} (last lines) ---\n{_tail(text, 20)}" if text else ""

    def _run(
        self, args: Sequence[str], *, timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        # PGDATA/PGPORT from the caller's shell must not redirect our commands.
        for key in ("PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"):
            env.pop(key, None)
        log.debug("running %s", shlex.join(args))
        as_user: dict[str, Any] = {}
        if self._user is not None:
            env.update(HOME=self._user.home, USER=self._user.name, LOGNAME=self._user.name)
            as_user = {
                # user= alone would keep root's group and supplementary groups.
                "user": self._user.uid,
                "group": self._user.gid,
                "extra_groups": list(self._user.groups),
                # The caller's cwd (often /root) may be closed to the server user.
                "cwd": "/",
            }
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env,
            # The server outlives us and must not get the terminal's Ctrl-C.
            start_new_session=True,
            check=False,
            **as_user,
        )


def _tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) if kept else "(no output)"
