"""One mapping between the frame's Arrow types and PostgreSQL's, both ways.

Types are keyed by what the catalog gives: the base type's ``pg_type.typname`` (through
domains), its type modifier, and whether the column is an array of it. Nothing here compares
``format_type()`` strings; those only appear in messages.

- :data:`LOSSLESS_CASTS` and :func:`fit`: which frame types a table column takes unchanged.
- :data:`READ_TYPES` and :func:`read_type`: how a column travels in ``COPY ... TO STDOUT``
  (binary format) and what a read returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import pyarrow as pa

# How PostgreSQL names the base types in messages (format_type without modifiers).
DISPLAY: Mapping[str, str] = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "varchar": "character varying",
    "bpchar": "character",
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
    "timetz": "time with time zone",
}

# PostgreSQL keeps at most microseconds: a time type with this precision (or none) rounds
# nothing a frame can hold.
MAX_TIME_PRECISION = 6

_INTEGERS = frozenset({"int2", "int4", "int8"})
_TIME_TYPES = frozenset({"time", "timetz", "timestamp", "timestamptz"})
# An interval modifier is (range << 16) | precision; these mean "all fields", "full precision".
_INTERVAL_FULL_RANGE = 0x7FFF
_INTERVAL_FULL_PRECISION = 0xFFFF


@dataclass(frozen=True)
class PgType:
    """A column's type as the catalog gives it.

    ``name`` is the base type's ``typname`` (a domain's base type; ``"enum"`` for any enum),
    ``modifier`` its type modifier (-1: none), ``array`` whether the column is a
    one-dimensional array of it, ``domain`` whether a domain sits over it, and ``display``
    the column type as ``format_type()`` prints it (valid SQL, used to declare staging
    columns of that type and in messages).
    """

    name: str
    modifier: int = -1
    array: bool = False
    domain: bool = False
    display: str = ""

    def __str__(self) -> str:
        if self.display:
            return self.display
        base = DISPLAY.get(self.name, self.name)
        return base + "[]" if self.array else base

    @property
    def varchar_length(self) -> int | None:
        """``n`` of ``varchar(n)``; None when unlimited, an array, or not varchar."""
        if self.name != "varchar" or self.modifier < 0 or self.array:
            return None
        return self.modifier - 4  # VARHDRSZ

    @property
    def unmodified(self) -> str:
        """The type without its modifier, as SQL: a cast to it never rounds or truncates
        (an explicit cast to ``varchar(3)`` would cut a longer value)."""
        if self.modifier < 0 or self.name in ("enum", "other"):
            return str(self)
        base = DISPLAY.get(self.name, self.name)
        return base + "[]" if self.array else base


def frame_type(ddl: str, *, zoned: bool = False) -> PgType:
    """The PostgreSQL type a binary COPY column carries, from pgpq's DDL name (``INT8``,
    ``TEXT``, ``INT8[]``); ``zoned`` for a tz-aware timestamp, which pgpq names TIMESTAMP
    (the binary format of timestamptz is the same UTC microsecond count)."""
    name = ddl.lower()
    array = name.endswith("[]")
    name = name.removesuffix("[]")
    if name == "timestamp" and zoned:
        name = "timestamptz"
    return PgType(name, array=array)


def numeric_type(precision: int, scale: int) -> PgType:
    """``numeric(precision, scale)``, as a decimal frame column of that precision and scale
    is created and compared (precision at most 1000, PostgreSQL's limit)."""
    return PgType(
        "numeric", modifier=((precision << 16) | scale) + 4, display=f"numeric({precision},{scale})"
    )


def numeric_digits(numeric: PgType) -> tuple[int, int]:
    """(precision, scale) of ``numeric(p, s)``."""
    modifier = numeric.modifier - 4
    return modifier >> 16, (((modifier & 0x7FF) ^ 1024) - 1024)


class Fit(Enum):
    """How a frame column goes into a table column."""

    EXACT = "exact"  # same type: binary COPY can go straight into the table
    CAST = "cast"  # staged and cast by the server; a value that does not fit fails loudly
    LENGTH = "length"  # text into varchar(n): staged, and lengths checked before the merge
    # A modifier that may round (numeric(p,s), timestamp(p), interval(p)): staged, and every
    # value checked to be kept by the cast before the merge.
    CHECKED = "checked"


# (frame type, table type) pairs whose every value the table's type stores unchanged, or
# fails loudly on (an integer out of a narrower integer's range, text that is no valid enum
# label, UUID or address).
LOSSLESS_CASTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("int8", "int4"),
        ("int8", "int2"),
        ("int4", "int2"),
        ("int2", "int4"),
        ("int2", "int8"),
        ("int4", "int8"),
        ("int2", "numeric"),
        ("int4", "numeric"),
        ("int8", "numeric"),
        ("int2", "float4"),
        ("int2", "float8"),
        ("int4", "float8"),
        ("float4", "float8"),
        ("text", "varchar"),
        ("text", "enum"),
        ("text", "uuid"),
        ("text", "inet"),
        ("text", "cidr"),
        ("text", "macaddr"),
        ("jsonb", "json"),
    }
)


