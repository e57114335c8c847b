"""polars (an optional extra): DataFrames and LazyFrames for a write, a LazyFrame streamed in
batches; a read's Arrow table as a polars DataFrame or LazyFrame, with no pandas between."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl
import pyarrow as pa

from ..catalog import Column
from ..errors import FrameError
from ..frame import ROWS_PER_CHUNK, ArrowFrame, TextAs, failing_part_way, source_failed
from .arrow_handler import arrow_table

if not hasattr(pl.LazyFrame, "collect_batches"):
    raise ImportError(f"polars {pl.__version__} is older than 1.34")


class PolarsHandler:
    """Writes ``polars.DataFrame`` and ``polars.LazyFrame``; reads either."""

    supported_types: tuple[type, ...] = (pl.DataFrame, pl.LazyFrame)

    def to_arrow(self, obj: pl.DataFrame | pl.LazyFrame) -> ArrowFrame:
        """A DataFrame as its Arrow table (no copy for most types); a LazyFrame as batches
        of its streaming engine's result, run again if the write is retried. Struct
        columns are sent as JSON (jsonb)."""
        try:
            # A LazyFrame's query may fail here already (a file it scans is missing).
            schema = obj.collect_schema()
        except Exception as exc:
            raise _query_failed(exc) from exc
        _refuse_unstorable(schema)
        text_as: dict[str, TextAs] = dict.fromkeys(_structs(schema), "jsonb")
        if isinstance(obj, pl.DataFrame):
            return ArrowFrame.from_table(_to_arrow(obj), text_as)
        lazy = obj
        try:
            first = lazy.head(0).collect()
        except Exception as exc:
            raise _query_failed(exc) from exc

        def batches() -> Iterator[pa.RecordBatch]:
            chunks = lazy.collect_batches(chunk_size=ROWS_PER_CHUNK)
            for chunk in failing_part_way(chunks, "the LazyFrame's query", _FIX_QUERY):
                yield from _to_arrow(chunk).to_batches()

        return ArrowFrame(
            schema=_to_arrow(first).schema, batches=batches, rows=None, text_as=text_as
        )

    def from_arrow(self, table: pa.Table, columns: Mapping[str, Column]) -> pl.DataFrame:
        """The read as a polars DataFrame: UUIDs as their text, JSON as text (polars has
        neither type), numeric(p, s) as Decimal, arrays as lists."""
        table = arrow_table(table, columns)
        for i, field in enumerate(table.schema):
            if isinstance(field.type, pa.BaseExtensionType):
                storage = table.column(i).cast(field.type.storage_type)
                if isinstance(field.type, pa.UuidType):
                    storage = _uuid_text(storage)
                table = table.set_column(i, field.name, storage)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame


class LazyPolarsHandler(PolarsHandler):
    """Reads ``polars.LazyFrame`` (the table read, then made lazy)."""

    def from_arrow(self, table: pa.Table, columns: Mapping[str, Column]) -> Any:
        """The read as a LazyFrame over the DataFrame read."""
        return super().from_arrow(table, columns).lazy()


_FIX_QUERY = "fix the query (LazyFrame.collect() shows the same error)"


def _query_failed(exc: Exception) -> FrameError:
    return source_failed("the LazyFrame's query", exc, _FIX_QUERY)


# polars dtypes without an Arrow type this package stores: to_arrow() gives Object columns
# as 8-byte pointers, and fails on 128-bit integers.
_UNSTORABLE = (pl.Object, pl.Int128, pl.UInt128)


def _refuse_unstorable(schema: pl.Schema) -> None:
    for name, dtype in schema.items():
        if isinstance(dtype, _UNSTORABLE) or dtype in _UNSTORABLE:
            raise FrameError(
                f"column {name!r} is polars {dtype}, which cannot be stored: convert it to a "
                "type in the README's type table (an Int128 to Decimal, an Object to String "
                "or Binary)"
            )


def _structs(schema: pl.Schema) -> list[str]:
    return [name for name, dtype in schema.items() if isinstance(dtype, pl.Struct)]


def _to_arrow(frame: pl.DataFrame) -> pa.Table:
    """The frame as Arrow, each Struct column as its JSON text (jsonb)."""
    _refuse_unstorable(frame.schema)
    structs = _structs(frame.schema)
    for name in structs:
        if _holds_non_finite(frame[name]):
            raise FrameError(
                f"column {name!r} is a Struct, stored as jsonb, and holds NaN or Infinity, "
                "which JSON has not (polars would write null): replace them first "
                "(fill_nan(None), or a value)"
            )
    if structs:
        frame = frame.with_columns(
            pl.when(pl.col(name).is_not_null()).then(pl.col(name).struct.json_encode())
            for name in structs
        )
    return frame.to_arrow()


def _holds_non_finite(values: pl.Series) -> bool:
    """Whether a float anywhere in ``values`` (within structs and lists) is NaN or ±Inf."""
    dtype = values.dtype
    if dtype.is_float():
        return bool((values.is_nan() | values.is_infinite()).any())
    if isinstance(dtype, pl.Struct):
        return any(_holds_non_finite(values.struct.field(f.name)) for f in dtype.fields)
    if isinstance(dtype, pl.List | pl.Array):
        return _holds_non_finite(values.explode())
    return False


def _uuid_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array(
        [
            pa.array(
                [None if v is None else str(uuid.UUID(bytes=v)) for v in chunk.to_pylist()],
                type=pa.large_string(),
            )
            for chunk in values.chunks
        ],
        type=pa.large_string(),
    )
