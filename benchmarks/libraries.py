"""Issue 14's cases alone, from ``benchmarks.run``: the fresh write of the benchmark's frame as
pandas, polars and pyarrow, the table read into polars and pyarrow by this package,
connectorx and ADBC, and the streamed writes of 1M and 10M rows (into a table the write
creates and into the empty keyed table). About 10 minutes on a quiet machine.

    python -m benchmarks.libraries [--repeat 5] [--stream-repeat 2]

Prints each case and each ratio with its target; the output is kept in
``benchmarks/results/output-libraries.txt`` and ``libraries.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.partitions import printed_to
from benchmarks.run import (
    RESULTS,
    Bench,
    frame,
    library_ratios,
    library_reads,
    library_writes,
    named_targets,
    print_ratios,
    server,
    server_settings,
    streamed,
    streamed_ratios,
)

ROWS = 1_000_000
STREAM_ROWS = 10_000_000
STREAM_CHUNK = 100_000


async def main(repeat: int, stream_repeat: int) -> None:
    data = frame(ROWS)
    with server() as url, tempfile.TemporaryDirectory(prefix="copy-upsert-bench-files-") as tmp:
        os.environ["BENCH_DATABASE_URL"] = url
        Path(tmp).chmod(0o755)
        bench = Bench(url, repeat)
        version = (await bench.sql("SHOW server_version"))[0]["server_version"]
        settings = await server_settings(bench)
        print(f"PostgreSQL {version}, {ROWS:,} rows x 7 columns, best of {repeat} runs")
        print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        writes = await library_writes(bench, data)
        reads = await library_reads(bench, data)
        await bench.reset()
        streams = streamed((ROWS, STREAM_ROWS), STREAM_CHUNK, stream_repeat, Path(tmp))
    by = {r.case: r for r in bench.results}
    ratios = library_ratios(by) | streamed_ratios(streams)
    targets = named_targets(ROWS, ROWS, STREAM_ROWS)
    print_ratios(ratios, targets)
    print("same rows as pandas:", json.dumps(writes["same_rows_as_pandas"]))
    payload = {
        "postgresql": version,
        "server_settings": settings,
        "results": [asdict(r) for r in bench.results],
        "ratios": ratios,
        "targets": {name: targets[name] for name in ratios if name in targets},
        "writes": writes,
        "reads": reads,
        "streamed": streams,
    }
    (RESULTS / "libraries.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of every case")
    parser.add_argument("--stream-repeat", type=int, default=2, help="runs of every streamed write")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with printed_to(RESULTS / "output-libraries.txt"):
        asyncio.run(main(args.repeat, args.stream_repeat))
