"""pandas → Arrow → PostgreSQL binary COPY, chunk by chunk, and the way back for reads."""

from __future__ import annotations

import asyncio
import decimal
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import LargeStringEncoderBuilder
from pgpq.schema import Jsonb

from .errors import FrameError

# Rows converted and encoded at a time: big enough that per-chunk overhead vanishes, small
# enough that the encoded chunk (a few MB) is all the memory the COPY adds to the frame.
ROWS_PER_CHUNK = 65_536

# The staging table's extra column numbering the frame's rows, for duplicates="keep_first"
# and "keep_last". A frame may not have a column of this name.
ROW_NUMBER_COLUMN = "copy_upsert_row_number"


@dataclass(frozen=True)
class ArrowFrame:
    """A DataFrame with the Arrow schema it is encoded with and the PostgreSQL type of each
    column in that encoding."""

    frame: pd.DataFrame
    schema: pa.Schema
    pg_types: Mapping[str, str]
    # Columns NULL in every row: their values carry no type, so any column type takes them.
    null_columns: frozenset[str]
    # Columns of dicts and lists, sent as JSON text.
    json_columns: frozenset[str]

    def batches(
        self, rows_per_chunk: int = ROWS_PER_CHUNK, *, numbered: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """Convert the frame to Arrow one chunk of rows at a time, so that no second full copy
        of the data is ever held. ``numbered`` appends :data:`ROW_NUMBER_COLUMN`, each row's
        position in the frame."""
        schema = self._copy_schema(numbered)
        for start in range(0, len(self.frame), rows_per_chunk):
            chunk = self.frame.iloc[start : start + rows_per_chunk]
            arrays = [
                _column_to_arrow(chunk.iloc[:, i], field, field.name in self.json_columns)
                for i, field in enumerate(self.schema)
            ]
            if numbered:
                arrays.append(pa.array(np.arange(start, start + len(chunk), dtype=np.int64)))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

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


def prepare_frame(frame: pd.DataFrame) -> ArrowFrame:
    """Choose the Arrow type of every column and the PostgreSQL type its binary encoding
    carries, without converting the data yet.

    Raises:
        FrameError: a column has a dtype that cannot be stored.
    """
    fields: list[pa.Field] = []
    pg_types: dict[str, str] = {}
    null_columns: set[str] = set()
    json_columns: set[str] = set()
    for i, label in enumerate(frame.columns):
        name, column = str(label), frame.iloc[:, i]
        if _holds_json(column):
            fields.append(pa.field(name, pa.large_string()))
            pg_types[name] = "jsonb"
            json_columns.add(name)
            continue
        inferred = _inferred_type(name, column)
        if pa.types.is_null(inferred):
            null_columns.add(name)
        arrow_type = _encodable_type(name, column, inferred)
        fields.append(pa.field(name, arrow_type))
        if isinstance(inferred, pa.UuidType):
            # The binary format of uuid is its 16 bytes, as pgpq writes fixed-size binary.
            pg_types[name] = "uuid"
    schema = pa.schema(fields)
    try:
        encoded = _encoder(schema, frozenset(json_columns)).schema().columns
    except Exception as exc:
        raise FrameError(f"cannot encode the frame for COPY: {exc}") from exc
    for field, encoded_column in zip(schema, encoded, strict=True):
        pg_types.setdefault(field.name, _pg_type(field, encoded_column.data_type.ddl()))
    return ArrowFrame(
        frame=frame,
        schema=schema,
        pg_types={field.name: pg_types[field.name] for field in schema},
        null_columns=frozenset(null_columns),
        json_columns=frozenset(json_columns),
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


def _holds_json(column: pd.Series) -> bool:
    """An object column whose values are dicts or lists: stored as jsonb."""
    if column.dtype != object:
        return False
    present = column.notna().to_numpy()
    # By position: the index may repeat labels.
    return bool(present.any()) and isinstance(column.iloc[int(present.argmax())], dict | list)


def _inferred_type(name: str, column: pd.Series) -> pa.DataType:
    try:
        inferred = pa.Schema.from_pandas(column.to_frame(name=name), preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise FrameError(
            f"column {name!r} has dtype {column.dtype}, whose values cannot be stored ({exc}): "
            "convert the column to a supported dtype (see the README's type table)"
        ) from exc
    return inferred.field(0).type


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


def _pg_type(field: pa.Field, encoded_as: str | None) -> str:
    if encoded_as is None or encoded_as.startswith("userdefined"):
        raise FrameError(
            f"column {field.name!r} has Arrow type {field.type}, which cannot be stored: "
            "convert the column to a supported dtype (see the README's type table)"
        )
    if pa.types.is_timestamp(field.type) and field.type.tz is not None:
        # pgpq names every timestamp TIMESTAMP; the binary format of timestamptz is the same
        # UTC microsecond count, so a zoned column is declared as what it is.
        return "timestamptz"
    return encoded_as.lower()


def _column_to_arrow(column: pd.Series, field: pa.Field, as_json: bool) -> pa.Array:
    try:
        if as_json:
            array = pa.array(
                [None if _missing(v) else json.dumps(v) for v in column], type=pa.large_string()
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
        and not as_json
        and pc.any(pc.match_substring(array, "\x00")).as_py()
    ):
        raise FrameError(
            f"column {field.name!r} holds text with a NUL byte (\\x00), which PostgreSQL text "
            "cannot store: remove it, or store the column as bytes"
        )
    return array


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, dict | list) and bool(pd.isna(value)))


# ---- reads --------------------------------------------------------------------------------------

# PostgreSQL type (as format_type() prints it) → Arrow type for reading COPY ... (FORMAT csv).
# Anything not listed is read as text.
_READ_TYPES: Mapping[str, pa.DataType] = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "text": pa.large_string(),
    # Sent as microseconds by _sql.read_expression.
    "interval": pa.int64(),
}


