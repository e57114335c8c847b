"""Outputs that arrive in pieces: a generator of frames (pandas, polars, Arrow, mixed), a
pyarrow RecordBatchReader, an object with ``__arrow_c_stream__``, a polars LazyFrame. Each
gets the guarantees of a DataFrame: one transaction, the duplicate-key policy, the key and
type checks (on a chunk far into the stream, the table unchanged), counts."""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetIn, AssetKey, AssetsDefinition, Output, asset

from resources import PostgresResource, WritePlan, copy_upsert, read_table
from resources.errors import ConnectionLostError, FrameError
from resources.handlers import to_arrow

from .conftest import Database
from .helpers import counts, failure_message, frame_asset, run_assets, written

ROOT = Path(__file__).resolve().parents[1]
TABLE = "shop.products"
KEYED = {"conflict_target": "sku"}
CHUNK = 40_000  # rows per chunk: several of the encoder's 65,536-row pieces in all


def pandas_chunks(start: int, stop: int, price: float = 1.0) -> Iterator[pd.DataFrame]:
    for first in range(start, stop, CHUNK):
        skus = np.arange(first, min(first + CHUNK, stop))
        yield pd.DataFrame({"sku": skus, "price": np.full(len(skus), price)})


class CapsuleStream:
    """A producer of Arrow's C stream interface that is no pyarrow object (as a DuckDB
    relation or a nanoarrow stream is)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self._table.__arrow_c_stream__(requested_schema)


def stream_asset(output: Callable[[], Any], metadata: dict[str, Any]) -> AssetsDefinition:
    """An asset returning ``output()``: an ``Output`` around a generator, as a user writes it."""

    @asset(key=AssetKey(["shop", "products"]), metadata=metadata)
    def products() -> Output[Any]:
        made = output()
        return made if isinstance(made, Output) else Output(made)

    return products


def _arrow(start: int, stop: int, price: float = 1.0) -> pa.Table:
    skus = np.arange(start, stop)
    return pa.table({"sku": skus, "price": np.full(len(skus), price)})


# Each makes a fresh output of rows [start, stop) at ``price``.
# A generator goes in an Output: Dagster reads a bare generator an asset returns as the
# asset's events. Other iterators (map, itertools) need no wrapping.
SOURCES: dict[str, Callable[[int, int, float], Any]] = {
    "pandas-generator": lambda a, b, p: Output(pandas_chunks(a, b, p)),
    "polars-map": lambda a, b, p: map(pl.from_pandas, pandas_chunks(a, b, p)),
    "arrow-generator": lambda a, b, p: Output(
        pa.Table.from_pandas(c, preserve_index=False) for c in pandas_chunks(a, b, p)
    ),
    "mixed-generator": lambda a, b, p: Output(
        c if i % 2 else pl.from_pandas(c) for i, c in enumerate(pandas_chunks(a, b, p))
    ),
    "record-batch-reader": lambda a, b, p: pa.RecordBatchReader.from_batches(
        _arrow(a, b, p).schema, _arrow(a, b, p).to_batches(max_chunksize=CHUNK)
    ),
    "arrow-c-stream": lambda a, b, p: CapsuleStream(_arrow(a, b, p)),
    "polars-lazy": lambda a, b, p: pl.LazyFrame(_arrow(a, b, p)),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_stream_upserts_like_a_frame(
    source: str, postgres: PostgresResource, db: Database
) -> None:
    make = SOURCES[source]
    state = {"range": (0, 150_000), "price": 1.0}

    def output() -> Any:
        start, stop = state["range"]
        return make(start, stop, state["price"])

    products = stream_asset(output, metadata=KEYED)
    meta = written(run_assets([products], postgres))
    assert counts(meta) == (150_000, 150_000, 0, 0, 0)
    # Again with half the rows changed and 50,000 new: one upsert of a stream.
    state.update(range=(75_000, 200_000), price=2.0)
    meta = written(run_assets([products], postgres))
    assert counts(meta) == (125_000, 50_000, 75_000, 0, 0)
    rows = db.fetch(
        f"SELECT count(*) AS n, count(DISTINCT sku) AS keys, sum(price) AS total FROM {TABLE}"
    )[0]
    assert (rows["n"], rows["keys"], rows["total"]) == (200_000, 200_000, 75_000 + 2.0 * 125_000)


def test_duplicate_keys_across_chunks_follow_the_policy(
    postgres: PostgresResource, db: Database
) -> None:
    def output() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame({"sku": [1, 2], "price": [1.0, 1.0]})
        yield pd.DataFrame({"sku": [2, 3], "price": [2.0, 2.0]})

    keep_last = stream_asset(output, metadata={**KEYED, "duplicates": "keep_last"})
    assert run_assets([keep_last], postgres).success
    assert [(r["sku"], r["price"]) for r in db.rows(TABLE, "sku")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 2.0),
    ]
    before = db.snapshot(TABLE)
    refused = stream_asset(output, metadata=KEYED)
    message = failure_message(run_assets([refused], postgres, raise_on_error=False))
    assert "sku" in message and "Asset shop/products" in message
    assert db.snapshot(TABLE) == before


def _key_constraint(db: Database) -> list[dict[str, Any]]:
    return db.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = 'shop.products'::regclass AND contype = 'p'"
    )


@pytest.mark.parametrize("source", ["pandas-generator", "polars-lazy"])
def test_a_first_write_gets_its_primary_key_after_the_rows(
    source: str, postgres: PostgresResource, db: Database
) -> None:
    """The table a stream creates takes the rows first and its key index after them: the
    key is the table's primary key all the same, and the next write upserts through it."""
    state = {"range": (0, 150_000), "price": 1.0}
    products = stream_asset(lambda: SOURCES[source](*state["range"], state["price"]), KEYED)
    assert counts(written(run_assets([products], postgres))) == (150_000, 150_000, 0, 0, 0)
    assert _key_constraint(db) == [{"conname": "products_pkey", "definition": "PRIMARY KEY (sku)"}]
    state.update(range=(100_000, 160_000), price=2.0)
    assert counts(written(run_assets([products], postgres))) == (60_000, 10_000, 50_000, 0, 0)
    rows = db.fetch(f"SELECT count(*) AS n, sum(price) AS total FROM {TABLE}")[0]
    assert (rows["n"], rows["total"]) == (160_000, 100_000 + 2.0 * 60_000)


