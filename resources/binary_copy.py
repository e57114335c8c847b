"""Decode ``COPY ... TO STDOUT (FORMAT binary)`` into Arrow while the server sends the rest.

The format (PostgreSQL's ``COPY`` page, "Binary Format"): a header; per row an int16 field
count and, per field, an int32 length (-1 for NULL) and the value in its type's binary form,
big-endian; an int16 -1 at the end. Where a field starts depends on every length before it,
so finding the fields is a walk that only compiled code does fast: numba compiles the two
loops below (``nogil``, so pieces decode in worker threads). The same walk lays each
fixed-width column's values side by side; every conversion is then a numpy or Arrow
operation on whole columns.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from .types import ReadType

__all__ = ["PIECE_BYTES", "BinaryCopyDecoder"]

# COPY output received before the whole rows in it are decoded in a worker thread: large
# enough to be worth a thread, small enough that decoding keeps pace with the server.
PIECE_BYTES = 1 << 22

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER_BYTES = len(_SIGNATURE) + 8  # flags and the header extension's length, int32 each

# PostgreSQL counts dates and timestamps from 2000-01-01, Arrow from 1970-01-01.
_DAYS_1970_TO_2000 = 10_957
_MICROS_1970_TO_2000 = _DAYS_1970_TO_2000 * 86_400_000_000
# ±infinity have no Arrow value: they read as the largest and smallest values Python's
# date and datetime hold (date.max / date.min, datetime.max / datetime.min).
_INFINITE_DATE = {2**31 - 1: 2_932_896, -(2**31): -719_162}
_INFINITE_TIMESTAMP = {2**63 - 1: 253_402_300_799_999_999, -(2**63): -62_135_596_800_000_000}
# PostgreSQL's time holds 24:00:00, which Arrow's time64 (and datetime.time) cannot.
_LAST_MICROSECOND_OF_DAY = 86_400_000_000 - 1
_MICROS_PER_DAY = 86_400_000_000
# An infinite interval (PostgreSQL 17+) is every field at its largest (or smallest); it
# reads as the largest (smallest) timedelta64[us], NaT being the smallest int64.
_INFINITE_INTERVAL = {
    (2**63 - 1, 2**31 - 1, 2**31 - 1): 2**63 - 1,
    (-(2**63), -(2**31), -(2**31)): 1 - 2**63,
}


@dataclass(frozen=True)
class _Rest:
    """What one piece leaves to the next: the bytes of a row not yet whole, how many bytes
    that row needs at least, and how far the stream has got."""

    parts: tuple[bytes, ...] = ()
    size: int = 0
    needed: int = 0
    header_read: bool = False
    finished: bool = False


@dataclass(frozen=True)
class _Piece:
    table: pa.Table | None
    rest: _Rest


class BinaryCopyDecoder:
    """Decodes binary COPY output piece by piece while the server sends the rest.

    The event loop only collects what arrives; each piece of about :data:`PIECE_BYTES` is
    decoded in a worker thread, after the piece before it has said where its last whole row
    ended.
    """

    def __init__(
        self,
        columns: Mapping[str, ReadType],
        send: Callable[[pa.Table], Awaitable[None]] | None = None,
    ) -> None:
        """``columns``: each column's name and how it is read (:func:`types.read_type`), in
        COPY order. ``send``: stream each decoded piece to it, in order, rather than keep
        them for :meth:`table`; the COPY waits while ``send`` does."""
        self.columns = dict(columns)
        self.send = send
        self.sent_rows = 0
        wires = [None if c.wire is None else np.dtype(c.wire) for c in self.columns.values()]
        self.widths = np.array([-1 if w is None else w.itemsize for w in wires], dtype=np.int64)
        # Numbers arrive big-endian: reversing each value's bytes makes them this machine's.
        self.reverse = np.array(
            [w is not None and w.kind in "iufb" and sys.byteorder == "little" for w in wires]
        )
        self.received: list[bytes] = []
        self.received_bytes = 0
        self.pieces: list[asyncio.Future[_Piece]] = []

    async def feed(self, data: bytes) -> None:
        """Take the next bytes of the COPY output (asyncpg's ``output`` callback)."""
        self.received.append(data)
        self.received_bytes += len(data)
        if self.received_bytes >= PIECE_BYTES:
            self._hand_over()
            # Streaming: one piece decoding while the next arrives, no more.
            await self._send(in_flight=1)

    @property
    def schema(self) -> pa.Schema:
        """The decoded table's schema."""
        return pa.schema([(name, column.arrow) for name, column in self.columns.items()])

    async def table(self, rows: int) -> pa.Table:
        """The Arrow table (streaming: empty, every piece sent), once the COPY has reported
        ``rows`` rows."""
        self._hand_over()
        last = self.pieces[-1]
        await self._send(in_flight=0)
        pieces = await asyncio.gather(*self.pieces)
        if not (await last).rest.finished or (await last).rest.size:
            raise RuntimeError("the COPY output ended inside a row")
        tables = [piece.table for piece in pieces if piece.table is not None]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        if table.num_rows + self.sent_rows != rows:
            raise RuntimeError(
                f"decoded {table.num_rows + self.sent_rows} rows of the {rows} that COPY sent"
            )
        return table

    async def _send(self, in_flight: int) -> None:
        """Hand decoded pieces to ``send``, oldest first, until ``in_flight`` are left."""
        while self.send is not None and len(self.pieces) > in_flight:
            piece = await self.pieces.pop(0)
            if piece.table is not None:
                self.sent_rows += piece.table.num_rows
                await self.send(piece.table)

    async def close(self) -> None:
        """Wait for pieces still being decoded (after a failed COPY), ignoring their results."""
        await asyncio.gather(*self.pieces, return_exceptions=True)

    def _hand_over(self) -> None:
        # The bytes are joined once, in the worker thread: the loop goes on receiving.
        blocks, self.received = tuple(self.received), []
        self.received_bytes = 0
        previous = self.pieces[-1] if self.pieces else None
        self.pieces.append(asyncio.ensure_future(self._decode_after(previous, blocks)))

    async def _decode_after(
        self, previous: asyncio.Future[_Piece] | None, blocks: tuple[bytes, ...]
    ) -> _Piece:
        rest = (await previous).rest if previous is not None else _Rest()
        return await asyncio.to_thread(self._decode, rest, blocks)

    def _decode(self, rest: _Rest, blocks: tuple[bytes, ...]) -> _Piece:
        if rest.finished and any(blocks):
            raise RuntimeError("the COPY output goes on after its end marker")
        parts, size = (*rest.parts, *blocks), rest.size + sum(map(len, blocks))
        if size < max(rest.needed, 1):
            return _Piece(None, replace(rest, parts=parts, size=size))
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        at = 0
        if not rest.header_read:
            if size < _HEADER_BYTES:
                return _Piece(None, replace(rest, parts=parts, size=size))
            if data[: len(_SIGNATURE)].tobytes() != _SIGNATURE:
                raise RuntimeError("the COPY output is not PostgreSQL's binary format")
            at = _HEADER_BYTES + int.from_bytes(data[_HEADER_BYTES - 4 : _HEADER_BYTES], "big")
            if size < at:
                return _Piece(None, replace(rest, parts=parts, size=size, needed=at))
        buffer = data[at:]
        rows, end, needed, fixed, fixed_at, lengths, starts = _compiled().decode(
            buffer, self.widths, self.reverse
        )
        left = buffer[end:].tobytes()
        if needed < 0 and left:
            raise RuntimeError("the COPY output goes on after its end marker")
        after = _Rest((left,) if left else (), len(left), max(needed - end, 0), True, needed < 0)
        if not rows:
            return _Piece(None, after)
        arrays = []
        for i, (name, column) in enumerate(self.columns.items()):
            width = self.widths[i]
            if width < 0:
                offsets, values = _compiled().gather_variable(
                    buffer, starts[i, :rows], lengths[i, :rows]
                )
            else:
                offsets, values = None, fixed[fixed_at[i] : fixed_at[i] + rows * width]
            try:
                arrays.append(_arrow_column(column, lengths[i, :rows], values, offsets))
            except ValueError as exc:
                raise ValueError(f"column {name!r}: {exc}") from exc
        return _Piece(pa.Table.from_arrays(arrays, names=list(self.columns)), after)


def _arrow_column(
    column: ReadType, lengths: np.ndarray, values: np.ndarray, offsets: np.ndarray | None
) -> pa.Array:
    """One column of a piece as Arrow, from its values side by side (and their ``offsets``
    when they are of any length); a length of -1 is a NULL."""
    valid = lengths >= 0
    mask = None if valid.all() else ~valid
    validity = None if mask is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    if offsets is not None:
        raw = pa.Array.from_buffers(
            pa.large_binary(), len(lengths), [validity, pa.py_buffer(offsets), pa.py_buffer(values)]
        )
        return raw if column.arrow == pa.large_binary() else raw.view(column.arrow)
    if pa.types.is_fixed_size_binary(column.arrow):
        return pa.Array.from_buffers(column.arrow, len(lengths), [validity, pa.py_buffer(values)])
    wire = np.dtype(column.wire)
    if wire.kind != "V":  # the walk reversed each number's bytes; records keep theirs
        wire = wire.newbyteorder("=")
    return _from_wire(np.frombuffer(values, dtype=wire), mask, column.arrow)


def _from_wire(values: np.ndarray, mask: np.ndarray | None, arrow: pa.DataType) -> pa.Array:
    """Fixed-width binary values (big-endian; PostgreSQL's epoch and units) as Arrow."""
    native = values
    if values.dtype.names:
        native = _interval_micros(values)
    elif pa.types.is_date32(arrow):
        native = _shifted(native, _DAYS_1970_TO_2000, _INFINITE_DATE).astype(np.int32)
    elif pa.types.is_timestamp(arrow):
        native = _shifted(native, _MICROS_1970_TO_2000, _INFINITE_TIMESTAMP)
    elif pa.types.is_time64(arrow):
        native = np.minimum(native, _LAST_MICROSECOND_OF_DAY)
    elif pa.types.is_boolean(arrow):
        native = native.astype(bool)
    array = pa.array(native, mask=mask)
    return array if array.type == arrow else array.view(arrow)


def _interval_micros(values: np.ndarray) -> np.ndarray:
    """Intervals, as (microseconds, days, months), in microseconds: a year counts 365 days
    and a month 30 (as asyncpg and psycopg count them), months carry the sign of the whole."""
    micros, days, months = (values[f"f{i}"].astype(np.int64) for i in range(3))
    years, rest = np.sign(months) * np.divmod(np.abs(months), 12)
    total_days = days + years * 365 + rest * 30
    infinite = {
        stand_in: (micros == m) & (days == d) & (months == mo)
        for (m, d, mo), stand_in in _INFINITE_INTERVAL.items()
    }
    finite = ~np.logical_or.reduce(list(infinite.values()))
    approximate = total_days.astype(np.float64) * _MICROS_PER_DAY + micros
    if np.any(finite & (np.abs(approximate) >= 2**63 - _MICROS_PER_DAY)):
        raise ValueError("an interval is longer than the ±292,000 years timedelta64[us] holds")
    with np.errstate(over="ignore"):
        result: np.ndarray = total_days * _MICROS_PER_DAY + micros  # ±infinity wrap: replaced
    for stand_in, where in infinite.items():
        result[where] = stand_in
    return result


def _shifted(values: np.ndarray, shift: int, infinite: Mapping[int, int]) -> np.ndarray:
    """``values`` counted from Arrow's epoch instead of PostgreSQL's, ±infinity (the
    largest and smallest values of their width) replaced by their stand-ins."""
    finite = ~np.isin(values, list(infinite))
    if np.any(finite & (values > np.iinfo(values.dtype).max - shift)):
        # The last 30 years of PostgreSQL's timestamps (after 294,246 AD) do not fit.
        raise ValueError("a date or timestamp is too late to count from 1970 in Arrow's type")
    shifted = values.astype(np.int64) + shift
    for pg_value, stand_in in infinite.items():
        shifted[values == pg_value] = stand_in
    return shifted


# ---- the compiled walks -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kernels:
    decode: Callable[
        [np.ndarray, np.ndarray, np.ndarray],
        tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ]
    gather_variable: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@functools.cache
def _compiled() -> _Kernels:
    """The loops below, compiled (once per machine: numba caches them on disk)."""
    import numba  # on the first read only: importing it takes 0.3 s that writes need not pay
    from numba.extending import register_jitable

    register_jitable(_int32)  # callable from the compiled loops
    jit = numba.njit(nogil=True, cache=True)
    return _Kernels(jit(_decode_rows), jit(_gather_variable))


def _int32(buffer: np.ndarray, at: int) -> int:
    """The big-endian signed int32 at ``at``."""
    value = (
        (np.int64(buffer[at]) << 24)
        | (np.int64(buffer[at + 1]) << 16)
        | (np.int64(buffer[at + 2]) << 8)
        | np.int64(buffer[at + 3])
    )
    return int(value - (1 << 32) if value >= 1 << 31 else value)


def _decode_rows(
    buffer: np.ndarray, widths: np.ndarray, reverse: np.ndarray
) -> tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole rows at the start of ``buffer``, in one pass: how many, the bytes they
    span, and the bytes needed to finish the next row as far as known (-1 when the end
    marker came); each fixed-width column's values side by side in ``fixed``, from
    ``fixed_at[column]`` (bytes reversed where ``reverse`` says; zeros for NULL); each
    field's length (-1: NULL); and where each value of any length starts. The arrays are
    sized for the most rows the bytes could hold (every field NULL); only the pages the
    rows fill are ever touched."""
    size = len(buffer)
    columns = len(widths)
    most = size // (2 + 4 * columns) + 1
    fixed_at = np.zeros(columns, np.int64)
    total = 0
    for column in range(columns):
        fixed_at[column] = total
        total += most * max(widths[column], 0)
    fixed = np.empty(total, np.uint8)
    lengths = np.empty((columns, most), np.int32)
    starts = np.empty((columns, most), np.int64)
    rows = 0
    at = 0
    while at + 2 <= size:
        count = (np.int64(buffer[at]) << 8) | np.int64(buffer[at + 1])
        if count == 0xFFFF:
            return rows, at + 2, -1, fixed, fixed_at, lengths, starts
        if count != columns:
            raise RuntimeError("a COPY row has another number of fields than columns asked")
        field = at + 2
        for column in range(columns):
            if field + 4 > size:
                return rows, at, field + 4, fixed, fixed_at, lengths, starts
            length = _int32(buffer, field)
            if length < -1:
                raise RuntimeError("a COPY field has a negative length")
            field += 4
            if field + max(length, 0) > size:
                return rows, at, field + max(length, 0), fixed, fixed_at, lengths, starts
            lengths[column, rows] = length
            width = widths[column]
            out = fixed_at[column] + rows * width
            if width < 0:
                starts[column, rows] = field
            elif length == -1:
                fixed[out : out + width] = 0
            elif length != width:
                raise RuntimeError("a COPY value is not as wide as its column's type")
            elif reverse[column] and width == 8:
                # Whole eight bytes at a time, which the compiler turns into one byte swap.
                value = np.uint64(0)
                for byte in range(8):
                    value = (value << np.uint64(8)) | np.uint64(buffer[field + byte])
                for byte in range(8):
                    fixed[out + byte] = np.uint8((value >> np.uint64(8 * byte)) & np.uint64(255))
            elif reverse[column]:
                for byte in range(width):
                    fixed[out + byte] = buffer[field + width - 1 - byte]
            else:
                fixed[out : out + width] = buffer[field : field + width]
            field += max(length, 0)
        rows += 1
        at = field
    return rows, at, at + 2, fixed, fixed_at, lengths, starts


def _gather_variable(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One column of values of any length as Arrow's offsets and data buffers."""
    offsets = np.empty(len(starts) + 1, np.int64)
    offsets[0] = 0
    for row in range(len(starts)):
        offsets[row + 1] = offsets[row] + max(lengths[row], 0)
    data = np.empty(offsets[-1], np.uint8)
    for row in range(len(starts)):
        length = max(lengths[row], 0)
        data[offsets[row] : offsets[row] + length] = buffer[starts[row] : starts[row] + length]
    return offsets, data
