"""Peak resident memory of one upsert above the frame it writes, as the kernel counts it.

    python -m benchmarks.memory ROWS      (the server: BENCH_DATABASE_URL)

Prints one JSON line. Run by benchmarks.run in a subprocess of its own.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import pandas as pd

from benchmarks.run import DDL, PLAN, TABLE, frame
from resources import PostgresResource, copy_upsert


def _status(field: str) -> int:
    """A field of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(rows: int) -> None:
    postgres = PostgresResource(url=os.environ["BENCH_DATABASE_URL"])

    def upsert(data: pd.DataFrame) -> None:
        postgres.run(lambda conn: copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN))

    async def reset(conn):  # type: ignore[no-untyped-def]
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(f"DROP TABLE IF EXISTS {TABLE}; {DDL}")

    upsert(frame(1000))  # imports, the pool and the event loop thread, before measuring
    postgres.run(reset)
    data = frame(rows)
    gc.collect()
    baseline = _status("VmRSS")
    # Reset the kernel's high-water mark to the current RSS (Linux: clear_refs, value 5).
    Path("/proc/self/clear_refs").write_text("5")
    upsert(data)
    peak = _status("VmHWM")
    postgres.dispose()
    print(
        json.dumps(
            {
                "rows": rows,
                "frame_mb": data.memory_usage(deep=True).sum() / 2**20,
                "peak_above_frame_mb": (peak - baseline) / 2**20,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
