"""Every common dtype through the IO manager and back through load_input: the PostgreSQL
type chosen, the dtype that comes back, and the values (the README's type table)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetIn, AssetKey, asset

from resources import PostgresResource

from .helpers import failure_message, frame_asset, run_assets, written

TS = "2024-01-01 10:00:00.123456"


@dataclass
class Case:
    id: str
    values: Any
    pg_type: str
    dtype: str
    back: list[Any]


def _na(values: list[Any]) -> list[Any]:
    """Missing values compare equal whatever their flavour (None, NaN, NA, NaT)."""
    return [
        "<missing>" if v is None or (not isinstance(v, list | dict) and pd.isna(v)) else v
        for v in values
    ]


CASES = [
    Case("int8", np.array([1, -2], dtype="int8"), "smallint", "Int16", [1, -2]),
    Case("int16", np.array([1, -2], dtype="int16"), "smallint", "Int16", [1, -2]),
    Case("int32", np.array([1, -2], dtype="int32"), "integer", "Int32", [1, -2]),
    Case("int64", np.array([1, -(2**63)], dtype="int64"), "bigint", "Int64", [1, -(2**63)]),
    Case("uint8", np.array([0, 255], dtype="uint8"), "smallint", "Int16", [0, 255]),
    Case("uint16", np.array([0, 65535], dtype="uint16"), "integer", "Int32", [0, 65535]),
    Case("uint32", np.array([0, 2**32 - 1], dtype="uint32"), "bigint", "Int64", [0, 2**32 - 1]),
    Case(
        "uint64",
        np.array([0, 2**64 - 1], dtype="uint64"),
        "numeric",
        "object",
        [decimal.Decimal(0), decimal.Decimal(2**64 - 1)],
    ),
    Case("Int8", pd.array([1, None], dtype="Int8"), "smallint", "Int16", [1, None]),
    Case("Int64", pd.array([1, None], dtype="Int64"), "bigint", "Int64", [1, None]),
    Case("boolean", pd.array([True, None], dtype="boolean"), "boolean", "boolean", [True, None]),
    Case(
        "Float64",
        pd.array([1.5, None], dtype="Float64"),
        "double precision",
        "float64",
        [1.5, None],
    ),
    Case("float32-nan", np.array([1.5, np.nan], dtype="float32"), "real", "float32", [1.5, None]),
    Case(
        "float64-inf", np.array([np.inf, -np.inf]), "double precision", "float64", [np.inf, -np.inf]
    ),
    Case("bool", np.array([True, False]), "boolean", "boolean", [True, False]),
    Case("str", pd.array(["a", None], dtype="str"), "text", "str", ["a", None]),
    Case("object-str", np.array(["a", None], dtype=object), "text", "str", ["a", None]),
    Case(
        "string-pyarrow", pd.array(["a", None], dtype="string[pyarrow]"), "text", "str", ["a", None]
    ),
    Case(
        "unicode",
        pd.array(["héllo ✓ 𝄞", "日本"], dtype="str"),
        "text",
        "str",
        ["héllo ✓ 𝄞", "日本"],
    ),
    Case(
        "long-text",
        pd.array(["x" * 1_000_000, ""], dtype="str"),
        "text",
        "str",
        ["x" * 1_000_000, ""],
    ),
    Case(
        "naive",
        pd.to_datetime([TS, None], format="ISO8601"),
        "timestamp without time zone",
        "datetime64[us]",
        [pd.Timestamp(TS), None],
    ),
    Case(
        "aware-tokyo",
        pd.to_datetime(["2024-01-01 10:00", None]).tz_localize("Asia/Tokyo"),
        "timestamp with time zone",
        "datetime64[us, UTC]",
        [pd.Timestamp("2024-01-01 01:00", tz="UTC"), None],
    ),
    Case(
        "nanoseconds-truncated",
        pd.Series(
            pd.to_datetime(
                ["2024-01-01 00:00:00.123456789", "1969-12-31 23:59:59.999999999"]
            ).astype("datetime64[ns]")
        ),
        "timestamp without time zone",
        "datetime64[us]",
        [pd.Timestamp("2024-01-01 00:00:00.123456"), pd.Timestamp("1969-12-31 23:59:59.999999")],
    ),
    Case(
        "date-objects",
        np.array([dt.date(2024, 1, 2), None], dtype=object),
        "date",
        "object",
        [dt.date(2024, 1, 2), None],
    ),
    Case(
        "date32-pyarrow",
        pd.array([dt.date(2024, 1, 2), None], dtype=pd.ArrowDtype(pa.date32())),
        "date",
        "object",
        [dt.date(2024, 1, 2), None],
    ),
    Case(
        "timedelta",
        pd.to_timedelta([90.5, None], unit="s"),
        "interval",
        "timedelta64[us]",
        [pd.Timedelta(seconds=90.5), None],
    ),
    Case(
        "decimal",
        np.array([decimal.Decimal("12345678901234567890.123456789"), None], dtype=object),
        "numeric",
        "object",
        [decimal.Decimal("12345678901234567890.123456789"), None],
    ),
    Case(
        "bytes",
        np.array([b"\x00\x01\xff", None], dtype=object),
        "bytea",
        "object",
        [b"\x00\x01\xff", None],
    ),
    Case(
        "uuid",
        np.array([uuid.UUID(int=1), None], dtype=object),
        "uuid",
        "object",
        [uuid.UUID(int=1), None],
    ),
    Case(
        "dict",
        np.array([{"a": 1, "b": [1, None]}, None], dtype=object),
        "jsonb",
        "object",
        [{"a": 1, "b": [1, None]}, None],
    ),
    Case("list", np.array([[1, "x"], None], dtype=object), "jsonb", "object", [[1, "x"], None]),
    Case("category", pd.Categorical(["x", "y"]), "text", "str", ["x", "y"]),
    Case(
        "int64-pyarrow", pd.array([1, None], dtype="int64[pyarrow]"), "bigint", "Int64", [1, None]
    ),
    Case(
        "timestamp-pyarrow",
        pd.array(
            [pd.Timestamp("2024-01-01", tz="UTC"), None], dtype="timestamp[us, tz=UTC][pyarrow]"
        ),
        "timestamp with time zone",
        "datetime64[us, UTC]",
        [pd.Timestamp("2024-01-01", tz="UTC"), None],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_round_trip(case: Case, postgres: PostgresResource) -> None:
    frame = pd.DataFrame({"id": [1, 2], "value": case.values})
    upstream = frame_asset(frame, key=("types", "t"), metadata={"conflict_target": "id"})
    seen: dict[str, pd.DataFrame] = {}

    @asset(key=AssetKey(["types", "copy"]), ins={"t": AssetIn(key=AssetKey(["types", "t"]))})
    def copy(t: pd.DataFrame) -> None:
        seen["frame"] = t

    for expected_counts in ((2, 0), (0, 2)):  # materialized twice: inserted, then unchanged
        result = run_assets([upstream, copy], postgres)
        meta = written(result, ("types", "t"))
        assert (meta["rows_inserted"], meta["rows_unchanged"]) == expected_counts
    columns = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert columns["value"] == case.pg_type
    back = seen["frame"].sort_values("id")["value"]
    assert str(back.dtype) == case.dtype
    assert _na(back.tolist()) == _na(case.back)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (pd.array(["a\x00b", "c"], dtype="str"), "column 'value' holds text with a NUL byte"),
        (np.array([1 + 2j, 3j]), "column 'value' has dtype complex128"),
        (np.array([1, "x"], dtype=object), "column 'value' has dtype object"),
    ],
    ids=["nul-byte", "complex", "mixed-object"],
)
def test_unstorable_values_fail_naming_the_column(
    values: Any, message: str, postgres: PostgresResource
) -> None:
    frame = pd.DataFrame({"id": [1, 2], "value": values})
    result = run_assets(
        [frame_asset(frame, key=("types", "t"), metadata={"conflict_target": "id"})],
        postgres,
        raise_on_error=False,
    )
    assert message in failure_message(result)


def test_column_names_are_kept_exactly(postgres: PostgresResource) -> None:
    names = [
        "MixedCase",
        "with space",
        'quote"d',
        "it's",
        "ünïcødé ✓",
        "order",
        "user",
        "select",
        7,
    ]
    frame = pd.DataFrame([[1, *range(len(names) - 1)]], columns=["id", *names[:-1]])
    frame[names[-1]] = [3.5]
    upstream = frame_asset(frame, key=("types", "names"), metadata={"conflict_target": "id"})
    seen: dict[str, pd.DataFrame] = {}

    @asset(
        key=AssetKey(["types", "names_copy"]), ins={"t": AssetIn(key=AssetKey(["types", "names"]))}
    )
    def names_copy(t: pd.DataFrame) -> None:
        seen["frame"] = t

    for _ in range(2):
        meta = written(run_assets([upstream, names_copy], postgres), ("types", "names"))
    stored = [c.name for c in meta["dagster/column_schema"].columns]
    assert stored == ["id", *[str(n) for n in names]]
    assert list(seen["frame"].columns) == stored
    assert seen["frame"]["7"].tolist() == [3.5]
