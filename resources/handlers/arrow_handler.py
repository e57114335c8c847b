"""pyarrow, and anything that speaks Arrow's C stream interface: tables, record batches and
readers for a write; a read's decoded table with Arrow's own types (UUID and JSON extension
types, decimals of the column's precision, typed lists)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import Column
from ..errors import FrameError
from ..frame import ArrowFrame, failing_part_way, json_text
from ..types import numeric_digits

# Array element types read as typed Arrow lists (the rest stay JSON text).
_LIST_ELEMENTS: Mapping[str, tuple[pa.DataType, Callable[[Any], Any]]] = {
    "int2": (pa.int16(), int),
    "int4": (pa.int32(), int),
    "int8": (pa.int64(), int),
    "float4": (pa.float32(), float),  # NaN and ±Infinity arrive as JSON strings
    "float8": (pa.float64(), float),
    "bool": (pa.bool_(), bool),
    "text": (pa.large_string(), str),
    "varchar": (pa.large_string(), str),
}
# numeric(p, s) fits Arrow's decimal128 up to this precision.
_DECIMAL128_DIGITS = 38


class ArrowHandler:
    """Writes ``pyarrow.Table``, ``RecordBatch`` and ``RecordBatchReader``; reads
    ``pyarrow.Table``."""

    supported_types: tuple[type, ...] = (pa.Table, pa.RecordBatch, pa.RecordBatchReader)

    def to_arrow(self, obj: pa.Table | pa.RecordBatch | pa.RecordBatchReader) -> ArrowFrame:
        """The table as it is; a reader as a stream read once. Struct columns are sent as
        JSON (jsonb), as polars' Structs and pandas' dicts are."""
        if isinstance(obj, pa.RecordBatchReader):
            return stream(obj)
        if isinstance(obj, pa.RecordBatch):
            obj = pa.Table.from_batches([obj])
        structs = _structs(obj.schema)
        return ArrowFrame.from_table(_as_json(obj, structs), dict.fromkeys(structs, "jsonb"))

    def from_arrow(self, table: pa.Table, columns: Mapping[str, Column]) -> pa.Table:
        """The read's table, each column in the Arrow type closest to the stored one."""
        return arrow_table(table, columns)


class ArrowStreamHandler:
    """Writes any object with ``__arrow_c_stream__`` (DuckDB relations, nanoarrow streams,
    and other producers of Arrow's PyCapsule stream interface) as a stream read once."""

    supported_types: tuple[type, ...] = ()

    def accepts(self, obj: object) -> bool:
        """Whether ``obj`` offers an Arrow C stream."""
        return hasattr(obj, "__arrow_c_stream__")

    def to_arrow(self, obj: Any) -> ArrowFrame:
        """The stream, read once.

        Raises:
            FrameError: a stream of something other than a table's rows (a Series).
        """
        try:
            reader = pa.RecordBatchReader.from_stream(obj)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise FrameError(
                f"returned {type(obj).__name__}, whose Arrow stream is not a table ({exc}): "
                "return a DataFrame or a table (a Series: series.to_frame())"
            ) from exc
        return stream(reader)


def stream(reader: pa.RecordBatchReader) -> ArrowFrame:
    """A reader as a frame whose rows can be read once (struct columns as JSON); an error
    in making its batches (the user's code behind it) fails the write, naming the stream."""
    structs = _structs(reader.schema)

    def batches() -> Iterator[pa.RecordBatch]:
        made = failing_part_way(
            iter(reader), "the output's Arrow stream", "fix the code that makes its batches"
        )
        for batch in made:
            yield _as_json(batch, structs)

    return ArrowFrame(
        schema=_as_json(reader.schema.empty_table(), structs).schema,
        batches=batches,
        rows=None,
        replayable=False,
        text_as=dict.fromkeys(structs, "jsonb"),
    )


def _structs(schema: pa.Schema) -> list[str]:
    return [field.name for field in schema if pa.types.is_struct(field.type)]


def _as_json(table: Any, structs: list[str]) -> Any:
    """A table or record batch with its ``structs`` columns as JSON text (a NULL struct
    stays NULL)."""
    for name in structs:
        i = table.schema.get_field_index(name)
        text = [None if v is None else json_text(v, name) for v in table.column(i).to_pylist()]
        table = table.set_column(
            i, pa.field(name, pa.large_string()), pa.array(text, pa.large_string())
        )
    return table


def arrow_table(table: pa.Table, columns: Mapping[str, Column]) -> pa.Table:
    """A read's decoded table with Arrow's own types: ``uuid`` as the UUID extension type,
    ``json``/``jsonb`` as the JSON extension type, ``numeric(p, s)`` as ``decimal128(p, s)``,
    arrays of numbers, booleans and text as lists."""
    for i, (name, column) in enumerate(columns.items()):
        try:
            converted = _arrow_column(table.column(i), column)
        except ValueError as exc:
            raise ValueError(f"column {name!r}: {exc}") from exc
        if converted is not None:
            table = table.set_column(i, name, converted)
    return table


def _arrow_column(values: pa.ChunkedArray, column: Column) -> pa.ChunkedArray | None:
    pg_type = column.type
    if pg_type.array:
        return _list_column(values, column)
    if pg_type.name == "uuid":
        return _extension(values, pa.uuid())
    if pg_type.name in ("json", "jsonb"):
        return _extension(values, pa.json_(pa.large_string()))
    if pg_type.name == "numeric" and pg_type.modifier >= 0:
        precision, scale = numeric_digits(pg_type)
        if precision <= _DECIMAL128_DIGITS and scale >= 0:
            try:
                return pc.cast(values, pa.decimal128(precision, scale))
            except pa.ArrowInvalid as exc:  # NaN or ±Infinity, which Arrow's decimal lacks
                raise ValueError(f"{exc}; Arrow's decimal128 has no NaN or Infinity") from exc
    return None


def _extension(values: pa.ChunkedArray, extension: pa.BaseExtensionType) -> pa.ChunkedArray:
    return pa.chunked_array(
        [pa.ExtensionArray.from_storage(extension, chunk) for chunk in values.chunks],
        type=extension,
    )


def _list_column(values: pa.ChunkedArray, column: Column) -> pa.ChunkedArray | None:
    element = _LIST_ELEMENTS.get(column.type.name)
    if element is None:
        return None
    arrow_type, convert = element
    try:
        lists = [
            None if text is None else [None if v is None else convert(v) for v in json.loads(text)]
            for chunk in values.chunks
            for text in chunk.to_pylist()
        ]
    except TypeError as exc:  # an element that is itself a list
        raise ValueError(
            f"it holds an array of more than one dimension ({exc}), which polars and Arrow "
            "reads take as lists of one dimension only; pandas reads it as nested lists"
        ) from exc
    return pa.chunked_array([pa.array(lists, type=pa.large_list(arrow_type))])
