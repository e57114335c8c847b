"""The frame side of a write, in Arrow only: the rows a handler (:mod:`resources.handlers`)
made of the asset's DataFrame, checked against the options, the PostgreSQL type of each
column, and its binary COPY data, chunk by chunk."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import LargeStringEncoderBuilder
from pgpq.schema import Jsonb

from . import sql
from .errors import CopyUpsertError, FrameError, WritePlanError
from .options import PartitionSlice, WritePlan
from .types import PgType, frame_type, numeric_type

# Rows converted and encoded at a time: big enough that per-chunk overhead vanishes, small
# enough that the encoded chunk (a few MB) is all the memory the COPY adds to the frame.
ROWS_PER_CHUNK = 65_536

# The staging table's extra column numbering the frame's rows, for duplicates="keep_first"
# and "keep_last". A frame may not have a column of this name.
ROW_NUMBER_COLUMN = "copy_upsert_row_number"

# A one-column key is sorted on the client in at most this many buckets: each bucket is a
# pass over the rows to find its own, and holds a sixteenth of the rows' positions at most.
SORT_BUCKETS = 16

# A text column a handler marks as another PostgreSQL type: JSON text is sent as jsonb;
# numbers as text are cast to numeric on the server, so each value keeps its own digits
# (Arrow's decimal gives a whole column one scale, at most 76 digits and no NaN).
TextAs = Literal["jsonb", "numeric"]
T = TypeVar("T")


def _read_once(
    batches: Callable[[], Iterable[pa.RecordBatch]],
) -> Callable[[], Iterable[pa.RecordBatch]]:
    passes = 0

    def first_pass() -> Iterable[pa.RecordBatch]:
        nonlocal passes
        passes += 1
        if passes > 1:
            raise FrameError(
                "the output is a stream (an iterator or a reader), read once already: return "
                "a table or a polars LazyFrame for a write that is read more than once"
            )
        return batches()

    return first_pass


@dataclass(frozen=True)
class ArrowFrame:
    """What a handler hands the core: the frame as Arrow record batches.

    ``batches`` starts a pass over the rows; every batch has ``schema``'s columns, each of
    the same type once encoded (a column of Arrow's null type, all NULL, fits any). ``rows`` is
    None for a stream, whose length is known once it is copied; a stream that can be read
    only once has ``replayable`` False, and its write is not retried.
    """

    schema: pa.Schema
    batches: Callable[[], Iterable[pa.RecordBatch]]
    rows: int | None
    replayable: bool = True
    text_as: Mapping[str, TextAs] = field(default_factory=dict)
    # Whether a column's values ascend, and how many are NULL (None: not known before the
    # rows are read, as for a stream).
    ascending: Callable[[str], bool] | None = None
    null_count: Callable[[str], int] | None = None
    # The rows read in any order (None: a stream, read once from its start).
    in_memory: InMemoryRows | None = None

    def __post_init__(self) -> None:
        if not self.replayable:
            # A second pass would find the stream spent and write no rows: refuse it.
            object.__setattr__(self, "batches", _read_once(self.batches))

    @property
    def sent_as_text(self) -> dict[str, TextAs]:
        """The columns sent as text, and what PostgreSQL type that text is: the handler's
        ``text_as``; decimal256 as numeric (pgpq encodes decimal128 only), as pandas'
        Decimals are; Arrow's JSON extension type as jsonb."""
        implied: dict[str, TextAs] = {
            f.name: "numeric" if pa.types.is_decimal256(f.type) else "jsonb"
            for f in self.schema
            if pa.types.is_decimal256(f.type) or isinstance(f.type, pa.JsonType)
        }
        return implied | dict(self.text_as)

    @classmethod
    def from_table(cls, table: pa.Table, text_as: Mapping[str, TextAs] | None = None) -> ArrowFrame:
        """An in-memory Arrow table."""
        return cls(
            schema=table.schema,
            batches=table.to_batches,
            rows=table.num_rows,
            text_as=text_as or {},
            ascending=lambda name: ascending(table.column(name)),
            null_count=lambda name: table.column(name).null_count,
            in_memory=InMemoryRows(
                columns=lambda names: table.select(list(names)),
                rows_at=lambda order: _taken(table, order),
            ),
        )

    def with_constant(self, name: str, value: str) -> ArrowFrame:
        """The frame with one more text column holding ``value`` in every row."""

        def appended(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                constant = pa.array([value], pa.large_string()).take(
                    np.zeros(batch.num_rows, dtype=np.int64)
                )
                yield batch.append_column(name, constant)

        in_memory = self.in_memory
        if in_memory is not None:
            rows_at = in_memory.rows_at
            in_memory = replace(in_memory, rows_at=lambda order: appended(rows_at(order)))
        return replace(
            self,
            schema=self.schema.append(pa.field(name, pa.large_string())),
            batches=lambda: appended(self.batches()),
            in_memory=in_memory,
        )


@dataclass(frozen=True)
class InMemoryRows:
    """A handler's frame held in memory, which can be read in any order."""

    # The named columns, whole.
    columns: Callable[[Sequence[str]], pa.Table]
    # The rows at some positions, gathered a chunk at a time.
    rows_at: Callable[[np.ndarray], Iterable[pa.RecordBatch]]


@dataclass(frozen=True)
class SortedRows:
    """A frame's rows in key order, found a chunk at a time."""

    # The key's columns as they are sent, in the frame's order.
    key: pa.Table
    # The rows' positions in key order, a chunk at a time (so that the positions of every
    # row are not all held at once, where the key allows it).
    positions: Callable[[], Iterable[np.ndarray]]
    rows_at: Callable[[np.ndarray], Iterable[pa.RecordBatch]]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """A pass over every column in key order: no sorted copy of the frame is held."""
        for positions in self.positions():
            yield from self.rows_at(positions)


def _sorted(rows: InMemoryRows, key: Sequence[str], schema: pa.Schema) -> SortedRows:
    """The rows in the order of the key's values as they are sent (nanoseconds rounded down:
    rows equal once rounded are neighbours, whatever columns follow). The sort need not be
    stable: a key in two rows is refused, or the rows go in the frame's order (plan.py)."""
    given = rows.columns(key)
    sent = pa.table(
        {name: _encodable(_whole(given.column(name)), schema.field(name)) for name in key}
    )
    if len(key) == 1 and not sent.column(0).null_count:
        return SortedRows(sent, _in_buckets(sent.column(0).to_numpy()), rows.rows_at)
    order = pc.sort_indices(sent, sort_keys=[(c, "ascending") for c in key])
    chunks = [
        order[i : i + ROWS_PER_CHUNK].to_numpy() for i in range(0, len(order), ROWS_PER_CHUNK)
    ]
    return SortedRows(sent, lambda: chunks, rows.rows_at)


def _in_buckets(values: np.ndarray) -> Callable[[], Iterator[np.ndarray]]:
    """The positions of ``values`` in ascending order, a bucket at a time: each row is put
    in one of at most SORT_BUCKETS buckets by its value's range (bounds from a sample), and
    each bucket is sorted when its turn comes. Equal values share a bucket. One byte per row
    says which bucket holds it, and one bucket's positions are held at a time, where all the
    positions would take eight bytes a row."""
    buckets = min(len(values) // ROWS_PER_CHUNK + 1, SORT_BUCKETS)
    sample = np.sort(values[:: max(1, len(values) // (64 * buckets))])
    bounds = sample[np.arange(1, buckets) * len(sample) // buckets]
    bucket_of = np.empty(len(values), np.uint8)
    for start in range(0, len(values), ROWS_PER_CHUNK):
        piece = values[start : start + ROWS_PER_CHUNK]
        bucket_of[start : start + ROWS_PER_CHUNK] = np.searchsorted(bounds, piece, side="right")

    def positions() -> Iterator[np.ndarray]:
        for bucket in range(buckets):
            members = np.flatnonzero(bucket_of == bucket)
            if len(members):
                # numpy's unstable sort is about 4x faster than Arrow's stable one.
                yield members[np.argsort(values[members], kind="quicksort")]

    return positions


def _taken(table: pa.Table, order: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The table's rows at ``order``'s positions, gathered a chunk at a time."""
    for start in range(0, table.num_rows, ROWS_PER_CHUNK):
        yield from table.take(order[start : start + ROWS_PER_CHUNK]).to_batches()


def _whole(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array: its only chunk as it is (combining copies even one)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def ascending(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a column's values never decrease (a scan, no copy of the column)."""
    if len(column) < 2 or column.null_count:
        return len(column) < 2
    if isinstance(column, pa.ChunkedArray):
        column = _whole(column)
    try:
        return bool(pc.all(pc.greater_equal(column[1:], column[:-1])).as_py())
    except pa.ArrowNotImplementedError:  # a type without an order (bytes of a fixed size)
        return False


@dataclass(frozen=True)
class PreparedFrame:
    """A checked frame, the Arrow schema it is encoded with and the PostgreSQL type each
    column has in that encoding. Nothing is converted until :meth:`binary_copy_chunks` is
    iterated."""

    source: ArrowFrame
    schema: pa.Schema
    types: Mapping[str, PgType]
    # Columns NULL in every row: their values carry no type, so any column type takes them.
    null_columns: frozenset[str]
    # Columns of JSON text, sent as jsonb.
    json_columns: frozenset[str] = frozenset()
    # The type a column travels as when that is not its type, cast on the server: numbers
    # as text (see TextAs); zoned timestamps in lists as timestamp[] (an array's elements
    # carry their type, and timestamptz's binary form is timestamp's).
    wire_types: Mapping[str, str] = field(default_factory=dict)
    # The conflict target, whose values may not be NULL.
    key: tuple[str, ...] = ()
    # The rows are already in the order of a one-column key.
    in_key_order: bool = False
    # The rows sorted on the client, when Arrow orders the key's values as PostgreSQL does
    # (integers, dates, timestamps): they can be sent in key order.
    sorted_rows: SortedRows | None = None
    # Whether a key value is in more than one row, its values compared as they are sent
    # (None: not known before the rows are copied).
    key_repeats: bool | None = None

    @property
    def sortable(self) -> bool:
        """Whether the rows can be sent in key order."""
        return self.sorted_rows is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names, in the frame's order."""
        return tuple(self.types)

    @property
    def rows(self) -> int | None:
        """The number of rows; None for a stream, not counted until it is copied."""
        return self.source.rows

    def batches(
        self,
        rows_per_chunk: int = ROWS_PER_CHUNK,
        *,
        numbered: bool = False,
        in_key_order: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """The rows in encodable Arrow, at most ``rows_per_chunk`` at a time, so that no
        second full copy of the data is ever held. ``numbered`` appends
        :data:`ROW_NUMBER_COLUMN`, each row's position in the frame; ``in_key_order`` sends
        the rows sorted by the key (a frame that is ``sortable``)."""
        schema = self._copy_schema(numbered)
        start = 0
        sorted_rows = self.sorted_rows if in_key_order else None
        rows = self.source.batches() if sorted_rows is None else sorted_rows.batches()
        try:
            for batch in rows:
                self._check_chunk(batch, start)
                for offset in range(0, batch.num_rows, rows_per_chunk):
                    piece = batch.slice(offset, rows_per_chunk)
                    arrays = [
                        _encodable(piece.column(i), target) for i, target in enumerate(self.schema)
                    ]
                    if numbered:
                        arrays.append(pa.array(np.arange(start, start + piece.num_rows)))
                    start += piece.num_rows
                    yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        finally:
            close_source(rows)

    def _check_chunk(self, batch: pa.RecordBatch, start: int) -> None:
        if batch.schema.names != self.source.schema.names:
            raise FrameError(
                f"a chunk from row {start} has columns {batch.schema.names}, the first had "
                f"{self.source.schema.names}: every chunk of a frame needs the same columns"
            )
        for first, given in zip(self.source.schema, batch.schema, strict=True):
            # Chunks may differ in how Arrow holds a type (string or large_string, a
            # dictionary's index width, another library's chunk), not in the type.
            if given.type == first.type or pa.types.is_null(given.type):
                continue
            if _same_instants(given.type, first.type):
                continue
            if pa.types.is_null(first.type):
                raise FrameError(
                    f"column {first.name!r} has no value in the first chunk, so no type, but "
                    f"is {given.type} in a chunk from row {start}: give the first chunk's "
                    "column its type (pandas: astype, polars: cast)"
                )
            missing = ""
            if pa.types.is_integer(first.type) and pa.types.is_floating(given.type):
                missing = (
                    " (pandas holds an integer column with a missing value as floats: give "
                    "the column the nullable dtype 'Int64' in every chunk)"
                )
            raise FrameError(
                f"column {first.name!r} is {given.type} in a chunk from row {start}, but "
                f"{first.type} in the first: give every chunk the same column types{missing}"
            )
        for name in self.key:
            nulls = batch.column(name).null_count
            if nulls:
                first = start + int(pc.index(pc.is_null(batch.column(name)), True).as_py())
                raise null_key_error(name, nulls, f" (the first in row {first})")

    def _copy_schema(self, numbered: bool) -> pa.Schema:
        if not numbered:
            return self.schema
        return self.schema.append(pa.field(ROW_NUMBER_COLUMN, pa.int64()))

    def binary_copy_chunks(
        self,
        rows_per_chunk: int = ROWS_PER_CHUNK,
        *,
        numbered: bool = False,
        in_key_order: bool = False,
    ) -> Iterator[tuple[int, bytes]]:
        """The frame as PostgreSQL binary COPY data, a chunk at a time, each with the number
        of rows it holds."""
        encoder = _encoder(self._copy_schema(numbered), self.json_columns)
        yield 0, encoder.write_header()
        batches = self.batches(rows_per_chunk, numbered=numbered, in_key_order=in_key_order)
        for batch in batches:
            yield batch.num_rows, encoder.write_batch(batch)
        yield 0, encoder.finish()


def failing_part_way(items: Iterator[T], source: str, advice: str) -> Iterator[T]:
    """``items``, with an error raised in making one (the user's code: a generator, a
    query, a reader) as a FrameError that names ``source``: the write then fails, and
    nothing is written."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except CopyUpsertError:
            raise  # the package's own (a read this stream comes from), named already
        except Exception as exc:
            raise source_failed(source, exc, advice) from exc
        yield item


def source_failed(source: str, exc: Exception, advice: str) -> FrameError:
    """The error for an output whose own code (``source``) failed while making its rows."""
    return FrameError(
        f"{source} failed ({type(exc).__name__}: {exc}); nothing was written: {advice}"
    )


def json_text(value: Any, column: str) -> str:
    """A dict or list (a pandas cell, an Arrow struct's value) as the JSON text jsonb
    stores; JSON has no NaN or Infinity, which jsonb would refuse."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FrameError(
            f"column {column!r} holds dicts or lists, stored as jsonb, and one of them holds "
            f"what JSON cannot ({exc}): JSON holds numbers (no NaN or Infinity), strings, "
            "booleans, null, lists and dicts; convert the rest first (None for NaN, str() "
            "for dates and Decimals, int() or float() for numpy numbers)"
        ) from exc


def close_source(rows: object) -> None:
    """Close a pass over a frame's rows (a generator), however the pass ended: a failed
    write's traceback would keep it, and what it holds (a running query, a user's
    generator and its clean-up), alive."""
    close = getattr(rows, "close", None)
    if close is not None:
        close()


def _sorts_as_postgres(arrow: pa.DataType) -> bool:
    """Whether Arrow orders the type's values as PostgreSQL does (text is ordered by the
    column's collation there, by its bytes here)."""
    return bool(
        pa.types.is_integer(arrow) or pa.types.is_date(arrow) or pa.types.is_timestamp(arrow)
    )


def null_key_error(column: str, nulls: int, where: str = "") -> FrameError:
    """The error for NULL values in a conflict_target column."""
    return FrameError(
        f"conflict_target column {column!r} has {nulls} NULL value(s){where}; a key cannot be "
        "NULL: fill or drop those rows"
    )


def refuse_repeated_names(names: Sequence[str]) -> None:
    """Refuse a frame whose columns repeat a name."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameError(f"column names {repeated} appear more than once: rename them")


def prepare_frame(
    frame: ArrowFrame, plan: WritePlan, partition: Sequence[PartitionSlice] = ()
) -> PreparedFrame:
    """Check the frame against the plan, and choose the Arrow type of every column and the
    PostgreSQL type its binary encoding carries, without converting the data yet. Duplicate
    keys are found on the server, so that no index of the keys is held in memory; NULL keys
    as the rows are copied, so that a stream is read once.

    Raises:
        FrameError: no columns, repeated or reserved column names, a type that cannot be
            stored.
        WritePlanError: an option names a column the frame lacks, or a name PostgreSQL
            cannot hold.
    """
    names = frame.schema.names
    if not names:
        rows = "" if frame.rows is None else f" ({frame.rows} rows)"
        raise FrameError(
            f"the frame has no columns{rows}: return the columns to store; nothing was written"
        )
    _check_names(names, plan, partition)
    if frame.null_count is not None:
        for column in plan.conflict_target:
            nulls = frame.null_count(column)
            if nulls:
                raise null_key_error(column, nulls)
    text_as = frame.sent_as_text
    fields: list[pa.Field] = []
    types: dict[str, PgType] = {}
    for given in frame.schema:
        as_text = text_as.get(given.name)
        if as_text is not None:
            fields.append(pa.field(given.name, pa.large_string()))
            types[given.name] = PgType(as_text)
            continue
        fields.append(pa.field(given.name, _encodable_type(given.type)))
        if _is_uuid(given.type):
            # The binary format of uuid is its 16 bytes, as pgpq writes fixed-size binary.
            types[given.name] = PgType("uuid")
    schema = pa.schema(fields)
    json_columns = frozenset(n for n, t in text_as.items() if t == "jsonb")
    try:
        encoder_columns = _encoder(schema, json_columns).schema().columns
    except ValueError:
        for given, encodable in zip(frame.schema, schema, strict=True):
            try:
                _encoder(pa.schema([encodable]), json_columns)
            except ValueError as exc:
                raise _unstorable(given) from exc
        raise
    for given, encodable, encoded in zip(frame.schema, schema, encoder_columns, strict=True):
        if encodable.name not in types:
            types[encodable.name] = _pg_type(given, encodable, encoded.data_type.ddl())
    # A frame without rows holds no value any column type could refuse.
    null_columns = frozenset(
        f.name for f in frame.schema if pa.types.is_null(f.type) or frame.rows == 0
    )
    key = plan.conflict_target
    sortable = key and all(_sorts_as_postgres(frame.schema.field(c).type) for c in key)
    in_memory = frame.in_memory if sortable else None
    sorted_rows = None if in_memory is None else _sorted(in_memory, key, schema)
    return PreparedFrame(
        source=frame,
        schema=schema,
        types={f.name: types[f.name] for f in schema},
        null_columns=null_columns,
        json_columns=json_columns,
        wire_types={
            **{n: "text" for n, t in text_as.items() if t == "numeric"},
            **{n: "timestamp[]" for n, t in types.items() if t.array and t.name == "timestamptz"},
        },
        key=key,
        in_key_order=len(key) == 1 and frame.ascending is not None and frame.ascending(key[0]),
        sorted_rows=sorted_rows,
        key_repeats=None if sorted_rows is None else _repeats(sorted_rows),
    )


def _repeats(rows: SortedRows) -> bool:
    """Whether two neighbouring rows in key order have equal keys, compared as they are sent
    (nanoseconds rounded down to PostgreSQL's microseconds); a chunk at a time, so that no
    sorted copy of the key is held."""
    before: np.ndarray | None = None  # the last row of the chunk before
    for positions in rows.positions():
        taken = positions if before is None else np.concatenate([before, positions])
        chunk = rows.key.take(taken)
        before = positions[-1:]
        equal: pa.Array | None = None
        for name in chunk.column_names:
            values = chunk.column(name)
            same = pc.equal(values[1:], values[:-1])
            equal = same if equal is None else pc.and_(equal, same)
        if equal is not None and pc.any(equal).as_py():
            return True
    return False


def _check_names(
    names: Sequence[str], plan: WritePlan, partition: Sequence[PartitionSlice]
) -> None:
    refuse_repeated_names(names)
    for name in names:
        sql.quote_ident(name)
    _require_columns(names, "conflict_target", plan.conflict_target)
    _require_columns(names, "update_columns", plan.update_columns or ())
    _require_columns(names, "partition_expr", [s.column for s in partition])
    if plan.conflict_target and plan.duplicates != "error" and ROW_NUMBER_COLUMN in names:
        raise FrameError(
            f"column name {ROW_NUMBER_COLUMN!r} is reserved for resolving duplicate keys: "
            "rename the column"
        )


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


def _is_uuid(arrow_type: pa.DataType) -> bool:
    return isinstance(arrow_type, pa.UuidType)


def _same_instants(given: pa.DataType, first: pa.DataType) -> bool:
    """Whether a later chunk's column type is sent as the first chunk's: the same encodable
    type, zoned timestamps in any zone (PostgreSQL stores the instant)."""
    given, first = _encodable_type(given), _encodable_type(first)
    if pa.types.is_timestamp(given) and pa.types.is_timestamp(first):
        return bool(given.unit == first.unit and (given.tz is None) == (first.tz is None))
    if _is_list(given) and _is_list(first):
        return _same_instants(given.value_type, first.value_type)
    return bool(given == first)


def _encodable_type(arrow_type: pa.DataType) -> pa.DataType:
    """The closest type PostgreSQL's binary format (through pgpq) can carry."""
    if isinstance(arrow_type, pa.BaseExtensionType):
        return _encodable_type(arrow_type.storage_type)
    if pa.types.is_dictionary(arrow_type):  # pandas' and polars' categoricals, polars' enums
        return _encodable_type(arrow_type.value_type)
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns":
        # PostgreSQL keeps microseconds; finer digits are rounded down (see the README).
        return pa.timestamp("us", tz=arrow_type.tz)
    if pa.types.is_duration(arrow_type) and arrow_type.unit == "ns":
        return pa.duration("us")
    if pa.types.is_time64(arrow_type) and arrow_type.unit == "ns":  # polars' Time
        return pa.time64("us")
    if pa.types.is_date64(arrow_type):
        return pa.date32()
    if pa.types.is_float16(arrow_type):
        return pa.float32()
    if pa.types.is_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.large_string()
    if pa.types.is_binary_view(arrow_type):
        return pa.large_binary()
    if pa.types.is_null(arrow_type):
        # Every value is NULL, so the encoded type never reaches the wire.
        return pa.large_string()
    if _is_list(arrow_type):
        return pa.large_list(_encodable_type(arrow_type.value_type))
    return arrow_type


def _unstorable(given: pa.Field) -> FrameError:
    hint = (
        ": send it as JSON text (a struct column of its own, polars' or Arrow's, is written as "
        "jsonb)"
        if pa.types.is_struct(given.type) or pa.types.is_map(given.type)
        else ""
    )
    return FrameError(
        f"column {given.name!r} has Arrow type {given.type}, which cannot be stored{hint}: "
        "convert the column to a supported type (see the README's type table)"
    )


def _pg_type(given: pa.Field, encodable: pa.Field, encoded_as: str | None) -> PgType:
    if encoded_as is None or encoded_as.startswith("userdefined"):
        raise _unstorable(given)
    if pa.types.is_decimal(encodable.type):
        return numeric_type(encodable.type.precision, encodable.type.scale)
    value = encodable.type.value_type if _is_list(encodable.type) else encodable.type
    zoned = pa.types.is_timestamp(value) and value.tz is not None
    return frame_type(encoded_as, zoned=zoned)


def _is_list(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type))


def _floored(array: pa.Array) -> pa.Array:
    """Nanosecond timestamps rounded down to whole microseconds, before and after 1970
    alike (a cast would truncate toward 1970), in lists too."""
    if _is_list(array.type):
        inner = array.values  # a new wrapper at each access: compared by identity below
        values = _floored(inner)
        if values is inner:
            return array
        if array.offset:
            # from_arrays takes no sliced offsets with a null mask: a copy starts at 0.
            return _floored(pa.concat_arrays([array]))
        kind = pa.LargeListArray if pa.types.is_large_list(array.type) else pa.ListArray
        return kind.from_arrays(array.offsets, values, mask=array.is_null())
    if pa.types.is_timestamp(array.type) and array.type.unit == "ns":
        # Rounded in UTC: a zone's own clock repeats an hour when summer time ends.
        utc = array.cast(pa.timestamp("ns"))
        return pc.floor_temporal(utc, unit="microsecond").cast(array.type)
    return array


def _encodable(array: pa.Array, field_: pa.Field) -> pa.Array:
    """One column of a chunk in the field's encodable type."""
    try:
        if isinstance(array.type, pa.BaseExtensionType):
            array = array.storage
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        array = _floored(array)
        if array.type != field_.type:
            array = pc.cast(
                array,
                options=pc.CastOptions(target_type=field_.type, allow_time_truncate=True),
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise FrameError(
            f"column {field_.name!r} ({array.type}) holds a value that cannot be stored as "
            f"{field_.type}: {exc}"
        ) from exc
    if pa.types.is_large_string(array.type) and pc.any(pc.match_substring(array, "\x00")).as_py():
        raise FrameError(
            f"column {field_.name!r} holds text with a NUL byte (\\x00), which PostgreSQL text "
            "cannot store: remove it, or store the column as bytes"
        )
    return array
