"""Read a table into a pandas DataFrame: ``COPY (SELECT ...) TO STDOUT`` in the text format,
parsed by Arrow piece by piece while the server sends the rest.

How each column travels and what it comes back as is :func:`types.read_type`'s choice; this
module runs the query and turns the text into the frame (:class:`TextDecoder`).
"""

from __future__ import annotations

import asyncio
import binascii
import decimal
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from . import sql
from .catalog import Column, read_catalog, restore_settings
from .errors import TableMismatchError, TableNotFoundError
from .options import PartitionSlice
from .sql import partition_filter, qualified, quote_ident
from .types import PgType, read_type

__all__ = ["TextDecoder", "read_frame"]


async def read_frame(
    driver: asyncpg.Connection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
) -> pd.DataFrame:
    """Read ``schema.table`` (only ``columns``, only the ``partition`` slice) into a DataFrame,
    in a read-only transaction of its own (a savepoint inside the caller's).

    The rows travel as ``COPY (SELECT ...) TO STDOUT`` and are decoded by Arrow with the
    table's column types, so integers stay integers (nullable ones as ``Int64``) and
    ``timestamptz`` comes back tz-aware in UTC.

    Raises:
        TableMismatchError: the table or a requested column does not exist.
    """
    nested = driver.is_in_transaction()
    async with driver.transaction(readonly=True):
        catalog = await read_catalog(driver, schema, table)
        if catalog.table is None:
            raise TableNotFoundError(
                f"table {schema}.{table} does not exist: materialize the asset that writes it first"
            )
        stored = catalog.table.columns
        names = [columns] if isinstance(columns, str) else list(columns or stored)
        missing = [name for name in names if name not in stored]
        if missing:
            raise TableMismatchError(
                f"columns {missing} are not in table {schema}.{table}, which has "
                f"{list(stored)}: ask for columns it has (the input's 'columns' metadata)"
            )
        selected = {name: stored[name] for name in names}
        query, params = read_query(schema, table, selected, partition, stored)
        decoder = TextDecoder(selected)
        try:
            status = await driver.copy_from_query(query, *params, output=decoder.feed)
        except BaseException:
            await decoder.close()
            raise
        if nested:
            await restore_settings(driver, catalog)
    try:
        return await decoder.frame(rows=sql.affected(status))
    except pa.ArrowInvalid as exc:
        # A value PostgreSQL stores but pandas cannot hold (a date after 9999, BC).
        raise TableMismatchError(
            f"table {schema}.{table} holds a value that cannot be read as its column's type "
            f"says ({exc}): read the other columns (the input's 'columns' metadata), or "
            "convert the values in the table"
        ) from exc


def read_query(
    schema: str,
    table: str,
    selected: Mapping[str, Column],
    partition: Sequence[PartitionSlice],
    stored: Mapping[str, Column],
) -> tuple[str, list[Any]]:
    """The ``SELECT`` a read copies out, and its parameters: the ``selected`` columns as they
    travel in COPY, the rows of the ``partition`` slice (its columns among ``stored``)."""
    where, params = partition_filter(partition, {n: c.type for n, c in stored.items()})
    select = read_select([(name, column.type) for name, column in selected.items()])
    query = f"SELECT {select} FROM {qualified(schema, table)} AS t"
    if where:
        query += f" WHERE {where}"
    return query, params


def read_select(columns: Sequence[tuple[str, PgType]]) -> str:
    """The select list of a read: each column as ``types.read_type`` says it travels in
    ``COPY (SELECT ...) TO STDOUT``, named as the column."""
    parts = []
    for name, pg_type in columns:
        col = f"t.{quote_ident(name)}"
        select = read_type(pg_type).select
        parts.append(
            col if select == "{}" else f"{select.replace('{}', col)} AS {quote_ident(name)}"
        )
    return ", ".join(parts)


# ---- decoding -----------------------------------------------------------------------------------

# COPY output received before a piece of whole rows is handed to Arrow: large enough to be
# worth a worker thread, small enough that parsing keeps pace with the server.
PIECE_BYTES = 1 << 22

# Arrow cuts what it parses into blocks, and a row must not straddle two: each piece is one
# block, as large as the piece (a single row of a huge value included).
_MAX_BLOCK_BYTES = 2**31 - 1

# COPY's text format writes these characters of a value as escapes. PostgreSQL text never
# holds NUL, so NUL stands in for an escaped backslash while the others are undone.
_ESCAPES = (
    ("\\\\", "\x00"),
    ("\\n", "\n"),
    ("\\r", "\r"),
    ("\\t", "\t"),
    ("\\b", "\b"),
    ("\\f", "\f"),
    ("\\v", "\v"),
    ("\x00", "\\"),
)

_NULLABLE_PANDAS: Mapping[pa.DataType, Any] = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

# PostgreSQL's time holds 24:00:00, which datetime.time cannot: it reads as time.max.
_LAST_MICROSECOND_OF_DAY = 86_400_000_000 - 1

# Types whose text becomes one Python object per value.
_FROM_TEXT: Mapping[str, Callable[[str], Any]] = {
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "json": json.loads,
    # numeric[] travels as JSON numbers: parsed as Decimals, every digit kept.
    "json_decimal": partial(json.loads, parse_float=decimal.Decimal, parse_int=decimal.Decimal),
}


