"""Every DataFrame library through the IO manager and back: polars and pyarrow frames of every
row of the README's type table written, then read by an input annotated with the same
library; the PostgreSQL type chosen, the type that comes back and the values. Then frames
across libraries (pandas writes, polars reads), and what each input annotation returns."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from dagster import AssetIn, AssetKey, asset

from resources import PostgresResource

from .conftest import Database
from .helpers import failure_message, frame_asset, run_assets, written

UUID = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
BIG_TEXT = "x" * 3_000_000
UTC = dt.UTC


@dataclass
class Case:
    id: str
    values: Any  # a polars Series or a pyarrow Array of three values
    pg_type: str
    back_type: Any  # the polars dtype or Arrow type read back
    back: list[Any]


def _same(values: list[Any]) -> list[Any]:
    """NaN compares equal to NaN, in lists too; everything else as it is."""
    return [
        _same(v)
        if isinstance(v, list)
        else "<NaN>"
        if isinstance(v, float) and math.isnan(v)
        else v
        for v in values
    ]


TS = dt.datetime(2024, 1, 1, 10, 0, 0, 123456)
TS_ZONED = dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)

POLARS_CASES = [
    Case("Int8", pl.Series([1, -2, None], dtype=pl.Int8), "smallint", pl.Int16, [1, -2, None]),
    Case("Int16", pl.Series([1, -2, None], dtype=pl.Int16), "smallint", pl.Int16, [1, -2, None]),
    Case("Int32", pl.Series([1, -2, None], dtype=pl.Int32), "integer", pl.Int32, [1, -2, None]),
    Case(
        "Int64",
        pl.Series([1, -(2**63), None], dtype=pl.Int64),
        "bigint",
        pl.Int64,
        [1, -(2**63), None],
    ),
    Case("UInt8", pl.Series([0, 255, None], dtype=pl.UInt8), "smallint", pl.Int16, [0, 255, None]),
    Case(
        "UInt32",
        pl.Series([0, 2**32 - 1, None], dtype=pl.UInt32),
        "bigint",
        pl.Int64,
        [0, 2**32 - 1, None],
    ),
    Case(
        "UInt64",
        pl.Series([0, 2**64 - 1, None], dtype=pl.UInt64),
        "numeric",
        pl.String,
        ["0", str(2**64 - 1), None],
    ),
    Case(
        "Float32-nan-null",
        pl.Series([1.5, float("nan"), None], dtype=pl.Float32),
        "real",
        pl.Float32,
        [1.5, float("nan"), None],
    ),
    Case(
        "Float64-inf-nan-null",
        pl.Series([float("inf"), float("nan"), None], dtype=pl.Float64),
        "double precision",
        pl.Float64,
        [float("inf"), float("nan"), None],
    ),
    Case("Boolean", pl.Series([True, False, None]), "boolean", pl.Boolean, [True, False, None]),
    Case(
        "String",
        pl.Series(["a", "héllo ✓ 𝄞", None]),
        "text",
        pl.String,
        ["a", "héllo ✓ 𝄞", None],
    ),
    Case("large-String", pl.Series([BIG_TEXT, "", None]), "text", pl.String, [BIG_TEXT, "", None]),
    Case(
        "Categorical",
        pl.Series(["x", "y", None], dtype=pl.Categorical),
        "text",
        pl.String,
        ["x", "y", None],
    ),
    Case(
        "Enum",
        pl.Series(["lo", "hi", None], dtype=pl.Enum(["lo", "hi"])),
        "text",
        pl.String,
        ["lo", "hi", None],
    ),
    Case(
        "Datetime-naive",
        pl.Series([TS, dt.datetime(1900, 1, 1), None], dtype=pl.Datetime("us")),
        "timestamp without time zone",
        pl.Datetime("us"),
        [TS, dt.datetime(1900, 1, 1), None],
    ),
    Case(
        "Datetime-ns-zoned",
        pl.Series(
            [dt.datetime(2024, 1, 1, 11, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))]
            * 2
            + [None],
            dtype=pl.Datetime("ns", "Europe/Paris"),
        ),
        "timestamp with time zone",
        pl.Datetime("us", "UTC"),
        [TS_ZONED, TS_ZONED, None],
    ),
    Case(
        "Date",
        pl.Series([dt.date(2024, 2, 29), dt.date(1, 1, 1), None]),
        "date",
        pl.Date,
        [dt.date(2024, 2, 29), dt.date(1, 1, 1), None],
    ),
    Case(
        "Time",
        pl.Series([dt.time(10, 0, 0, 5), dt.time(0), None]),
        "time without time zone",
        pl.Time,
        [dt.time(10, 0, 0, 5), dt.time(0), None],
    ),
    Case(
        "Duration",
        pl.Series([dt.timedelta(days=3, microseconds=7), -dt.timedelta(hours=1), None]),
        "interval",
        pl.Duration("us"),
        [dt.timedelta(days=3, microseconds=7), -dt.timedelta(hours=1), None],
    ),
    Case(
        "Decimal",
        pl.Series([decimal.Decimal("1.25"), decimal.Decimal("-99999999.99"), None]).cast(
            pl.Decimal(10, 2)
        ),
        "numeric(10,2)",
        pl.Decimal(10, 2),
        [decimal.Decimal("1.25"), decimal.Decimal("-99999999.99"), None],
    ),
    Case(
        "Binary",
        pl.Series([b"\x00\xff", b"", None]),
        "bytea",
        pl.Binary,
        [b"\x00\xff", b"", None],
    ),
    Case(
        "List-Int64",
        pl.Series([[1, None, 3], [], None], dtype=pl.List(pl.Int64)),
        "bigint[]",
        pl.List(pl.Int64),
        [[1, None, 3], [], None],
    ),
    Case(
        "List-String",
        pl.Series([["a", "b"], [None], None], dtype=pl.List(pl.String)),
        "text[]",
        pl.List(pl.String),
        [["a", "b"], [None], None],
    ),
    Case(
        "Struct",
        pl.Series([{"a": 1, "b": "x"}, {"a": None, "b": "y"}, None]),
        "jsonb",
        pl.String,
        ['{"a": 1, "b": "x"}', '{"a": null, "b": "y"}', None],
    ),
    Case("Null", pl.Series([None, None, None]), "text", pl.String, [None, None, None]),
]

ARROW_CASES = [
    Case("int8", pa.array([1, -2, None], pa.int8()), "smallint", pa.int16(), [1, -2, None]),
    Case("int32", pa.array([1, -2, None], pa.int32()), "integer", pa.int32(), [1, -2, None]),
    Case(
        "int64",
        pa.array([1, -(2**63), None], pa.int64()),
        "bigint",
        pa.int64(),
        [1, -(2**63), None],
    ),
    Case(
        "uint64",
        pa.array([0, 2**64 - 1, None], pa.uint64()),
        "numeric",
        pa.large_string(),
        ["0", str(2**64 - 1), None],
    ),
    Case(
        "float64-nan-null",
        pa.array([1.5, float("nan"), None], pa.float64()),
        "double precision",
        pa.float64(),
        [1.5, float("nan"), None],
    ),
    Case("bool", pa.array([True, False, None]), "boolean", pa.bool_(), [True, False, None]),
    Case("string", pa.array(["a", "✓", None]), "text", pa.large_string(), ["a", "✓", None]),
    Case(
        "string_view",
        pa.array(["a", BIG_TEXT, None], pa.string_view()),
        "text",
        pa.large_string(),
        ["a", BIG_TEXT, None],
    ),
    Case(
        "dictionary",
        pa.array(["x", "y", None]).dictionary_encode(),
        "text",
        pa.large_string(),
        ["x", "y", None],
    ),
    Case(
        "timestamp-ns-tz",
        pa.array([1_704_103_200_123_456_789, 0, None], pa.timestamp("ns", tz="Asia/Tokyo")),
        "timestamp with time zone",
        pa.timestamp("us", tz="UTC"),
        [
            dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=UTC),
            dt.datetime(1970, 1, 1, tzinfo=UTC),
            None,
        ],
    ),
    Case(
        "timestamp-us",
        pa.array([TS, None, None], pa.timestamp("us")),
        "timestamp without time zone",
        pa.timestamp("us"),
        [TS, None, None],
    ),
    Case(
        "date32",
        pa.array([dt.date(2024, 2, 29), None, None], pa.date32()),
        "date",
        pa.date32(),
        [dt.date(2024, 2, 29), None, None],
    ),
    Case(
        "date64",
        pa.array([dt.date(2024, 2, 29), None, None], pa.date64()),
        "date",
        pa.date32(),
        [dt.date(2024, 2, 29), None, None],
    ),
    Case(
        "time64",
        pa.array([dt.time(23, 59, 59, 999999), None, None], pa.time64("us")),
        "time without time zone",
        pa.time64("us"),
        [dt.time(23, 59, 59, 999999), None, None],
    ),
    Case(
        "duration",
        pa.array([dt.timedelta(days=400), None, None], pa.duration("us")),
        "interval",
        pa.duration("us"),
        [dt.timedelta(days=400), None, None],
    ),
    Case(
        "decimal128",
        pa.array([decimal.Decimal("1.25"), decimal.Decimal("-3"), None], pa.decimal128(10, 2)),
        "numeric(10,2)",
        pa.decimal128(10, 2),
        [decimal.Decimal("1.25"), decimal.Decimal("-3.00"), None],
    ),
    Case(
        "decimal256",
        pa.array([decimal.Decimal("1" * 45 + ".125"), None, None], pa.decimal256(50, 3)),
        "numeric",
        pa.large_string(),
        ["1" * 45 + ".125", None, None],
    ),
    Case(
        "uuid",
        pa.ExtensionArray.from_storage(
            pa.uuid(), pa.array([UUID.bytes, None, None], pa.binary(16))
        ),
        "uuid",
        pa.uuid(),
        [UUID, None, None],
    ),
    Case(
        "json",
        pa.ExtensionArray.from_storage(
            pa.json_(pa.large_string()),
            pa.array(['{"a": [1, null]}', None, None], pa.large_string()),
        ),
        "jsonb",
        pa.json_(pa.large_string()),
        ['{"a": [1, null]}', None, None],
    ),
    Case(
        "binary",
        pa.array([b"\x00\x01", None, None], pa.binary()),
        "bytea",
        pa.large_binary(),
        [b"\x00\x01", None, None],
    ),
    Case(
        "list-float64",
        pa.array([[1.5, None, float("nan")], None, []], pa.list_(pa.float64())),
        "double precision[]",
        pa.large_list(pa.float64()),
        [[1.5, None, float("nan")], None, []],
    ),
    Case(
        "list-bool",
        pa.array([[True, False], None, []], pa.large_list(pa.bool_())),
        "boolean[]",
        pa.large_list(pa.bool_()),
        [[True, False], None, []],
    ),
]


def _round_trip(
    values_frame: Any, annotation: Any, postgres: PostgresResource
) -> tuple[dict[str, Any], Any]:
    """Materialize ``values_frame`` twice (inserted, then unchanged); return the write's
    metadata and what an input annotated ``annotation`` got."""
    upstream = frame_asset(values_frame, key=("lib", "t"), metadata={"conflict_target": "id"})
    seen: dict[str, Any] = {}

    def read(t):  # type: ignore[no-untyped-def]
        seen["frame"] = t

    read.__annotations__ = {"t": annotation, "return": None}  # the input's type, as written
    copy = asset(key=AssetKey(["lib", "copy"]), ins={"t": AssetIn(key=AssetKey(["lib", "t"]))})(
        read
    )

    for expected in ((3, 0), (0, 3)):
        meta = written(run_assets([upstream, copy], postgres), ("lib", "t"))
        assert (meta["rows_inserted"], meta["rows_unchanged"]) == expected
    return meta, seen["frame"]


def _column_type(meta: dict[str, Any]) -> str:
    return {c.name: c.type for c in meta["dagster/column_schema"].columns}["value"]


@pytest.mark.parametrize("case", POLARS_CASES, ids=[c.id for c in POLARS_CASES])
def test_polars_round_trip(case: Case, postgres: PostgresResource) -> None:
    frame = pl.DataFrame({"id": [1, 2, 3], "value": case.values})
    meta, back = _round_trip(frame, pl.DataFrame, postgres)
    assert _column_type(meta) == case.pg_type
    assert isinstance(back, pl.DataFrame)
    back = back.sort("id")
    assert back.schema["value"] == case.back_type
    assert _same(back["value"].to_list()) == _same(case.back)


@pytest.mark.parametrize("case", ARROW_CASES, ids=[c.id for c in ARROW_CASES])
def test_arrow_round_trip(case: Case, postgres: PostgresResource) -> None:
    table = pa.table({"id": [1, 2, 3], "value": case.values})
    meta, back = _round_trip(table, pa.Table, postgres)
    assert _column_type(meta) == case.pg_type
    assert isinstance(back, pa.Table)
    back = back.sort_by("id")
    assert back.schema.field("value").type == case.back_type
    assert _same(back.column("value").to_pylist()) == _same(case.back)


def test_pandas_writes_and_each_library_reads(postgres: PostgresResource) -> None:
    frame = pd.DataFrame(
        {
            "id": [2, 1],
            "n": pd.array([None, 7], dtype="Int64"),
            "when": [
                pd.Timestamp("2024-01-01 10:00", tz="UTC"),
                pd.Timestamp("2024-01-02", tz="UTC"),
            ],
            "tag": ["b", None],
        }
    )
    upstream = frame_asset(frame, key=("lib", "t"), metadata={"conflict_target": "id"})
    seen: dict[str, Any] = {}

    def reader(name: str, annotation: Any, **in_metadata: Any) -> Any:
        def read(t):  # type: ignore[no-untyped-def]
            seen[name] = t

        read.__annotations__ = {"t": annotation, "return": None}
        ins = {"t": AssetIn(key=AssetKey(["lib", "t"]), metadata=in_metadata)}
        return asset(name=f"read_{name}", ins=ins)(read)

    readers = [
        reader("pandas", Any),
        reader("polars", pl.DataFrame),
        reader("lazy", pl.LazyFrame),
        reader("arrow", pa.Table, columns=["id", "n"]),
        reader("optional_polars", pl.DataFrame | None),
        reader("optional_reader", pa.RecordBatchReader | None),
    ]
    assert run_assets([upstream, *readers], postgres).success
    assert seen["optional_polars"].sort("id").equals(seen["polars"].sort("id"))
    assert isinstance(seen["optional_reader"], pa.RecordBatchReader)  # X | None reads as X
    assert seen["optional_reader"].read_all().num_rows == 2
    assert isinstance(seen["pandas"], pd.DataFrame)  # an input without annotation
    assert str(seen["pandas"]["n"].dtype) == "Int64"
    polars = seen["polars"].sort("id")
    assert isinstance(seen["lazy"], pl.LazyFrame)
    assert seen["lazy"].collect().sort("id").equals(polars)
    assert polars.to_dict(as_series=False) == {
        "id": [1, 2],
        "n": [7, None],
        "when": [dt.datetime(2024, 1, 2, tzinfo=UTC), dt.datetime(2024, 1, 1, 10, tzinfo=UTC)],
        "tag": [None, "b"],
    }
    assert seen["arrow"].sort_by("id").to_pydict() == {"id": [1, 2], "n": [7, None]}


def test_an_input_annotated_with_an_unknown_type_names_the_input(
    postgres: PostgresResource,
) -> None:
    upstream = frame_asset(pd.DataFrame({"id": [1]}), key=("lib", "t"))

    @asset(ins={"rows": AssetIn(key=AssetKey(["lib", "t"]))})
    def reader(rows: dict) -> None:  # type: ignore[type-arg]
        raise AssertionError("not reached")

    result = run_assets([upstream, reader], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "input 'rows' of asset reader" in message.lower()
    assert "annotated dict" in message
    assert "polars.DataFrame" in message


def test_a_polars_frame_upserts_into_partitions_and_adds_columns(
    postgres: PostgresResource, db: Database
) -> None:
    from dagster import DailyPartitionsDefinition

    days = DailyPartitionsDefinition(start_date="2024-01-01")
    version = {"n": 1}

    def frame() -> pl.DataFrame:
        rows = pl.DataFrame(
            {
                "day": [dt.date(2024, 1, 2)] * 3,
                "id": [1, 2, 3],
                "v": [float(version["n"])] * 3,
            }
        )
        return rows.with_columns(extra=pl.lit("new")) if version["n"] > 1 else rows

    metadata = {"conflict_target": ["day", "id"], "partition_expr": "day"}
    events = frame_asset(frame, key=("lib", "events"), metadata=metadata, partitions_def=days)
    assert run_assets([events], postgres, partition_key="2024-01-02").success
    version["n"] = 2
    meta = written(run_assets([events], postgres, partition_key="2024-01-02"), ("lib", "events"))
    assert (meta["rows_inserted"], meta["rows_updated"]) == (0, 3)
    rows = db.rows("lib.events", "id")
    assert [(r["id"], r["v"], r["extra"]) for r in rows] == [(i, 2.0, "new") for i in (1, 2, 3)]

    version["n"] = 1  # a row outside the partition is refused: nothing changes
    outside = pl.DataFrame({"day": [dt.date(2024, 1, 3)], "id": [9], "v": [0.0]})
    stray = frame_asset(outside, key=("lib", "events"), metadata=metadata, partitions_def=days)
    before = db.snapshot("lib.events")
    result = run_assets([stray], postgres, partition_key="2024-01-02", raise_on_error=False)
    assert "lib/events" in failure_message(result)
    assert db.snapshot("lib.events") == before


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            pl.DataFrame({"id": [1], "v": pl.Series([object()], dtype=pl.Object)}),
            ["column 'v' is polars Object", "Object to String or Binary"],
        ),
        (
            pl.DataFrame({"id": [1], "v": pl.Series([2**100], dtype=pl.Int128)}),
            ["column 'v' is polars Int128", "Int128 to Decimal"],
        ),
        (
            pa.table({"id": [1], "v": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))}),
            [
                "column 'v' has Arrow type map<string, int64>",
                "send it as JSON text (a struct column of its own, polars' or Arrow's, is "
                "written as jsonb)",
            ],
        ),
        (
            pa.table({"id": [1], "v": pa.array([[{"a": 1}]])}),
            ["column 'v' has Arrow type list<item: struct<a: int64>>"],
        ),
        (
            pa.table({"id": [1], "v": pa.array([[[1]]], pa.list_(pa.list_(pa.int64())))}),
            ["column 'v' has Arrow type list<item: list<item: int64>>"],
        ),
        (pd.Series([1, 2], name="id"), ["returned Series", "series.to_frame()"]),
    ],
    ids=[
        "polars-object",
        "polars-int128",
        "arrow-map",
        "arrow-list-of-struct",
        "nested-list",
        "series",
    ],
)
def test_unstorable_columns_are_refused_naming_them(
    frame: Any, expected: list[str], postgres: PostgresResource, db: Database
) -> None:
    seed = frame_asset(
        pd.DataFrame({"id": [7]}), key=("lib", "t"), metadata={"conflict_target": "id"}
    )
    assert run_assets([seed], postgres).success
    before = db.snapshot("lib.t")
    bad = frame_asset(frame, key=("lib", "t"), metadata={"conflict_target": "id"})
    message = failure_message(run_assets([bad], postgres, raise_on_error=False))
    assert "Asset lib/t" in message
    for part in expected:
        assert part in message
    assert db.snapshot("lib.t") == before


def test_a_lazy_frame_that_cannot_be_planned_is_named(
    postgres: PostgresResource, db: Database
) -> None:
    seed = frame_asset(
        pd.DataFrame({"id": [7]}), key=("lib", "t"), metadata={"conflict_target": "id"}
    )
    assert run_assets([seed], postgres).success
    before = db.snapshot("lib.t")
    lazy = pl.LazyFrame({"id": [1, 2]}).select("id", "missing")
    bad = frame_asset(lazy, key=("lib", "t"), metadata={"conflict_target": "id"})
    message = failure_message(run_assets([bad], postgres, raise_on_error=False))
    assert "Asset lib/t: the LazyFrame's query failed (ColumnNotFoundError" in message, message
    assert db.snapshot("lib.t") == before


@pytest.mark.parametrize(
    "frame",
    [
        # 70,000 rows: the write cuts them into pieces of 65,536, the second a slice.
        pl.DataFrame(
            {"id": range(70_000), "c": [None if i % 7 else [i, None] for i in range(70_000)]}
        ),
        pa.table(
            {
                "id": [1, 2, 3, 4],
                "c": pa.array(
                    [[1_000_001], None, [2_000_999, None], []], pa.list_(pa.timestamp("ns"))
                ),
            }
        ).slice(1),
    ],
    ids=["polars-70k-rows", "arrow-sliced-nanoseconds"],
)
def test_list_columns_with_nulls_in_sliced_arrays(
    frame: Any, postgres: PostgresResource, db: Database
) -> None:
    """A list column with NULLs in an Arrow slice (offsets not at 0)."""
    assert run_assets(
        [frame_asset(frame, key=("lib", "t"), metadata={"conflict_target": "id"})], postgres
    ).success
    rows = db.fetch("SELECT id, c::text AS c FROM lib.t ORDER BY id")
    if isinstance(frame, pl.DataFrame):
        assert len(rows) == 70_000
        assert rows[:2] == [{"id": 0, "c": "{0,NULL}"}, {"id": 1, "c": None}]
        assert rows[-1] == {"id": 69_999, "c": None}
        assert sum(r["c"] is None for r in rows) == 70_000 - 10_000
    else:
        assert rows == [
            {"id": 2, "c": None},
            {"id": 3, "c": '{"1970-01-01 00:00:00.002",NULL}'},  # nanoseconds rounded down
            {"id": 4, "c": "{}"},
        ]


def test_pandas_cells_holding_numpy_arrays_are_typed_arrays(
    postgres: PostgresResource, db: Database
) -> None:
    """What polars' to_pandas() makes of a list column: numpy arrays in an object column."""
    frame = pl.DataFrame({"id": [1, 2, 3], "c": [[1, 2], [3], None]}).to_pandas()
    assert isinstance(frame["c"].iloc[0], np.ndarray)
    bad = frame_asset(frame, key=("lib", "t"), metadata={"conflict_target": "id"})
    assert run_assets([bad], postgres).success
    assert db.fetch("SELECT id, c::text AS c FROM lib.t ORDER BY id") == [
        {"id": 1, "c": "{1,2}"},
        {"id": 2, "c": "{3}"},
        {"id": 3, "c": None},
    ]
    assert db.fetch(
        "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute "
        "WHERE attrelid = 'lib.t'::regclass AND attname = 'c'"
    ) == [{"t": "bigint[]"}]


