"""Writers at once: eight processes upsert overlapping, randomly ordered key sets into one
table for several rounds; and a write meets a key another transaction is inserting."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pandas as pd
import pytest

import resources.write
from resources import PostgresResource, WritePlan, WriteResult, copy_upsert

from .conftest import Database

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("merge_path")]

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 8
ROUNDS = 5


def test_eight_writers_lose_and_duplicate_nothing(
    database_url: str, db: Database, merge_path: str
) -> None:
    db.execute("CREATE TABLE shared (id bigint PRIMARY KEY, v text NOT NULL)")
    writer = ["-m", "tests.concurrent_writer", database_url]
    processes = [
        subprocess.Popen(
            [sys.executable, *writer, str(w), str(ROUNDS), merge_path],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    written: dict[int, set[str]] = {}
    for w, process in enumerate(processes):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        for round_, keys in enumerate(json.loads(out.strip().splitlines()[-1])):
            for key in keys:
                written.setdefault(key, set()).add(f"w{w}-r{round_}-k{key}")

    stored = {row["id"]: row["v"] for row in db.fetch("SELECT id, v FROM shared")}
    assert sorted(stored) == sorted(written)  # every key written is there, and only those
    assert db.fetch("SELECT count(*) = count(DISTINCT id) AS unique FROM shared") == [
        {"unique": True}
    ]
    for key, value in stored.items():
        assert value in written[key]


@pytest.mark.parametrize(
    ("on_conflict", "stored_c", "counts"),
    [("update", 3.0, (1, 1, 1)), ("nothing", 100.0, (1, 0, 2))],
)
def test_a_key_another_writer_inserts_meanwhile_is_waited_for_then_merged(
    database_url: str,
    db: Database,
    on_conflict: str,
    stored_c: float,
    counts: tuple[int, int, int],
) -> None:
    """Another transaction has inserted key 'c' but not committed when the write starts: the
    write waits for it, then updates it or, under on_conflict 'nothing', keeps it. (A MERGE
    fails on such a key; the write falls back to INSERT ... ON CONFLICT.)"""
    db.execute(
        "CREATE TABLE kv (k text PRIMARY KEY, v float8); INSERT INTO kv VALUES ('a', 0), ('b', 1)"
    )
    inserted, release = threading.Event(), threading.Event()

    async def other_writer() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO kv VALUES ('c', 100)")
                inserted.set()
                while not release.is_set():
                    await asyncio.sleep(0.02)
        finally:
            await conn.close()

    other = threading.Thread(target=lambda: asyncio.run(other_writer()))
    other.start()
    assert inserted.wait(30)
    writer = PostgresResource(url=database_url, application_name="copy-upsert-waiter")
    plan = WritePlan.from_options(conflict_target="k", on_conflict=on_conflict)
    frame = pd.DataFrame({"k": ["b", "c", "d"], "v": [1.0, 3.0, 4.0]})
    results: list[WriteResult] = []
    write = threading.Thread(
        target=lambda: results.append(
            writer.run(
                lambda conn: copy_upsert(conn, frame, schema="public", table="kv", plan=plan)
            )
        )
    )
    try:
        write.start()
        waiting = (
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE application_name = $1 AND wait_event_type = 'Lock'"
        )
        deadline = time.monotonic() + 30
        while db.fetch(waiting, "copy-upsert-waiter") != [{"n": 1}]:
            assert time.monotonic() < deadline, "the write never waited for the other writer's key"
            time.sleep(0.05)
    finally:
        release.set()
        other.join()
        write.join()
        writer.dispose()
    result = results[0]
    assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == counts
    assert db.rows("kv", "k") == [
        {"k": "a", "v": 0.0},
        {"k": "b", "v": 1.0},
        {"k": "c", "v": stored_c},
        {"k": "d", "v": 4.0},
    ]


def test_a_key_lookup_waits_only_for_the_merge_when_a_write_adds_a_column(
    database_url: str, db: Database, merge_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ALTER TABLE ... ADD COLUMN takes an ACCESS EXCLUSIVE lock until the commit: it runs
    after the stage is copied and checked, just before the merge, so another session's
    primary-key lookup waits for the merge alone, never for the COPY."""
    monkeypatch.setattr(resources.write, "PROGRESS_EVERY_SECONDS", 0.0)
    rows = 400_000
    db.execute(
        "CREATE TABLE wide (id bigint PRIMARY KEY, v float8);"
        f"INSERT INTO wide SELECT g, g FROM generate_series(1, {rows}) AS g"
    )
    frame = pd.DataFrame({"id": range(rows, 0, -1), "v": [0.5] * rows, "extra": ["x"] * rows})
    events: list[tuple[float, str]] = []
    writer = PostgresResource(url=database_url)
    done = threading.Event()
    lookups: list[tuple[float, float]] = []

    async def look_up() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            while not done.is_set():
                start = time.monotonic()
                await conn.fetchval("SELECT v FROM wide WHERE id = 1")
                lookups.append((start, time.monotonic()))
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    reader = threading.Thread(target=lambda: asyncio.run(look_up()))
    reader.start()
    try:
        result = writer.run(
            lambda conn: copy_upsert(
                conn,
                frame,
                schema="public",
                table="wide",
                plan=WritePlan.from_options(conflict_target="id"),
                progress=lambda m: events.append((time.monotonic(), m)),
            )
        )
    finally:
        done.set()
        reader.join()
        writer.dispose()
    assert result.rows_updated == rows
    copied = max(t for t, m in events if m.startswith("copied"))
    added = next(t for t, m in events if m.startswith("added columns"))
    merged = next(t for t, m in events if m.startswith("merged into"))
    # The column is added once every row is staged; from then on the table is locked.
    assert copied < added
    assert any(end < added for _, end in lookups), "no lookup ran while the frame was staged"
    longest = max(end - start for start, end in lookups)
    assert longest <= (merged - added) + 0.5, (longest, merged - added)
    assert db.fetch("SELECT extra, v FROM wide WHERE id = 7") == [{"extra": "x", "v": 0.5}]