def _json(text: str) -> Any:
    return json.loads(text)


# Types whose text form becomes a Python object per value (see the README's type table).
_FROM_TEXT: Mapping[str, Any] = {
    "numeric": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytea": bytes.fromhex,  # sent as hex by _sql.read_expression
    "json": _json,
    "jsonb": _json,
}

_NULLABLE_PANDAS = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


# CSV received before a piece of whole rows is handed to Arrow: large enough for Arrow's
# parallel parse, small enough that parsing keeps pace with the server.
CSV_PIECE_BYTES = 1 << 22


class CsvDecoder:
    """Decodes ``COPY ... TO STDOUT (FORMAT csv)`` output while it arrives: each piece of
    whole rows is parsed by Arrow in a worker thread while the server sends the next.

    Nullable integer and boolean columns come back as pandas' nullable dtypes, so that NULL
    does not turn them into floats or objects; NOT NULL ones as plain numpy dtypes.
    """

    def __init__(self, columns: Mapping[str, tuple[str, bool]]) -> None:
        """``columns``: column name → (PostgreSQL type, column is NOT NULL), in COPY order."""
        self.columns = columns
        self.types = {
            name: _READ_TYPES.get(pg_type, pa.large_string())
            for name, (pg_type, _) in columns.items()
        }
        self.pending = bytearray()
        # Where the last whole row in `pending` ends, and whether its end is inside quotes.
        self.row_end = 0
        self.in_quotes = False
        self.pieces: list[asyncio.Future[pa.Table]] = []

    async def feed(self, data: bytes) -> None:
        """Take the next bytes of the COPY output (asyncpg's ``output`` callback)."""
        offset = len(self.pending)
        self.pending += data
        # A row ends at a line end outside quotes. PostgreSQL quotes every value holding a
        # line break, and quotes come in pairs, so "outside" is an even count of quotes.
        if b'"' not in data:
            last = data.rfind(b"\n")
            if last >= 0 and not self.in_quotes:
                self.row_end = offset + last + 1
        else:
            raw = np.frombuffer(data, dtype=np.uint8)
            # uint8 wraps at 256, which keeps the parity.
            quotes = np.cumsum(raw == ord('"'), dtype=np.uint8) + np.uint8(self.in_quotes)
            ends = np.flatnonzero((raw == ord("\n")) & (quotes % 2 == 0))
            if len(ends):
                self.row_end = offset + int(ends[-1]) + 1
            self.in_quotes = bool(quotes[-1] % 2)
        if self.row_end >= CSV_PIECE_BYTES:
            self._parse(bytes(self.pending[: self.row_end]))
            del self.pending[: self.row_end]
            self.row_end = 0

    async def frame(self, rows: int) -> pd.DataFrame:
        """The DataFrame, once the COPY has reported ``rows`` rows."""
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
        return pd.DataFrame(
            {
                name: _to_pandas(table.column(name), pg_type, not_null)
                for name, (pg_type, not_null) in self.columns.items()
            }
        )

    async def close(self) -> None:
        """Wait for pieces still being parsed (after a failed COPY), ignoring their results."""
        await asyncio.gather(*self.pieces, return_exceptions=True)

    def _parse(self, piece: bytes) -> None:
        self.pieces.append(asyncio.ensure_future(asyncio.to_thread(self._read_csv, piece)))

    def _read_csv(self, piece: bytes) -> pa.Table:
        # Arrow splits a piece into blocks at line ends to parse them in parallel, which is
        # only right when no value holds a line break, and only quoted values can. Even told
        # so, Arrow drops the "\n" of a quoted "\r\n" that straddles two of its blocks
        # (pyarrow 26): a piece with quotes is parsed as one block.
        quoted = b'"' in piece
        return pa_csv.read_csv(
            io.BytesIO(piece),
            read_options=pa_csv.ReadOptions(
                column_names=list(self.columns),
                block_size=min(len(piece) + 1, 2**31 - 1) if quoted else None,
            ),
            # A one-column row holding NULL is an empty line.
            parse_options=pa_csv.ParseOptions(newlines_in_values=quoted, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=self.types,
                # COPY writes NULL unquoted and the empty string quoted.
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )


def _base_type(pg_type: str) -> str:
    """``numeric(10,2)`` → ``numeric``."""
    return pg_type.split("(", 1)[0]


def _to_pandas(column: pa.ChunkedArray, pg_type: str, not_null: bool) -> pd.Series:
    if pg_type == "interval":
        return pd.Series(pd.to_timedelta(column.to_pandas(), unit="us"))
    parse = _FROM_TEXT.get(_base_type(pg_type)) or (_json if pg_type.endswith("[]") else None)
    if parse is not None:
        return pd.Series(
            [None if v is None else parse(v) for v in column.to_pylist()], dtype=object
        )
    nullable_dtype = _NULLABLE_PANDAS.get(column.type)
    if nullable_dtype is not None and not not_null:
        return pd.Series(column.to_pandas(types_mapper={column.type: nullable_dtype}.get))
    return pd.Series(column.to_pandas())
