"""pandas: DataFrames to Arrow for a write (index levels, object columns of dicts, lists,
Decimals and UUIDs), and a read's Arrow table to a DataFrame (nullable dtypes, Decimals,
UUIDs, parsed JSON)."""

from __future__ import annotations

import decimal
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from types import UnionType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..catalog import Column
from ..errors import FrameError
from ..frame import (
    ROWS_PER_CHUNK,
    ArrowFrame,
    InMemoryRows,
    TextAs,
    json_text,
    refuse_repeated_names,
)
from ..types import read_type


class PandasHandler:
    """Writes and reads ``pandas.DataFrame``."""

    supported_types: tuple[type, ...] = (pd.DataFrame,)

    def to_arrow(self, obj: pd.DataFrame) -> ArrowFrame:
        """The frame as Arrow, converted a chunk of rows at a time as the COPY asks."""
        frame = _with_index_columns(obj)
        names = [str(label) for label in frame.columns]
        refuse_repeated_names(names)
        if names != list(frame.columns):
            frame = frame.set_axis(names, axis="columns")
        series = {str(n): c for n, c in frame.items()}
        text_as: dict[str, TextAs] = {}
        for name, column in series.items():
            if _holds(column, dict | list):
                text_as[name] = "jsonb"
            elif _holds(column, decimal.Decimal):
                text_as[name] = "numeric"
        inferred = _inferred_types(frame.drop(columns=list(text_as)) if text_as else frame)
        schema = pa.schema(
            [pa.field(n, pa.large_string() if n in text_as else inferred[n]) for n in names]
        )

        def batches(order: np.ndarray | None = None) -> Iterator[pa.RecordBatch]:
            """Every row, or the rows at ``order``'s positions, a chunk at a time."""
            total = len(frame) if order is None else len(order)
            for start in range(0, total, ROWS_PER_CHUNK):
                stop = min(start + ROWS_PER_CHUNK, total)
                rows = slice(start, stop) if order is None else order[start:stop]
                yield pa.RecordBatch.from_arrays(
                    [
                        _column_to_arrow(_rows(series[f.name], rows), f, text_as.get(f.name))
                        for f in schema
                    ],
                    schema=schema,
                )

        def columns(names: Sequence[str]) -> pa.Table:
            fields = [schema.field(name) for name in names]
            return pa.table({f.name: _column_to_arrow(series[f.name], f, None) for f in fields})

        return ArrowFrame(
            schema=schema,
            batches=batches,
            rows=len(frame),
            text_as=text_as,
            ascending=lambda name: bool(series[name].is_monotonic_increasing),
            null_count=lambda name: int(series[name].isna().sum()),
            in_memory=InMemoryRows(columns=columns, rows_at=batches),
        )

    def from_arrow(self, table: pa.Table, columns: Mapping[str, Column]) -> pd.DataFrame:
        """The DataFrame for a read's decoded ``table`` of the catalog's ``columns``.

        Nullable integer and boolean columns come back as pandas' nullable dtypes, so that
        NULL does not turn them into floats or objects; NOT NULL ones as plain numpy dtypes.
        """
        frame = {}
        for name, column in columns.items():
            try:
                frame[name] = _to_pandas(table.column(name), column)
            except ValueError as exc:  # pyarrow's ArrowInvalid included
                raise ValueError(f"column {name!r}: {exc}") from exc
            # Drop each Arrow column once converted, so the table and the frame never both
            # hold every column.
            table = table.drop_columns([name])
        # The columns are the frame's own: no copy of them into one block per dtype.
        return pd.DataFrame(frame, index=pd.RangeIndex(table.num_rows), copy=False)


# ---- write --------------------------------------------------------------------------------------


