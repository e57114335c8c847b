"""Faults caused on a real server: the backend terminated mid-COPY and mid-merge. The table
is checked before and after; the step fails quickly and says why; the next write succeeds."""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg
import pytest

from benchmarks.run import PLAN, TABLE, frame
from resources import DatabaseError, PostgresResource, copy_upsert

from .conftest import Database

VICTIM = "copy-upsert-victim"


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
    [("copy", "COPY "), ("merge", "WITH written AS (INSERT")],
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