class TextDecoder:
    """Decodes ``COPY ... TO STDOUT`` output (text format) while it arrives: each piece of
    whole rows is parsed by Arrow in a worker thread while the server sends the next.

    The text format writes a line break inside a value as an escape, so every line end ends
    a row. Each column is parsed and converted as :func:`types.read_type` says. Nullable
    integer and boolean columns come back as pandas' nullable dtypes, so that NULL does not
    turn them into floats or objects; NOT NULL ones as plain numpy dtypes.
    """

    def __init__(self, columns: Mapping[str, Column]) -> None:
        """``columns``: the catalog's columns, in COPY order."""
        self.columns = dict(columns)
        self.types = {name: read_type(column.type).arrow for name, column in columns.items()}
        self.pending = bytearray()
        self.pieces: list[asyncio.Future[pa.Table]] = []

    async def feed(self, data: bytes) -> None:
        """Take the next bytes of the COPY output (asyncpg's ``output`` callback)."""
        if not self.pending and len(data) >= PIECE_BYTES and data.endswith(b"\n"):
            # Whole rows and nothing before them (a huge row comes as one message): no copy.
            self._parse(bytes(data))
            return
        self.pending += data
        if len(self.pending) >= PIECE_BYTES and (end := self.pending.rfind(b"\n") + 1):
            with memoryview(self.pending) as view:
                piece = bytes(view[:end])
            del self.pending[:end]
            self._parse(piece)

    async def frame(self, rows: int) -> pd.DataFrame:
        """The DataFrame, once the COPY has reported ``rows`` rows."""
        if not self.columns:
            # COPY sends an empty line for each row, and Arrow needs a column to count them.
            return pd.DataFrame(index=pd.RangeIndex(rows))
        if self.pending:
            self._parse(bytes(self.pending))
            self.pending.clear()
        tables = await asyncio.gather(*self.pieces, return_exceptions=True)
        for failure in tables:
            if isinstance(failure, BaseException):
                raise failure
        if tables:
            table = pa.concat_tables(tables)
        else:
            table = pa.table({name: pa.array([], type=t) for name, t in self.types.items()})
        if table.num_rows != rows:
            raise RuntimeError(f"decoded {table.num_rows} rows of the {rows} that COPY sent")
        frame = {}
        for name, column in self.columns.items():
            frame[name] = _to_pandas(table.column(name), column)
            # Drop each Arrow column once converted, so the table and the frame never both
            # hold every column.
            table = table.drop_columns([name])
        return pd.DataFrame(frame)

    async def close(self) -> None:
        """Wait for pieces still being parsed (after a failed COPY), ignoring their results."""
        await asyncio.gather(*self.pieces, return_exceptions=True)

    def _parse(self, piece: bytes) -> None:
        if self.columns:
            self.pieces.append(asyncio.ensure_future(asyncio.to_thread(self._read, piece)))

    def _read(self, piece: bytes) -> pa.Table:
        table = pa_csv.read_csv(
            pa.BufferReader(piece),
            read_options=pa_csv.ReadOptions(
                column_names=list(self.columns),
                block_size=min(len(piece) + 1, _MAX_BLOCK_BYTES),
            ),
            # A one-column row holding the empty string is an empty line.
            parse_options=pa_csv.ParseOptions(
                delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=self.types,
                null_values=["\\N"],
                strings_can_be_null=True,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        for index, column_type in enumerate(table.schema.types):
            if column_type == pa.large_string():
                table = table.set_column(index, table.field(index), _unescape(table.column(index)))
        return table


def _unescape(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Undo COPY's text-format escapes (``\\n``, ``\\\\``, ...) in a column of text."""
    if not pc.any(pc.match_substring(column, "\\")).as_py():
        return column
    for escape, character in _ESCAPES:
        column = pc.replace_substring(column, escape, character)
    return column


def _to_pandas(column: pa.ChunkedArray, stored: Column) -> pd.Series:
    """The pandas column a read returns for one parsed CSV column."""
    decode = read_type(stored.type).decode
    if decode == "nullable" and not stored.not_null:
        mapper = {column.type: _NULLABLE_PANDAS[column.type]}.get
        return pd.Series(column.to_pandas(types_mapper=mapper))
    if decode == "micros_interval":
        return pd.Series(pc.cast(column, pa.duration("us")).to_pandas())
    if decode == "micros_time":
        capped = pc.min_element_wise(
            column, pa.scalar(_LAST_MICROSECOND_OF_DAY, pa.int64()), skip_nulls=False
        )
        return pd.Series(pc.cast(capped, pa.time64("us")).to_pandas(), dtype=object)
    if decode == "hex":
        return pd.Series([v for chunk in column.chunks for v in _unhex(chunk)], dtype=object)
    parse = _FROM_TEXT.get(decode)
    if parse is not None:
        values = [None if v is None else parse(v) for c in column.chunks for v in c.to_pylist()]
        return pd.Series(values, dtype=object)
    return pd.Series(column.to_pandas())


def _unhex(array: pa.LargeStringArray) -> list[bytes | None]:
    """Decode hex text to bytes straight from Arrow's buffer, with no Python str of each
    value (twice the size of the bytes) in between."""
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ].tolist()
    data = memoryview(data_buffer if data_buffer is not None else b"")
    valid = array.is_valid().to_pylist()
    return [
        binascii.a2b_hex(data[start:stop]) if ok else None
        for start, stop, ok in zip(offsets, offsets[1:], valid, strict=False)
    ]