def fit(frame: PgType, table: PgType) -> Fit | None:
    """How a frame column of type ``frame`` goes into a column of type ``table``, or None
    when the table's type would change some value (round, pad, trim or reinterpret it)."""
    if frame.array != table.array:
        return None
    if table.name == "bpchar" and frame.name == "text":
        return None  # char(n) pads with spaces: the stored text would differ
    castable = frame.name == table.name or (frame.name, table.name) in LOSSLESS_CASTS
    if not _modifier_keeps_values(frame, table):
        return Fit.CHECKED if castable and _rounds_checkably(table) else None
    if frame.name == table.name:
        return Fit.EXACT
    if (frame.name, table.name) not in LOSSLESS_CASTS:
        return None
    if table.varchar_length is not None:
        return Fit.LENGTH
    return Fit.CAST


def _modifier_keeps_values(frame: PgType, table: PgType) -> bool:
    if table.modifier < 0:
        return True
    if table.name == "numeric":
        # numeric(p,s) rounds to s digits: only whole numbers keep every digit (a number
        # too large for p fails loudly), and only with s >= 0 (numeric(5,-2) rounds 1234);
        # and decimals of no more digits on either side of the point.
        precision, scale = numeric_digits(table)
        if frame.name == "numeric" and frame.modifier >= 0:
            digits, places = numeric_digits(frame)
            return places <= scale and digits - places <= precision - scale
        return frame.name in _INTEGERS and scale >= 0
    if table.name in _TIME_TYPES:
        return table.modifier == MAX_TIME_PRECISION
    if table.name == "interval":
        precision = table.modifier & 0xFFFF
        fields = (table.modifier >> 16) & 0x7FFF
        return fields == _INTERVAL_FULL_RANGE and precision in (
            MAX_TIME_PRECISION,
            _INTERVAL_FULL_PRECISION,
        )
    # varchar(n) is checked for length; other modifiers (bit(n), char(n)) are refused.
    return table.name == "varchar"


def _rounds_checkably(table: PgType) -> bool:
    """Whether the modifier only rounds (so a value it keeps is stored as it is): numeric's
    scale and precision, a time type's fractional digits, an interval's precision over all
    its fields. char(n) pads and bit(n) pads or cuts: never."""
    if table.array:
        return False
    if table.name == "interval":
        return (table.modifier >> 16) & 0x7FFF == _INTERVAL_FULL_RANGE
    return table.name in _TIME_TYPES or table.name == "numeric"


def time_window_type(table: PgType) -> bool:
    """Whether a time-window partition can be filtered on a column of this type."""
    return not table.array and table.name in {"date", "timestamp", "timestamptz"}


# ---- reads --------------------------------------------------------------------------------------