@pytest.mark.parametrize("form", ["table", "reader"])
def test_an_arrow_struct_column_is_jsonb(
    form: str, postgres: PostgresResource, db: Database
) -> None:
    """As a polars Struct is: each value's JSON, a NULL struct NULL."""
    table = pa.table(
        {"id": [1, 2, 3], "v": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}])}
    )
    output = (
        table
        if form == "table"
        else pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2))
    )
    asset_ = frame_asset(lambda: output, key=("lib", "t"), metadata={"conflict_target": "id"})
    assert run_assets([asset_], postgres).success
    assert db.fetch("SELECT id, v::text AS v, jsonb_typeof(v) AS kind FROM lib.t ORDER BY id") == [
        {"id": 1, "v": '{"a": 1, "b": "x"}', "kind": "object"},
        {"id": 2, "v": None, "kind": None},
        {"id": 3, "v": '{"a": null, "b": "y"}', "kind": "object"},
    ]
    bad = pa.table({"id": [4], "v": pa.array([{"a": float("nan")}])})
    refused = frame_asset(bad, key=("lib", "t"), metadata={"conflict_target": "id"})
    before = db.snapshot("lib.t")
    message = failure_message(run_assets([refused], postgres, raise_on_error=False))
    assert "column 'v' holds dicts or lists, stored as jsonb" in message, message
    assert db.snapshot("lib.t") == before


