"""A fresh write streamed into the bench table: peak resident memory above the process's own
before the write, as the kernel counts it, and the write's time.

    python -m benchmarks.stream KIND INTO ROWS CHUNK REPEAT PARQUET
    (the server: BENCH_DATABASE_URL)

INTO is ``new`` (no table: the write creates it, as an asset's first materialization does) or
``empty`` (the empty keyed table, created beforehand).

KIND is ``generator`` (a generator of pandas chunks of CHUNK rows, each made as the write asks
for it: benchmarks.run.chunked_frames) or ``lazyframe`` (``pl.scan_parquet(PARQUET)``, a
file of the same rows that benchmarks.run.streamed writes first). Runs the write REPEAT
times, each into a table created afresh; prints one JSON line with the highest peak and the
fastest time. Run by benchmarks.run in a subprocess of its own, so that no other case's
memory is in the process.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.memory import _status
from benchmarks.run import DDL, PLAN, TABLE, chunked_frames
from resources import PostgresResource, copy_upsert


def _timed_chunks(rows: int, chunk: int, spent: list[float]) -> Iterator[pd.DataFrame]:
    """chunked_frames(rows, chunk), adding the seconds spent making the chunks to spent[0]."""
    chunks = chunked_frames(rows, chunk)
    while True:
        start = time.perf_counter()
        part = next(chunks, None)
        spent[0] += time.perf_counter() - start
        if part is None:
            return
        yield part


def main(kind: str, into: str, rows: int, chunk: int, repeat: int, parquet: Path) -> None:
    if kind not in ("generator", "lazyframe"):
        raise SystemExit(f"KIND must be generator or lazyframe, not {kind!r}")
    if into not in ("new", "empty"):
        raise SystemExit(f"INTO must be new or empty, not {into!r}")
    create = f"; {DDL}" if into == "empty" else ""
    import polars as pl  # before the baseline, as the package imports it for a LazyFrame

    postgres = PostgresResource(url=os.environ["BENCH_DATABASE_URL"])
    spent = [0.0]

    def source(n: int) -> object:
        if kind == "generator":
            return _timed_chunks(n, min(chunk, n), spent)
        lazy = pl.scan_parquet(parquet)
        return lazy if n == rows else lazy.head(n)

    def write(n: int) -> Any:
        data = source(n)
        return postgres.run(
            lambda conn: copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN)
        )

    async def reset(conn):  # type: ignore[no-untyped-def]
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(f"DROP TABLE IF EXISTS {TABLE}{create}; CHECKPOINT")

    # One chunk's size in memory, then imports, the pool and the event loop thread, before
    # measuring.
    if kind == "generator":
        chunk_bytes = int(next(chunked_frames(rows, chunk)).memory_usage(deep=True).sum())
    else:
        chunk_bytes = int(pl.scan_parquet(parquet).head(chunk).collect().estimated_size())
    postgres.run(reset)
    write(2_000)
    peaks: list[int] = []
    times: list[float] = []
    generated: list[float] = []
    for _ in range(repeat):
        postgres.run(reset)
        spent[0] = 0.0
        gc.collect()
        baseline = _status("VmRSS")
        # Reset the kernel's high-water mark to the current RSS (Linux: clear_refs, value 5).
        Path("/proc/self/clear_refs").write_text("5")
        start = time.perf_counter()
        result = write(rows)
        times.append(time.perf_counter() - start)
        peaks.append(_status("VmHWM") - baseline)
        generated.append(spent[0])
        if result.rows_inserted != rows:
            raise RuntimeError(f"{result.rows_inserted} rows inserted, not {rows}")
    postgres.run(reset)
    postgres.dispose()
    fastest = times.index(min(times))
    print(
        json.dumps(
            {
                "kind": kind,
                "into": into,
                "rows": rows,
                "chunk_rows": chunk,
                "chunk_mb": chunk_bytes / 2**20,
                "peak_above_baseline_mb": max(peaks) / 2**20,
                "peak_above_chunk_mb": (max(peaks) - chunk_bytes) / 2**20,
                "seconds": times[fastest],
                "generate_seconds": generated[fastest] if kind == "generator" else None,
                "runs": times,
                "peaks_mb": [p / 2**20 for p in peaks],
            }
        )
    )


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
        int(sys.argv[5]) if len(sys.argv) > 5 else 1,
        Path(sys.argv[6]) if len(sys.argv) > 6 else Path("/nonexistent.parquet"),
    )