Decode = Literal[
    "plain",  # Arrow's own conversion to pandas
    "nullable",  # pandas' nullable dtype (Int16.., boolean) unless the column is NOT NULL
    "time",  # time64 -> datetime.time
    "decimal",
    "uuid",
    "json",
    "json_decimal",  # JSON whose numbers are numerics -> Decimals
    "json_float",  # JSON of floats, NaN and ±Infinity among them as strings -> floats
    "json_real",  # the same, each rounded to the float32 that real stores
]


@dataclass(frozen=True)
class ReadType:
    """How one column is read: ``select`` is the SQL expression (``{}`` stands for the
    column) that ``COPY ... (FORMAT binary)`` sends, ``wire`` the numpy dtype of its binary
    form when that has a fixed width (None: bytes of any length), ``arrow`` the Arrow type
    the decoder makes of it, ``decode`` what turns that into the pandas column a read
    returns."""

    arrow: pa.DataType
    wire: str | None = None
    decode: Decode = "plain"
    select: str = "{}"


# Types whose binary form is their text (or raw bytes) travel as they are; every other one
# is sent as its text, which PostgreSQL formats.
_AS_TEXT = ReadType(pa.large_string(), select="{}::text")
_RAW_TEXT = ReadType(pa.large_string())

READ_TYPES: Mapping[str, ReadType] = {
    "int2": ReadType(pa.int16(), ">i2", "nullable"),
    "int4": ReadType(pa.int32(), ">i4", "nullable"),
    "int8": ReadType(pa.int64(), ">i8", "nullable"),
    "float4": ReadType(pa.float32(), ">f4"),
    "float8": ReadType(pa.float64(), ">f8"),
    "bool": ReadType(pa.bool_(), "u1", "nullable"),
    # ±infinity read as date.max / date.min and datetime.max / datetime.min.
    "date": ReadType(pa.date32(), ">i4"),
    "timestamp": ReadType(pa.timestamp("us"), ">i8"),
    "timestamptz": ReadType(pa.timestamp("us", tz="UTC"), ">i8"),
    # PostgreSQL's time holds 24:00:00, which datetime.time cannot: it reads as time.max.
    "time": ReadType(pa.time64("us"), ">i8", "time"),
    # (microseconds, days, months): a year counts 365 days and a month 30, as asyncpg and
    # psycopg count them; ±infinity (17+) read as the largest and smallest timedelta64[us].
    "interval": ReadType(pa.duration("us"), ">i8,>i4,>i4"),
    "uuid": ReadType(pa.binary(16), "V16", "uuid"),
    "bytea": ReadType(pa.large_binary()),
    "text": _RAW_TEXT,
    "varchar": _RAW_TEXT,
    "bpchar": _RAW_TEXT,
    # inet's text cast always shows the netmask; abbrev() is inet's own output ('::1').
    "inet": ReadType(pa.large_string(), select="abbrev({})"),
    "json": ReadType(pa.large_string(), decode="json"),
    "jsonb": ReadType(pa.large_string(), decode="json", select="{}::text"),
    "numeric": ReadType(pa.large_string(), decode="decimal", select="{}::text"),
}

# Arrays travel as JSON and come back as Python lists.
_ARRAY = ReadType(pa.large_string(), decode="json", select="to_json({})")
_NUMERIC_ARRAY = ReadType(pa.large_string(), decode="json_decimal", select="to_json({})")
# to_json writes a float's NaN and ±Infinity as the strings "NaN", "Infinity", "-Infinity".
_ARRAYS = {
    "numeric": _NUMERIC_ARRAY,
    "float4": ReadType(pa.large_string(), decode="json_real", select="to_json({})"),
    "float8": ReadType(pa.large_string(), decode="json_float", select="to_json({})"),
}


def read_type(column: PgType) -> ReadType:
    """How a column of this type is read. Types without a dtype of their own (text, varchar,
    char, enums, timetz, inet, cidr, macaddr, and anything not listed) come back as ``str``."""
    if column.array:
        return _ARRAYS.get(column.name, _ARRAY)
    return READ_TYPES.get(column.name, _AS_TEXT)
