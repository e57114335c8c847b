"""Guards against a large speed regression, as ratios measured in one run (never absolute
times), and progress reporting on long loads. The full benchmark is benchmarks/run.py."""

from __future__ import annotations

import asyncio
import io
import time

import asyncpg
import pandas as pd
import pytest
from dagster import DagsterInstance

import resources.write
from resources import PostgresResource, copy_upsert
from resources.frame import prepare_frame
from resources.handlers import to_arrow

from .conftest import Database
from .data import DDL, PLAN, TABLE, frame
from .helpers import frame_asset, run_assets

ROWS = 100_000


async def _limit_seconds(url: str, data: pd.DataFrame) -> float:
    """Stream pre-encoded binary COPY data into an empty table with the same primary key:
    what the server needs with no client work at all."""
    payload = b"".join(
        chunk for _, chunk in prepare_frame(to_arrow(data), PLAN).binary_copy_chunks()
    )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}; {DDL}")
        start = time.perf_counter()
        await conn.copy_to_table(TABLE, source=io.BytesIO(payload), format="binary")
        elapsed = time.perf_counter() - start
        await conn.execute(f"DROP TABLE {TABLE}; {DDL}")
        return elapsed
    finally:
        await conn.close()


def _upsert_seconds(
    postgres: PostgresResource, db: Database, data: pd.DataFrame, *, fill: pd.DataFrame | None
) -> float:
    """The faster of two upserts of ``data``, each into a fresh table holding ``fill``: on a
    shared machine one run can stall (the first also opens the pool's connection)."""
    runs = []
    for _ in range(2):
        db.execute(f"DROP TABLE IF EXISTS {TABLE}; {DDL}")
        if fill is not None:
            _timed_upsert(postgres, fill)
        runs.append(_timed_upsert(postgres, data))
    return min(runs)


def _timed_upsert(postgres: PostgresResource, data: pd.DataFrame) -> float:
    start = time.perf_counter()
    postgres.run(lambda conn: copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN))
    return time.perf_counter() - start


def test_upserts_stay_within_a_few_times_the_copy_limit(
    postgres: PostgresResource, database_url: str, db: Database
) -> None:
    data = frame(ROWS)
    changed = frame(ROWS, seed=2, keys=data["id"].to_numpy())
    limit = min(asyncio.run(_limit_seconds(database_url, data)) for _ in range(2))
    fresh = _upsert_seconds(postgres, db, data, fill=None)
    updates = _upsert_seconds(postgres, db, changed, fill=data)
    # The table holds `changed` now: sending it again, twice, must rewrite nothing.
    versions = db.fetch(f"SELECT sum(xmin::text::bigint) AS v FROM {TABLE}")
    identical = min(_timed_upsert(postgres, changed) for _ in range(2))
    # Generous bounds: a Python loop over rows (the seed's method) is over 5x the limit.
    assert fresh / limit < 3, (fresh, limit)
    assert updates / limit < 8, (updates, limit)
    assert identical / limit < 3, (identical, limit)
    assert db.fetch(f"SELECT sum(xmin::text::bigint) AS v FROM {TABLE}") == versions


def test_long_loads_report_progress(
    postgres: PostgresResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources.write, "PROGRESS_EVERY_SECONDS", 0.0)
    data = frame(200_000)
    meta = {"conflict_target": "id"}
    with DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # the first write copies into the empty table, the second merges
            result = run_assets(
                [frame_asset(data, key=("big",), metadata=meta)], postgres, instance=instance
            )
            assert result.success
        messages = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.dagster_event is None
        ]
    copied = [m for m in messages if m.startswith("copied ")]
    assert copied and copied[-1] == "copied 200,000 of 200,000 rows for public.big"
    assert "merging 200,000 staged rows into public.big" in messages
    assert any(m.startswith("merged into public.big in ") for m in messages)
