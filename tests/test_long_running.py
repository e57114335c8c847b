"""A long-lived process doing a thousand successive writes: no growth in connections,
staging tables, memory or system-catalog dead rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import text

import resources.plan
from resources import PostgresResource, WritePlan, copy_upsert

from .conftest import Database

pytestmark = pytest.mark.slow

WRITES = 1000
PLAN = WritePlan.from_options(conflict_target="id")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _catalog_dead_rows(db: Database) -> int:
    rows = db.fetch(
        "SELECT sum(n_dead_tup)::bigint AS dead FROM pg_stat_sys_tables "
        "WHERE relname IN ('pg_class', 'pg_attribute', 'pg_type', 'pg_depend')"
    )
    return int(rows[0]["dead"] or 0)


def test_a_thousand_writes_leave_nothing_behind(postgres: PostgresResource, db: Database) -> None:
    def write(i: int) -> None:
        frame = pd.DataFrame(
            {"id": range(i % 50, i % 50 + 20), "v": [float(i)] * 20, "s": ["x"] * 20}
        )
        postgres.run(lambda conn: copy_upsert(conn, frame, schema="public", table="t", plan=PLAN))

    def sessions() -> int:
        rows = db.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
            postgres.application_name,
        )
        return int(rows[0]["n"])

    for i in range(100):  # warm up: pool, event loop thread, imports
        write(i)
    db.execute("SELECT pg_stat_clear_snapshot()")
    rss, dead, connections = _rss_mb(), _catalog_dead_rows(db), sessions()
    for i in range(100, WRITES):
        write(i)
    db.execute("SELECT pg_stat_force_next_flush()")

    assert sessions() <= connections
    assert _rss_mb() - rss < 50
    # Creating a staging table per write would leave ~15 dead catalog rows each time.
    assert _catalog_dead_rows(db) - dead < 100
    assert db.fetch("SELECT count(*) AS n FROM t") == [{"n": 69}]


def _write_seconds(postgres: PostgresResource) -> float:
    """How long one 10-row upsert into ``public.target`` takes."""
    frame = pd.DataFrame({"id": range(10), "v": [1.5] * 10})
    start = time.perf_counter()
    postgres.run(lambda conn: copy_upsert(conn, frame, schema="public", table="target", plan=PLAN))
    return time.perf_counter() - start


def test_a_session_that_wrote_400_tables_writes_as_fast_as_a_fresh_one(
    database_url: str, db: Database
) -> None:
    """PostgreSQL empties every ON COMMIT DELETE ROWS table of a session at each commit: a
    session keeping a staging table for each of 400 frame shapes would pay for all of them
    at every write. The session keeps at most plan.MAX_STAGES. Both sessions are timed in
    turns, best of 9 each, so that the machine's noise hits both alike."""
    used = PostgresResource(url=database_url, pool_size=1, max_overflow=0)
    fresh = PostgresResource(url=database_url, pool_size=1, max_overflow=0)
    try:
        for i in range(400):  # 400 tables, each of its own shape
            frame = pd.DataFrame({"id": [2, 1], f"v{i}": [1.0, 2.0]})  # staged: out of order
            used.run(
                lambda conn, f=frame, n=i: copy_upsert(
                    conn, f, schema="public", table=f"t{n}", plan=PLAN
                )
            )
        stages = used.run(lambda conn: _count_stages(conn))
        _write_seconds(fresh)  # its connection and its one staging table
        _write_seconds(used)
        timings = [(_write_seconds(fresh), _write_seconds(used)) for _ in range(9)]
    finally:
        used.dispose()
        fresh.dispose()
    assert stages <= resources.plan.MAX_STAGES
    best_fresh, best_used = (min(column) for column in zip(*timings, strict=True))
    assert best_used <= 1.3 * best_fresh, timings


async def _count_stages(conn: Any) -> int:
    result = await conn.execute(
        text(
            "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() "
            "AND starts_with(relname, 'copy_upsert_stage_')"
        )
    )
    return int(result.scalar_one())