def test_a_lazy_frame_scanning_a_missing_file_is_named(
    postgres: PostgresResource, db: Database, tmp_path: Path
) -> None:
    """polars raises a FileNotFoundError, not one of its own errors, for a missing file."""
    seed = frame_asset(
        pd.DataFrame({"id": [7]}), key=("lib", "t"), metadata={"conflict_target": "id"}
    )
    assert run_assets([seed], postgres).success
    before = db.snapshot("lib.t")
    lazy = pl.scan_parquet(tmp_path / "missing.parquet")
    bad = frame_asset(lazy, key=("lib", "t"), metadata={"conflict_target": "id"})
    message = failure_message(run_assets([bad], postgres, raise_on_error=False))
    assert "Asset lib/t: the LazyFrame's query failed (FileNotFoundError" in message, message
    assert "missing.parquet" in message
    assert db.snapshot("lib.t") == before


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            pd.DataFrame({"id": [1, 2], "doc": [{"x": 1.5}, {"x": float("nan")}]}),
            "column 'doc' holds dicts or lists, stored as jsonb, and one of them holds what "
            "JSON cannot (Out of range float values are not JSON compliant",
        ),
        (
            pd.DataFrame({"id": [1, 2], "doc": [[1, 2], [np.int64(3)]]}),
            "column 'doc' holds dicts or lists, stored as jsonb, and one of them holds what "
            "JSON cannot (Object of type int64 is not JSON serializable)",
        ),
        (
            pl.DataFrame(
                {"id": [1, 2], "doc": [{"x": 1.5, "y": [1.0]}, {"x": 2.0, "y": [-math.inf]}]}
            ),
            "column 'doc' is a Struct, stored as jsonb, and holds NaN or Infinity",
        ),
        (
            pl.LazyFrame({"id": [1, 2], "doc": [{"x": {"z": math.nan}}, None]}),
            "column 'doc' is a Struct, stored as jsonb, and holds NaN or Infinity",
        ),
    ],
    ids=["pandas-nan", "pandas-numpy-int", "polars-infinity", "lazy-nested-nan"],
)
def test_json_values_json_cannot_hold_are_refused(
    frame: Any, expected: str, postgres: PostgresResource, db: Database
) -> None:
    """NaN in a dict would be refused by the server as a bad value of a table the write was
    creating; polars would write null in its place."""
    bad = frame_asset(frame, key=("lib", "t"), metadata={"conflict_target": "id"})
    message = failure_message(run_assets([bad], postgres, raise_on_error=False))
    assert f"Asset lib/t: {expected}" in message, message
    assert db.snapshot("lib.t") is None


