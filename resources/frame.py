"""The frame side of a write: a pandas DataFrame checked against the options, its Arrow
schema and the PostgreSQL type of each column, and its binary COPY data, chunk by chunk."""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import LargeStringEncoderBuilder
from pgpq.schema import Jsonb

from . import sql
from .errors import FrameError, WritePlanError
from .options import PartitionSlice, WritePlan
from .types import PgType, frame_type

# Rows converted and encoded at a time: big enough that per-chunk overhead vanishes, small
# enough that the encoded chunk (a few MB) is all the memory the COPY adds to the frame.
ROWS_PER_CHUNK = 65_536

# The staging table's extra column numbering the frame's rows, for duplicates="keep_first"
# and "keep_last". A frame may not have a column of this name.
ROW_NUMBER_COLUMN = "copy_upsert_row_number"


@dataclass(frozen=True)
class PreparedFrame:
    """A checked DataFrame (string column labels), the Arrow schema it is encoded with and
    the PostgreSQL type each column has in that encoding. Nothing is converted until
    :meth:`binary_copy_chunks` is iterated."""

    # The frame's columns, by name (taken once: each lookup in the frame builds a Series).
    series: Mapping[str, pd.Series]
    schema: pa.Schema
    types: Mapping[str, PgType]
    # Columns NULL in every row: their values carry no type, so any column type takes them.
    null_columns: frozenset[str]
    # Columns of dicts and lists, sent as JSON text.
    json_columns: frozenset[str]
    # Columns of decimal.Decimal values, sent as their text and cast to numeric on the
    # server: Arrow would give the whole column one scale and at most 76 digits, and has no
    # NaN or Infinity; numeric keeps each value's own digits.
    decimal_columns: frozenset[str] = frozenset()
    # The rows are already in the order of a one-column key (a scan, no copy).
    in_key_order: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in the frame's order."""
        return tuple(self.types)

    @property
    def rows(self) -> int:
        """The number of rows."""
        return len(next(iter(self.series.values()), ()))

    def batches(
        self, rows_per_chunk: int = ROWS_PER_CHUNK, *, numbered: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Convert the frame to Arrow one chunk of rows at a time, so that no second full copy
        of the data is ever held. ``numbered`` appends :data:`ROW_NUMBER_COLUMN`, each row's
        position in the frame."""
        schema = self._copy_schema(numbered)
        total = self.rows
        for start in range(0, total, rows_per_chunk):
            stop = min(start + rows_per_chunk, total)
            arrays = [
                _column_to_arrow(
                    _rows(self.series[field.name], start, stop), field, self._as_text(field.name)
                )
                for field in self.schema
            ]
            if numbered:
                arrays.append(pa.array(np.arange(start, stop, dtype=np.int64)))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _as_text(self, name: str) -> Callable[[Any], str] | None:
        if name in self.json_columns:
            return json.dumps
        if name in self.decimal_columns:
            return str
        return None

    def _copy_schema(self, numbered: bool) -> pa.Schema:
        if not numbered:
            return self.schema
        return self.schema.append(pa.field(ROW_NUMBER_COLUMN, pa.int64()))

    def binary_copy_chunks(
        self, rows_per_chunk: int = ROWS_PER_CHUNK, *, numbered: bool = False
    ) -> Iterator[tuple[int, bytes]]:
        """The frame as PostgreSQL binary COPY data, a chunk at a time, each with the number
        of rows it holds."""
        encoder = _encoder(self._copy_schema(numbered), self.json_columns)
        yield 0, encoder.write_header()
        for batch in self.batches(rows_per_chunk, numbered=numbered):
            yield batch.num_rows, encoder.write_batch(batch)
        yield 0, encoder.finish()


def prepare_frame(
    frame: pd.DataFrame, plan: WritePlan, partition: Sequence[PartitionSlice] = ()
) -> PreparedFrame:
    """Check the frame against the plan, and choose the Arrow type of every column and the
    PostgreSQL type its binary encoding carries, without converting the data yet. Duplicate
    keys are found on the server, so that no index of the keys is held in memory.

    Raises:
        FrameError: not a DataFrame, repeated or reserved column names, NULL keys, a dtype
            that cannot be stored.
        WritePlanError: an option names a column the frame lacks, or a name PostgreSQL
            cannot hold.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(
            f"expected a pandas DataFrame, got {type(frame).__name__}: return a DataFrame "
            "from the asset"
        )
    frame = _with_index_columns(frame)
    if not len(frame.columns):
        raise FrameError(
            f"the frame has no columns ({len(frame)} rows): return the columns to store; "
            "nothing was written"
        )
    frame = _checked_labels(frame, plan, partition)
    series = {str(name): column for name, column in frame.items()}
    fields: list[pa.Field] = []
    types: dict[str, PgType] = {}
    null_columns: set[str] = set()
    json_columns = {name for name, column in series.items() if _holds(column, dict | list)}
    decimal_columns = {name for name, column in series.items() if _holds(column, decimal.Decimal)}
    as_text = json_columns | decimal_columns
    inferred_types = _inferred_types(frame.drop(columns=list(as_text)) if as_text else frame)
    for name, column in series.items():
        if name in as_text:
            fields.append(pa.field(name, pa.large_string()))
            types[name] = PgType("jsonb" if name in json_columns else "numeric")
            continue
        inferred = inferred_types[name]
        # A frame without rows holds no value any column type could refuse.
        if pa.types.is_null(inferred) or not len(frame):
            null_columns.add(name)
        fields.append(pa.field(name, _encodable_type(name, column, inferred)))
        if isinstance(inferred, pa.UuidType):
            # The binary format of uuid is its 16 bytes, as pgpq writes fixed-size binary.
            types[name] = PgType("uuid")
    schema = pa.schema(fields)
    try:
        encoder_columns = _encoder(schema, frozenset(json_columns)).schema().columns
    except Exception as exc:
        raise FrameError(f"cannot encode the frame for COPY: {exc}") from exc
    for field, encoded_column in zip(schema, encoder_columns, strict=True):
        if field.name not in types:
            types[field.name] = _pg_type(field, encoded_column.data_type.ddl())
    key = plan.conflict_target
    return PreparedFrame(
        series=series,
        schema=schema,
        types={field.name: types[field.name] for field in schema},
        null_columns=frozenset(null_columns),
        json_columns=frozenset(json_columns),
        decimal_columns=frozenset(decimal_columns),
        in_key_order=len(key) == 1 and bool(series[key[0]].is_monotonic_increasing),
    )


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


def _checked_labels(
    frame: pd.DataFrame, plan: WritePlan, partition: Sequence[PartitionSlice]
) -> pd.DataFrame:
    """The frame with string labels, checked against the plan's columns."""
    names = [str(label) for label in frame.columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameError(f"column names {repeated} appear more than once: rename them")
    for name in names:
        sql.quote_ident(name)
    if names != list(frame.columns):
        frame = frame.set_axis(names, axis="columns")
    _require_columns(names, "conflict_target", plan.conflict_target)
    _require_columns(names, "update_columns", plan.update_columns or ())
    _require_columns(names, "partition_expr", [s.column for s in partition])
    for column in plan.conflict_target:
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise FrameError(
                f"conflict_target column {column!r} has {nulls} NULL value(s); a key cannot be "
                "NULL: fill or drop those rows"
            )
    if plan.conflict_target and plan.duplicates != "error" and ROW_NUMBER_COLUMN in names:
        raise FrameError(
            f"column name {ROW_NUMBER_COLUMN!r} is reserved for resolving duplicate keys: "
            "rename the column"
        )
    return frame


def _require_columns(names: Sequence[str], option: str, wanted: Iterable[str]) -> None:
    missing = [column for column in wanted if column not in names]
    if missing:
        raise WritePlanError(
            f"{option} names column(s) {missing} that the frame does not have; "
            f"the frame's columns are {list(names)}: return those columns, or fix the "
            f"asset's '{option}' metadata"
        )


def _encoder(schema: pa.Schema, json_columns: frozenset[str]) -> ArrowToPostgresBinaryEncoder:
    if not json_columns:
        return ArrowToPostgresBinaryEncoder(schema)
    builders = {
        field.name: LargeStringEncoderBuilder.new_with_output(field, Jsonb())
        if field.name in json_columns
        else ArrowToPostgresBinaryEncoder.infer_encoder(field)
        for field in schema
    }
    return ArrowToPostgresBinaryEncoder.new_with_encoders(schema, builders)


def _rows(column: pd.Series, start: int, stop: int) -> pd.Series:
    """Rows [start, stop) of a column; the column itself when that is all of it (slicing
    costs more than converting a small frame)."""
    return column if start == 0 and stop == len(column) else column.iloc[start:stop]


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
    return {field.name: field.type for field in schema}


def _encodable_type(name: str, column: pd.Series, arrow_type: pa.DataType) -> pa.DataType:
    """The closest type PostgreSQL's binary format (through pgpq) can carry."""
    if isinstance(arrow_type, pa.ExtensionType):
        return _encodable_type(name, column, arrow_type.storage_type)
    if pa.types.is_dictionary(arrow_type):
        return _encodable_type(name, column, arrow_type.value_type)
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns":
        # PostgreSQL keeps microseconds; finer digits are rounded down (see the README).
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_duration(arrow_type) and arrow_type.unit == "ns":
        return pa.duration("us")
    if pa.types.is_date64(arrow_type):
        return pa.date32()
    if pa.types.is_float16(arrow_type):
        return pa.float32()
    if pa.types.is_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.large_string()
    if pa.types.is_null(arrow_type):
        # Every value is NULL, so the encoded type never reaches the wire.
        return pa.large_string()
    return arrow_type


def _pg_type(field: pa.Field, encoded_as: str | None) -> PgType:
    if encoded_as is None or encoded_as.startswith("userdefined"):
        raise FrameError(
            f"column {field.name!r} has Arrow type {field.type}, which cannot be stored: "
            "convert the column to a supported dtype (see the README's type table)"
        )
    zoned = pa.types.is_timestamp(field.type) and field.type.tz is not None
    return frame_type(encoded_as, zoned=zoned)


def _column_to_arrow(
    column: pd.Series, field: pa.Field, as_text: Callable[[Any], str] | None
) -> pa.Array:
    try:
        if as_text is not None:
            array = pa.array(
                [as_text(v) if _present(v) else None for v in column], type=pa.large_string()
            )
        else:
            array = pa.array(column, from_pandas=True)
        if isinstance(array.type, pa.ExtensionType):
            array = array.storage
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_timestamp(array.type) and array.type.unit == "ns":
            # Round down to whole microseconds, before and after 1970 alike.
            array = pc.floor_temporal(array, unit="microsecond")
        if array.type != field.type:
            array = pc.cast(
                array,
                options=pc.CastOptions(target_type=field.type, allow_time_truncate=True),
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as exc:
        raise FrameError(
            f"column {field.name!r} (dtype {column.dtype}) holds a value that cannot be stored "
            f"as {field.type}: {exc}"
        ) from exc
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if (
        pa.types.is_large_string(array.type)
        and as_text is None
        and pc.any(pc.match_substring(array, "\x00")).as_py()
    ):
        raise FrameError(
            f"column {field.name!r} holds text with a NUL byte (\\x00), which PostgreSQL text "
            "cannot store: remove it, or store the column as bytes"
        )
    return array


def _present(value: Any) -> bool:
    """Not a missing value. Decimal('NaN') is a value (numeric has NaN), though pandas counts
    it missing."""
    if value is None or isinstance(value, dict | list | decimal.Decimal):
        return value is not None
    return not bool(pd.isna(value))