def _repeating_stream() -> Output[Any]:
    return Output(
        iter([*pandas_chunks(0, 100_000), pd.DataFrame({"sku": [99_999], "price": [5.0]})])
    )


@pytest.mark.parametrize(
    "output",
    [_repeating_stream, lambda: pd.DataFrame({"sku": ["a", "b", "a"], "price": [1.0, 2.0, 3.0]})],
    ids=["stream", "text-key"],
)
def test_a_repeated_key_in_a_first_write_is_refused_and_leaves_no_table(
    output: Callable[[], Any], postgres: PostgresResource, db: Database
) -> None:
    """A key in two rows, found only when the new table's key index is built, is refused by
    name, and the table is not created."""
    message = failure_message(
        run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    )
    assert "appear more than once" in message and "'sku'" in message, message
    assert "Asset shop/products" in message and "keep_last" in message
    assert db.fetch("SELECT to_regclass('shop.products') IS NULL AS gone")[0]["gone"]


@pytest.mark.parametrize(
    ("bad_chunk", "expected"),
    [
        (
            pd.DataFrame({"sku": [10**6], "price": ["not a number"]}),
            ["column 'price' is large_string in a chunk from row 120000", "double in the first"],
        ),
        (
            pd.DataFrame({"sku": [10**6], "cost": [1.0]}),
            ["a chunk from row 120000 has columns ['sku', 'cost']", "['sku', 'price']"],
        ),
        (
            pd.DataFrame({"sku": pd.array([10**6, None], dtype="Int64"), "price": [1.0, 2.0]}),
            ["conflict_target column 'sku'", "1 NULL value", "row 120001"],
        ),
        (
            pd.DataFrame({"sku": [10**6, None], "price": [1.0, 2.0]}),
            [
                "column 'sku' is double in a chunk from row 120000, but int64 in the first",
                "give the column the nullable dtype 'Int64' in every chunk",
            ],
        ),
    ],
    ids=["other-type", "other-columns", "null-key", "null-key-as-float"],
)
def test_a_bad_chunk_far_into_the_stream_changes_nothing(
    bad_chunk: pd.DataFrame, expected: list[str], postgres: PostgresResource, db: Database
) -> None:
    seed = stream_asset(lambda: pandas_chunks(0, 1000), metadata=KEYED)
    assert run_assets([seed], postgres).success
    before = db.snapshot(TABLE)

    def output() -> Iterator[pd.DataFrame]:
        yield from pandas_chunks(0, 120_000, price=5.0)  # every row already stored changes
        yield bad_chunk

    result = run_assets([stream_asset(output, metadata=KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "Asset shop/products" in message
    for part in expected:
        assert part in message
    assert db.snapshot(TABLE) == before


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            lambda lf: lf.with_columns(
                sku=pl.when(pl.col("sku") == 130_000).then(None).otherwise(pl.col("sku"))
            ),
            "conflict_target column 'sku'",
        ),
        (
            lambda lf: lf.with_columns(
                price=pl.when(pl.col("sku") == 130_000)
                .then(pl.lit("x"))
                .otherwise(pl.col("price").cast(pl.String))
                .cast(pl.Float64)
            ),
            "the LazyFrame's query failed (InvalidOperationError: conversion from `str` to `f64`",
        ),
    ],
    ids=["null-key", "query-fails"],
)
def test_a_lazy_frame_failing_far_into_its_rows_changes_nothing(
    query: Callable[[pl.LazyFrame], pl.LazyFrame],
    expected: str,
    postgres: PostgresResource,
    db: Database,
) -> None:
    """A row the write refuses, or an error in the LazyFrame's query itself, 130,000 rows
    in, fails the write, naming what failed, with the table as it was."""
    assert run_assets([stream_asset(lambda: pandas_chunks(0, 1000), KEYED)], postgres).success
    before = db.snapshot(TABLE)
    lazy = query(pl.LazyFrame(_arrow(0, 200_000, price=5.0)))
    result = run_assets([stream_asset(lambda: lazy, KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "Asset shop/products" in message and expected in message, message
    assert db.snapshot(TABLE) == before


def test_a_failed_write_closes_its_source(postgres: PostgresResource, db: Database) -> None:
    """However a write ends, its pass over the frame closes the source: a generator's own
    clean-up runs at once, not whenever the failure's traceback is let go."""
    closed = threading.Event()

    def output() -> Iterator[pd.DataFrame]:
        try:
            yield from pandas_chunks(0, 120_000)
            yield pd.DataFrame({"sku": [10**6], "cost": [1.0]})
            yield from pandas_chunks(120_000, 240_000)
        finally:
            closed.set()

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    assert "a chunk from row 120000 has columns" in failure_message(result)
    assert closed.is_set()
    assert db.fetch("SELECT to_regclass('shop.products') IS NULL AS gone")[0]["gone"]


def test_an_empty_generator_is_refused(postgres: PostgresResource) -> None:
    result = run_assets(
        [stream_asset(lambda: iter([]), metadata=KEYED)], postgres, raise_on_error=False
    )
    assert "yielded no chunk" in failure_message(result)


def test_a_replace_from_a_lazy_frame_replaces_every_row(
    postgres: PostgresResource, db: Database
) -> None:
    seed = stream_asset(lambda: pandas_chunks(0, 5000), metadata=KEYED)
    assert run_assets([seed], postgres).success
    lazy = pl.LazyFrame({"sku": [7, 8], "price": [1.5, 2.5]}).filter(pl.col("sku") > 7)
    replace = frame_asset(lazy, metadata={**KEYED, "write_mode": "replace"})
    meta = written(run_assets([replace], postgres))
    assert counts(meta)[4] == 5000 - 1  # sku 8 is new; every stored row but none kept
    assert [(r["sku"], r["price"]) for r in db.rows(TABLE, "sku")] == [(8, 2.5)]


def test_a_polars_frame_without_the_extra_names_it() -> None:
    """polars older than the extra's minimum (collect_batches removed, as before 1.34)."""
    script = (
        "import polars as pl\n"
        "del pl.LazyFrame.collect_batches\n"
        "from resources.handlers import to_arrow\n"
        "from resources.errors import ConfigurationError\n"
        "try:\n"
        "    to_arrow(pl.DataFrame({'a': [1]}))\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "polars 2" in out or "polars 1" in out
    assert "pip install 'dagster-copy-upsert[polars]'" in out


def _copy_running(db: Database) -> bool:
    rows = db.fetch(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE state = 'active' AND query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()"
    )
    return bool(rows[0]["n"])


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _big_table(db: Database, rows: int) -> None:
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku bigint PRIMARY KEY, price float8, "
        "note text); INSERT INTO shop.products SELECT g, g / 2.0, repeat(md5(g::text), 3) "
        f"FROM generate_series(1, {rows}) g"
    )


def test_a_reader_input_streams_the_table_batch_by_batch(
    postgres: PostgresResource, db: Database
) -> None:
    """The COPY is still running when the first batch arrives: the table is never whole in
    memory (each piece waits for the reader)."""
    _big_table(db, 400_000)  # about 45 MB of COPY data: a dozen pieces
    seen: dict[str, Any] = {}
    upstream = frame_asset(pd.DataFrame(), key=("shop", "products"))

    @asset(ins={"rows": AssetIn(key=AssetKey(["shop", "products"]))})
    def totals(rows: pa.RecordBatchReader) -> None:
        first = rows.read_next_batch()
        seen["running_after_first"] = _copy_running(db)
        count, total = first.num_rows, pc.sum(first.column("sku")).as_py()
        for batch in rows:
            count += batch.num_rows
            total += pc.sum(batch.column("sku")).as_py()
        seen.update(count=count, total=total, schema=rows.schema)

    result = run_assets([upstream, totals], postgres, selection=[totals.key])
    assert result.success
    assert seen["running_after_first"] is True
    assert (seen["count"], seen["total"]) == (400_000, 400_000 * 400_001 // 2)
    assert seen["schema"].names == ["sku", "price", "note"]
    assert _wait_until(lambda: not _copy_running(db))


def test_a_reader_left_early_ends_the_copy(postgres: PostgresResource, db: Database) -> None:
    """A step that reads one batch and returns: the COPY stops once the reader is freed."""
    _big_table(db, 400_000)
    upstream = frame_asset(pd.DataFrame(), key=("shop", "products"))

    @asset(ins={"rows": AssetIn(key=AssetKey(["shop", "products"]))})
    def peek(rows: pa.RecordBatchReader) -> None:
        assert rows.read_next_batch().num_rows > 0
        assert _copy_running(db)

    assert run_assets([upstream, peek], postgres, selection=[peek.key]).success
    gc.collect()
    assert _wait_until(lambda: not _copy_running(db))
    # The connection is back in the pool and works.
    assert postgres.run(
        lambda conn: read_table(conn, schema="shop", table="products", columns=["sku"])
    ).shape == (400_000, 1)


def test_a_reader_never_read_nor_freed_lets_the_process_end(
    database_url: str, db: Database
) -> None:
    """A step returning a generator over its reader input fails before reading it: the
    reader's COPY and threads end with the run, and the process exits (it hung, with a
    thread of the resource's loop waiting for the reader to take a piece)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.abandoned_reader", database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "failed"
    assert "Asset copied: table public.source belongs to asset source" in done.stderr
    assert db.fetch("SELECT count(*) AS n FROM public.source") == [{"n": 300_000}]
    assert _wait_until(lambda: not _copy_running(db))


def test_a_reader_of_a_missing_table_names_the_asset(postgres: PostgresResource) -> None:
    upstream = frame_asset(pd.DataFrame(), key=("shop", "products"))

    @asset(ins={"rows": AssetIn(key=AssetKey(["shop", "products"]))})
    def reader(rows: pa.RecordBatchReader) -> None:
        raise AssertionError("not reached")

    result = run_assets([upstream, reader], postgres, selection=[reader.key], raise_on_error=False)
    message = failure_message(result)
    assert "Asset shop/products" in message and "does not exist" in message


def _finishes(work: Callable[[], Any], seconds: float = 120.0) -> Any:
    """``work()``'s result, failing the test (instead of hanging it) after ``seconds``."""
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(value=work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome["value"]


def test_a_reader_input_streams_into_the_steps_own_output(
    postgres: PostgresResource, db: Database
) -> None:
    """The reader's COPY and the output's COPY run on the same resource's loop at once."""
    _big_table(db, 150_000)
    upstream = frame_asset(pd.DataFrame(), key=("shop", "products"))
    lookups: list[int] = []

    @asset(
        key=AssetKey(["shop", "copies"]),
        ins={"rows": AssetIn(key=AssetKey(["shop", "products"]))},
        metadata=KEYED,
    )
    def copies(rows: pa.RecordBatchReader) -> pa.RecordBatchReader:
        return rows

    @asset(
        key=AssetKey(["shop", "doubled"]),
        ins={"rows": AssetIn(key=AssetKey(["shop", "products"]))},
        metadata=KEYED,
    )
    def doubled(rows: pa.RecordBatchReader) -> Output[Any]:
        def batches() -> Iterator[pl.DataFrame]:
            for batch in rows:
                # A lookup on the same resource while both COPYs are open.
                lookups.append(postgres.run(lambda conn: conn.exec_driver_sql("SELECT 1")) and 1)
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield frame.with_columns(price=pl.col("price") * 2)

        return Output(batches())

    result = _finishes(
        lambda: run_assets(
            [upstream, copies, doubled], postgres, selection=[copies.key, doubled.key]
        )
    )
    assert result.success
    same = db.fetch(
        "SELECT count(*) AS n FROM shop.copies c JOIN shop.products p USING (sku) "
        "WHERE c.price = p.price AND c.note = p.note"
    )
    assert same == [{"n": 150_000}]
    twice = db.fetch("SELECT count(*) AS n, sum(price) AS total FROM shop.doubled")
    assert twice == [{"n": 150_000, "total": 2 * sum(g / 2.0 for g in range(1, 150_001))}]
    assert lookups


def test_a_generator_may_write_another_new_table_of_the_schema_mid_stream(
    postgres: PostgresResource, db: Database
) -> None:
    """Creators of different tables in an existing schema do not wait for each other: a
    first write whose generator makes another table's first write, through the same
    resource, finishes (it used to wait forever on the schema's creation lock)."""
    db.execute("CREATE SCHEMA shop")

    def output() -> Iterator[pd.DataFrame]:
        yield from pandas_chunks(0, 100_000)
        side = pd.DataFrame({"sku": [1, 2], "note": ["a", "b"]})
        postgres.run(
            lambda conn: copy_upsert(
                conn, side, schema="shop", table="notes", plan=WritePlan.from_options("sku")
            )
        )
        yield from pandas_chunks(100_000, 150_000)

    result = _finishes(lambda: run_assets([stream_asset(output, KEYED)], postgres), 60.0)
    assert counts(written(result)) == (150_000, 150_000, 0, 0, 0)
    assert db.fetch("SELECT count(*) AS n FROM shop.notes") == [{"n": 2}]


def test_chunks_may_hold_a_type_differently(postgres: PostgresResource, db: Database) -> None:
    """Chunks from other libraries, or with a dictionary of another index width, hold the
    same types: one frame."""

    def output() -> Iterator[Any]:
        yield pl.DataFrame(
            {"sku": [1], "tag": ["a"], "kind": pl.Series(["x"], dtype=pl.Categorical)}
        )
        yield pa.table(
            {
                "sku": [2],
                "tag": pa.array(["b"], pa.string()),
                "kind": pa.array(["y"]).dictionary_encode(),
            }
        )
        many = pd.Categorical([f"k{i}" for i in range(300)])  # int16 codes
        yield pd.DataFrame({"sku": range(3, 303), "tag": ["c"] * 300, "kind": many})

    assert run_assets([stream_asset(output, metadata=KEYED)], postgres).success
    rows = db.fetch(f"SELECT count(*) AS n, min(kind) AS low, max(tag) AS tag FROM {TABLE}")
    assert rows == [{"n": 302, "low": "k0", "tag": "c"}]


def test_a_first_chunk_without_values_names_the_column(postgres: PostgresResource) -> None:
    def output() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame({"sku": [1], "note": [None]})
        yield pd.DataFrame({"sku": [2], "note": [5]})

    result = run_assets([stream_asset(output, metadata=KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "column 'note' has no value in the first chunk" in message
    assert "from row 1" in message


@pytest.mark.parametrize(
    ("first", "later", "expected"),
    [
        ({"a": 1}, "[1, 2]", "holds strings in the chunk from row 1, but JSON values (jsonb)"),
        ("[1, 2]", {"a": 1}, "holds JSON values (jsonb) in the chunk from row 1, but strings"),
        (
            decimal.Decimal("1.5"),
            "2.5",
            "holds strings in the chunk from row 1, but decimals (numeric)",
        ),
        (None, {"a": 1}, "holds JSON values (jsonb) in the chunk from row 1, but no value"),
        (None, decimal.Decimal("2"), "holds decimals (numeric) in the chunk from row 1, but no"),
    ],
    ids=["dicts-then-text", "text-then-dicts", "decimals-then-text", "none-then-dicts", "none-dec"],
)
def test_chunks_of_python_objects_keep_the_first_chunks_kind(
    first: object, later: object, expected: str, postgres: PostgresResource, db: Database
) -> None:
    """dicts, Decimals and strings all travel as text: a later chunk's kind would be stored
    as the first chunk's (text parsed as JSON, a dict's JSON as text)."""

    def output() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame({"sku": [1], "note": [first]})
        yield pd.DataFrame({"sku": [2], "note": [later]})

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert f"Asset shop/products: column 'note' {expected}" in message, message
    assert "give every chunk's column the same kind of values" in message
    assert db.snapshot(TABLE) is None


def test_chunks_in_other_time_zones_are_the_same_instants(
    postgres: PostgresResource, db: Database
) -> None:
    def output() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame(
            {"sku": [1], "at": [pd.Timestamp("2024-06-01 12:00", tz="Europe/Paris")]}
        )
        yield pd.DataFrame({"sku": [2], "at": [pd.Timestamp("2024-06-01 12:00", tz="UTC")]})

    assert run_assets([stream_asset(output, KEYED)], postgres).success
    rows = db.fetch(f"SELECT sku, to_char(at AT TIME ZONE 'UTC', 'HH24:MI') AS utc FROM {TABLE}")
    assert sorted((r["sku"], r["utc"]) for r in rows) == [(1, "10:00"), (2, "12:00")]


def test_list_chunks_in_other_time_zones_are_the_same_instants(
    postgres: PostgresResource, db: Database
) -> None:
    def noon_in(zone: str) -> pl.Series:
        noon = dt.datetime(2024, 6, 1, 12, tzinfo=ZoneInfo(zone))
        return pl.Series([[noon]], dtype=pl.List(pl.Datetime("us", zone)))

    def output() -> Iterator[pl.DataFrame]:
        yield pl.DataFrame({"sku": [1], "at": noon_in("Europe/Paris")})
        yield pl.DataFrame({"sku": [2], "at": noon_in("UTC")})

    assert run_assets([stream_asset(output, KEYED)], postgres).success
    rows = db.fetch(f"SELECT sku, to_char(at[1] AT TIME ZONE 'UTC', 'HH24:MI') AS utc FROM {TABLE}")
    assert sorted((r["sku"], r["utc"]) for r in rows) == [(1, "10:00"), (2, "12:00")]


def test_json_chunks_from_any_library_are_one_column(
    postgres: PostgresResource, db: Database
) -> None:
    """pandas dicts, a polars Struct and Arrow's JSON type are all JSON values."""

    def output() -> Iterator[object]:
        yield pd.DataFrame({"sku": [1], "doc": [{"a": 1}]})
        yield pa.table({"sku": [2], "doc": pa.array(['{"b": 2}'], pa.json_())})
        yield pl.DataFrame({"sku": [3], "doc": [{"c": 3}]})

    assert run_assets([stream_asset(output, KEYED)], postgres).success
    rows = db.fetch(f"SELECT sku, doc::text AS doc FROM {TABLE} ORDER BY sku")
    assert rows == [
        {"sku": 1, "doc": '{"a": 1}'},
        {"sku": 2, "doc": '{"b": 2}'},
        {"sku": 3, "doc": '{"c": 3}'},
    ]


def test_a_chunk_that_is_no_frame_is_named(postgres: PostgresResource, db: Database) -> None:
    def output() -> Iterator[object]:
        yield pd.DataFrame({"sku": [1, 2]})
        yield {"sku": [3]}

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "Asset shop/products: the output's iterator yielded dict as the chunk from row 2" in (
        message
    )
    assert db.snapshot(TABLE) is None


def test_a_first_chunk_that_is_no_frame_closes_the_generator(postgres: PostgresResource) -> None:
    closed: list[bool] = []

    def output() -> Iterator[object]:
        try:
            yield [1, 2]
        finally:
            closed.append(True)

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    assert "yielded list as the chunk from row 0" in failure_message(result)
    assert closed == [True]


def test_the_packages_own_error_in_a_stream_is_not_blamed_on_it(
    postgres: PostgresResource,
) -> None:
    """A generator passing on a read's error (a reader input it streams from): the error
    keeps its type and message, not 'the output's iterator failed'."""

    def output() -> Iterator[pd.DataFrame]:
        yield pd.DataFrame({"sku": [1]})
        raise ConnectionLostError("Asset shop/source: lost the connection while reading")

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "ConnectionLostError" in message
    assert "Asset shop/products: Asset shop/source: lost the connection" in message
    assert "the output's iterator failed" not in message


@pytest.mark.parametrize("form", ["generator", "reader"])
def test_a_stream_raising_part_way_fails_naming_it(
    form: str, postgres: PostgresResource, db: Database
) -> None:
    seed = stream_asset(lambda: pandas_chunks(0, 1000), metadata=KEYED)
    assert run_assets([seed], postgres).success
    before = db.snapshot(TABLE)

    def chunks() -> Iterator[pd.DataFrame]:
        yield from pandas_chunks(0, 80_000, price=5.0)
        raise RuntimeError("the source went away")

    def output() -> object:
        if form == "generator":
            return chunks()
        batches = (pa.RecordBatch.from_pandas(c, preserve_index=False) for c in chunks())
        schema = pa.schema([("sku", pa.int64()), ("price", pa.float64())])
        return pa.RecordBatchReader.from_batches(schema, batches)

    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    message = failure_message(result)
    source = "the output's iterator" if form == "generator" else "the output's Arrow stream"
    expected = f"Asset shop/products: {source} failed (RuntimeError: the source went away"
    assert expected in message, message
    assert "nothing was written" in message
    assert db.snapshot(TABLE) == before


@pytest.mark.parametrize("form", ["generator", "frame"])
def test_a_serialization_failure_retries_a_frame_but_not_a_stream(
    form: str, postgres: PostgresResource, db: Database
) -> None:
    """A trigger fails the first insert with a serialization failure (its sequence is not
    rolled back): a frame is written again; a stream, read once, fails saying so."""
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku bigint PRIMARY KEY, price float8);"
        "CREATE SEQUENCE shop.attempts; CREATE FUNCTION shop.fail_once() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN IF nextval('shop.attempts') = 1 THEN RAISE EXCEPTION "
        "'injected' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$;"
        "CREATE TRIGGER fail_once BEFORE INSERT ON shop.products FOR EACH ROW "
        "EXECUTE FUNCTION shop.fail_once()"
    )
    rows = pd.DataFrame({"sku": [1, 2], "price": [1.0, 2.0]})
    output = (lambda: iter([rows])) if form == "generator" else (lambda: rows)
    result = run_assets([stream_asset(output, KEYED)], postgres, raise_on_error=False)
    attempts = db.fetch("SELECT last_value AS n FROM shop.attempts")[0]["n"]
    if form == "frame":
        assert result.success
        assert db.fetch(f"SELECT sku, price FROM {TABLE} ORDER BY sku") == [
            {"sku": 1, "price": 1.0},
            {"sku": 2, "price": 2.0},
        ]
        assert attempts == 3  # the failed first row, then both rows again
        return
    message = failure_message(result)
    assert "Asset shop/products: writing shop.products failed on a serialization conflict" in (
        message
    )
    assert "a stream is read once, so it is not retried" in message
    assert "RetryPolicy" in message and "times" not in message
    assert attempts == 1
    assert db.fetch(f"SELECT count(*) AS n FROM {TABLE}") == [{"n": 0}]


def test_a_stream_read_a_second_time_is_refused_rather_than_found_empty() -> None:
    """No plan reads a stream twice (its write is not retried); were one to, the spent
    stream would write no rows: the second pass fails instead."""
    batch = pa.record_batch({"id": [1, 2]})
    for frame in (
        to_arrow(iter([batch])),
        to_arrow(pa.RecordBatchReader.from_batches(batch.schema, [batch])),
    ):
        tagged = frame.with_constant("run", "r1")
        assert sum(b.num_rows for b in tagged.batches()) == 2
        with pytest.raises(FrameError, match="read once already"):
            tagged.batches()