@pytest.mark.parametrize("library", ["polars", "pyarrow"])
def test_a_two_dimensional_array_read_into_polars_or_arrow_is_named(
    library: str, postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE SCHEMA lib; CREATE TABLE lib.grid (id int PRIMARY KEY, cells int[]);"
        "INSERT INTO lib.grid VALUES (1, '{1,2}'), (2, '{{1,2},{3,4}}')"
    )

    @asset(name="as_polars", ins={"rows": AssetIn(key=AssetKey(["lib", "grid"]))})
    def as_polars(rows: pl.DataFrame) -> None:
        raise AssertionError("not reached")

    @asset(name="as_arrow", ins={"rows": AssetIn(key=AssetKey(["lib", "grid"]))})
    def as_arrow(rows: pa.Table) -> None:
        raise AssertionError("not reached")

    reader = as_polars if library == "polars" else as_arrow
    upstream = frame_asset(pd.DataFrame(), key=("lib", "grid"))
    result = run_assets([upstream, reader], postgres, selection=[reader.key], raise_on_error=False)
    message = failure_message(result)
    assert "table lib.grid" in message and "column 'cells'" in message, message
    assert "more than one dimension" in message and "pandas reads it" in message


def test_lists_of_zoned_nanosecond_timestamps(postgres: PostgresResource, db: Database) -> None:
    """Zoned timestamps in lists make timestamptz[], rounded down to the microsecond as a
    plain column is (-1,500 ns is 1969-12-31 23:59:59.999998)."""
    stamps = pa.array([[-1500, 1_500]], pa.list_(pa.timestamp("ns", tz="America/New_York")))
    plain = pa.array([-1500], pa.timestamp("ns", tz="UTC"))
    table = pa.table({"id": [1], "stamps": stamps, "stamp": plain})
    meta = written(
        run_assets(
            [frame_asset(table, key=("lib", "t"), metadata={"conflict_target": "id"})], postgres
        ),
        ("lib", "t"),
    )
    types = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert (types["stamps"], types["stamp"]) == (
        "timestamp with time zone[]",
        "timestamp with time zone",
    )
    row = db.fetch(
        "SELECT stamps[1] = stamp AS same, to_char(stamps[2] AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD HH24:MI:SS.US') AS later FROM lib.t"
    )
    assert row == [{"same": True, "later": "1970-01-01 00:00:00.000001"}]
    assert db.fetch("SELECT to_char(stamp AT TIME ZONE 'UTC', 'SS.US') AS s FROM lib.t") == [
        {"s": "59.999998"}
    ]
