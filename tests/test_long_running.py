"""A long-lived process doing a thousand successive writes: no growth in connections,
staging tables, memory or system-catalog dead rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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
