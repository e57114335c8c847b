"""Peak resident memory of a fresh upsert above the frame it writes, as the kernel counts it,
and the upsert's time.

    python -m benchmarks.memory ROWS [REPEAT]      (the server: BENCH_DATABASE_URL)

Runs the upsert REPEAT times into an empty table; prints one JSON line with the highest peak
and the fastest time. Run by benchmarks.run in a subprocess of its own.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
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


def main(rows: int, repeat: int) -> None:
    postgres = PostgresResource(url=os.environ["BENCH_DATABASE_URL"])

    def upsert(data: pd.DataFrame) -> None:
        postgres.run(lambda conn: copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN))

    async def reset(conn):  # type: ignore[no-untyped-def]
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(f"DROP TABLE IF EXISTS {TABLE}; {DDL}; CHECKPOINT")

    upsert(frame(1000))  # imports, the pool and the event loop thread, before measuring
    data = frame(rows)
    peaks: list[int] = []
    times: list[float] = []
    for _ in range(repeat):
        postgres.run(reset)
        gc.collect()
        baseline = _status("VmRSS")
        # Reset the kernel's high-water mark to the current RSS (Linux: clear_refs, value 5).
        Path("/proc/self/clear_refs").write_text("5")
        start = time.perf_counter()
        upsert(data)
        times.append(time.perf_counter() - start)
        peaks.append(_status("VmHWM") - baseline)
    postgres.dispose()
    print(
        json.dumps(
            {
                "rows": rows,
                "frame_mb": data.memory_usage(deep=True).sum() / 2**20,
                "peak_above_frame_mb": max(peaks) / 2**20,
                "seconds": min(times),
                "runs": times,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