def _with_index_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its named index levels as leading columns, as ``reset_index()`` adds
    them; unnamed levels (a default RangeIndex among them) are dropped."""
    if isinstance(frame.columns, pd.MultiIndex):
        raise FrameError(
            f"the frame's columns are a MultiIndex ({list(frame.columns)[:3]}...), which has no "
            "column names to store: flatten it first, e.g. frame.columns = "
            "['_'.join(filter(None, map(str, c))) for c in frame.columns]"
        )
    named = [name for name in frame.index.names if name is not None]
    if not named:
        return frame
    clashes = [str(name) for name in named if str(name) in {str(c) for c in frame.columns}]
    if clashes:
        raise FrameError(
            f"index level {clashes[0]!r} has the name of a column, and named index levels are "
            "stored as columns: rename one of them, or drop the index with "
            "reset_index(drop=True)"
        )
    return frame.reset_index(level=named)


def _rows(column: pd.Series, rows: slice | np.ndarray) -> pd.Series:
    """Some rows of a column (a slice, or positions); the column itself when the slice is
    all of it (slicing costs more than converting a small frame)."""
    whole = isinstance(rows, slice) and rows.start == 0 and rows.stop == len(column)
    return column if whole else column.iloc[rows]


def _holds(column: pd.Series, kind: type | UnionType) -> bool:
    """An object column whose first present value is of ``kind`` (dicts and lists: jsonb;
    Decimals: numeric)."""
    if column.dtype != object:
        return False
    # Stops at the first present value, usually the first row.
    first = next((value for value in column.array if _present(value)), None)
    return isinstance(first, kind)


_INFERENCE_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _inferred_types(frame: pd.DataFrame) -> dict[str, pa.DataType]:
    """Arrow's type for every column, inferred in one pass; when that fails, column by
    column, to name the one that cannot be stored."""
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=False)
    except _INFERENCE_ERRORS:
        for name in frame.columns:
            try:
                pa.Schema.from_pandas(frame[[name]], preserve_index=False)
            except _INFERENCE_ERRORS as exc:
                raise FrameError(
                    f"column {name!r} has dtype {frame[name].dtype}, whose values cannot be "
                    f"stored ({exc}): convert the column to a supported dtype (see the "
                    "README's type table)"
                ) from exc
        raise
    return dict(zip(frame.columns, schema.types, strict=True))


def _column_to_arrow(column: pd.Series, field: pa.Field, text_as: TextAs | None) -> pa.Array:
    if text_as == "jsonb":
        return pa.array([_json(v, field.name) for v in column], type=pa.large_string())
    try:
        if text_as is not None:
            array = pa.array([str(v) if _present(v) else None for v in column], pa.large_string())
        else:
            array = pa.array(column, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if array.type != field.type and not pa.types.is_null(array.type):
            array = array.cast(field.type)
    except (*_INFERENCE_ERRORS, TypeError) as exc:
        raise FrameError(
            f"column {field.name!r} (dtype {column.dtype}) holds a value that cannot be stored "
            f"as {field.type}: {exc}"
        ) from exc
    return array


def _json(value: Any, column: str) -> str | None:
    """A dict or list as its JSON text; a missing value stays NULL."""
    return json_text(value, column) if _present(value) else None


def _present(value: Any) -> bool:
    """Not a missing value. Decimal('NaN') is a value (numeric has NaN), though pandas counts
    it missing."""
    if value is None or isinstance(value, dict | list | decimal.Decimal | np.ndarray):
        return value is not None
    return not bool(pd.isna(value))


# ---- read ---------------------------------------------------------------------------------------

_NULLABLE_PANDAS: Mapping[pa.DataType, Any] = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

# Types whose text or bytes become one Python object per value.
_TO_PYTHON: Mapping[str, Callable[[Any], Any]] = {
    "decimal": decimal.Decimal,
    "uuid": lambda value: uuid.UUID(bytes=value),
    "json": json.loads,
    # numeric[] travels as JSON numbers: parsed as Decimals, every digit kept.
    "json_decimal": partial(json.loads, parse_float=decimal.Decimal, parse_int=decimal.Decimal),
    "json_float": lambda value: _floats(json.loads(value), float),
    # real's shortest text, read as a double, is not the float32 it stands for.
    "json_real": lambda value: _floats(json.loads(value), lambda v: float(np.float32(v))),
}


def _floats(value: Any, convert: Callable[[Any], float]) -> Any:
    """A float array's JSON as floats: "NaN" and "Infinity" are strings there, and 2.0 is 2."""
    if isinstance(value, list):
        return [_floats(v, convert) for v in value]
    return None if value is None else convert(value)


def _to_pandas(column: pa.ChunkedArray, stored: Column) -> pd.Series:
    decode = read_type(stored.type).decode
    if decode == "nullable" and not stored.not_null:
        mapper = {column.type: _NULLABLE_PANDAS[column.type]}.get
        return pd.Series(column.to_pandas(types_mapper=mapper))
    if decode == "time":
        return pd.Series(column.to_pandas(), dtype=object)
    parse = _TO_PYTHON.get(decode)
    if parse is not None:
        values = [None if v is None else parse(v) for c in column.chunks for v in c.to_pylist()]
        return pd.Series(values, dtype=object)
    return pd.Series(column.to_pandas())
