"""copy_upsert into a table made with SQL: the write side of the type matrix.

Each accepted case writes a frame of two rows (a NULL among them where the dtype can hold
one) into a column of the case's type, upserts it twice (the second write leaves every row
as it was), then checks what PostgreSQL stored (with SQL) and what read_table returns (what
was written); a third write with the values swapped between the rows updates both.

The frame's keys are in order, so the first write into the empty table takes the direct
path (binary COPY into the table) where every column has the table's type, and the staged
INSERT otherwise; the later writes merge from the stage.

Each refused case writes into a table that already holds a row (and, for the server's
refusals, into an empty one too), and checks the error's class and message, that the
message names the column, and that the table is unchanged: refused by the planner (a type
that would round, pad or reinterpret a value) or by the server (a value the column's type
or its domain does not take)."""

from __future__ import annotations

import datetime as dt
import decimal
import numbers
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources import (
    DatabaseError,
    PostgresResource,
    TableMismatchError,
    WritePlan,
    WriteResult,
    copy_upsert,
    read_table,
)

from .conftest import Database

# The column under test: a name distinctive enough to find in an error message.
COLUMN = "subject"
TABLE = "public.t"
PLAN = WritePlan.from_options(conflict_target="id")

TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN price AS numeric(10,2);
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE DOMAIN positive_big AS bigint CHECK (VALUE > 0);
"""


UTC = dt.UTC
UUID = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
TS = "2024-01-01 10:00:00.123456"


@dataclass(frozen=True)
class Accepted:
    """A column type that takes the frame's values unchanged.

    ``values``: the frame column (two rows); ``dtype`` its pandas dtype, checked so that the
    case writes what it says. ``stored``: what SQL ``fetch`` (an expression, ``{}`` the
    column) returns for the two rows, by default the values themselves (missing: None);
    ``read``: what read_table returns, by default the values."""

    id: str
    sql_type: str
    values: Any
    dtype: str
    stored: Sequence[Any] | None = None
    fetch: str = "{}"
    read: Sequence[Any] | None = None


ACCEPTED = [
    # ---- integers
    Accepted("smallint-int64", "smallint", np.array([-32768, 32767]), "int64"),
    Accepted("integer-int64", "integer", np.array([-(2**31), 2**31 - 1]), "int64"),
    Accepted("bigint-int64", "bigint", np.array([-(2**63), 2**63 - 1]), "int64"),
    Accepted("smallint-Int64-NA", "smallint", pd.array([-32768, None], dtype="Int64"), "Int64"),
    Accepted("integer-Int64-NA", "integer", pd.array([2**31 - 1, None], dtype="Int64"), "Int64"),
    Accepted("bigint-Int64-NA", "bigint", pd.array([-(2**63), None], dtype="Int64"), "Int64"),
    # ---- floats: NaN is stored as NULL (the README) and reads back as NaN
    Accepted(
        "real-float32",
        "real",
        np.array([3.4028235e38, np.nan], dtype="float32"),
        "float32",
        stored=[float(np.float32(3.4028235e38)), None],
    ),
    Accepted("double-float64", "double precision", np.array([0.1, np.nan]), "float64", [0.1, None]),
    Accepted("double-float64-inf", "double precision", np.array([np.inf, -np.inf]), "float64"),
    Accepted(
        "double-float32",
        "double precision",
        np.array([0.1, np.nan], dtype="float32"),
        "float32",
        stored=[float(np.float32(0.1)), None],
    ),
    # ---- numeric
    Accepted(
        "numeric-Decimal",
        "numeric",
        [decimal.Decimal("-12345678901234567890.123456789"), None],
        "object",
    ),
    Accepted(
        "numeric-Decimal-scales",
        "numeric",
        [decimal.Decimal("1.5"), decimal.Decimal("-0.125")],
        "object",
    ),
    Accepted(
        "numeric-Decimal-40-digits",
        "numeric",
        [decimal.Decimal("1234567890123456789012345678901234567890.5"), None],
        "object",
    ),
    Accepted(
        "numeric-Decimal-NaN",
        "numeric",
        [decimal.Decimal("NaN"), None],
        "object",
    ),
    Accepted(
        "numeric-Decimal-Infinity",
        "numeric",
        [decimal.Decimal("Infinity"), None],
        "object",
    ),
    Accepted(
        "numeric(10,2)-int64",
        "numeric(10,2)",
        np.array([12345678, -1]),
        "int64",
        stored=[decimal.Decimal("12345678.00"), decimal.Decimal("-1.00")],
        read=[decimal.Decimal("12345678.00"), decimal.Decimal("-1.00")],
    ),
    Accepted(
        "numeric(10,2)-Decimal-that-fits",
        "numeric(10,2)",
        [decimal.Decimal("12345678.50"), decimal.Decimal("-3")],
        "object",
        stored=[decimal.Decimal("12345678.50"), decimal.Decimal("-3.00")],
        read=[decimal.Decimal("12345678.50"), decimal.Decimal("-3.00")],
    ),
    Accepted(
        "domain-numeric(10,2)-int64",
        "price",
        np.array([7, -3]),
        "int64",
        stored=[decimal.Decimal("7.00"), decimal.Decimal("-3.00")],
        read=[decimal.Decimal("7.00"), decimal.Decimal("-3.00")],
    ),
    Accepted("domain-check-int64", "positive", np.array([1, 2**31 - 1]), "int64"),
    # ---- text
    Accepted("text", "text", pd.array(['a,"b"\r\nc', None], dtype="str"), "str"),
    Accepted("text-empty", "text", pd.array(["", "NULL"], dtype="str"), "str"),
    Accepted("varchar(5)", "varchar(5)", pd.array(["héllo", None], dtype="str"), "str"),
    # ---- booleans
    Accepted("boolean-bool", "boolean", np.array([True, False]), "bool"),
    Accepted("boolean-NA", "boolean", pd.array([True, None], dtype="boolean"), "boolean"),
    # ---- dates and times
    Accepted("date", "date", [dt.date(2024, 2, 29), None], "object"),
    Accepted("time", "time", [dt.time(23, 59, 59, 999999), None], "object"),
    Accepted(
        "timestamp",
        "timestamp",
        pd.to_datetime([TS, None]),
        "datetime64[us]",
        stored=[dt.datetime(2024, 1, 1, 10, 0, 0, 123456), None],
    ),
    Accepted(
        "timestamp-ns-1969",
        "timestamp",
        pd.to_datetime(["1969-12-31 23:59:59.999999", None]).as_unit("ns"),
        "datetime64[ns]",
        stored=[dt.datetime(1969, 12, 31, 23, 59, 59, 999999), None],
    ),
    Accepted(
        "timestamptz",
        "timestamptz",
        pd.to_datetime([TS, None]).tz_localize("Europe/Paris"),
        "datetime64[us, Europe/Paris]",
        stored=[dt.datetime(2024, 1, 1, 9, 0, 0, 123456, tzinfo=UTC), None],
    ),
    Accepted(
        "timestamptz(3)-whole-milliseconds",
        "timestamptz(3)",
        pd.to_datetime(["2024-01-01 10:00:00.123", None]).tz_localize("UTC"),
        "datetime64[us, UTC]",
        stored=[dt.datetime(2024, 1, 1, 10, 0, 0, 123000, tzinfo=UTC), None],
    ),
    Accepted(
        "timestamp(0)-whole-seconds",
        "timestamp(0)",
        pd.to_datetime(["2024-01-01 10:00:01", None]),
        "datetime64[us]",
        stored=[dt.datetime(2024, 1, 1, 10, 0, 1), None],
    ),
    Accepted(
        "interval(0)-whole-seconds",
        "interval(0)",
        pd.to_timedelta(["2 days 00:00:03", None]),
        "timedelta64[us]",
        stored=[dt.timedelta(days=2, seconds=3), None],
    ),
    Accepted(
        "timestamptz(6)",
        "timestamptz(6)",
        pd.to_datetime([TS, None]).tz_localize("UTC"),
        "datetime64[us, UTC]",
        stored=[dt.datetime(2024, 1, 1, 10, 0, 0, 123456, tzinfo=UTC), None],
    ),
    Accepted(
        "interval",
        "interval",
        pd.to_timedelta(["1000 days 00:00:00.000001", None]),
        "timedelta64[us]",
        stored=[dt.timedelta(days=1000, microseconds=1), None],
    ),
    Accepted(
        "interval-negative",
        "interval",
        pd.to_timedelta([-pd.Timedelta(days=1, microseconds=1), None]),
        "timedelta64[us]",
        stored=[-dt.timedelta(days=1, microseconds=1), None],
    ),
    # ---- uuid, json, bytes
    Accepted("uuid-UUID", "uuid", [UUID, None], "object"),
    Accepted(
        "uuid-str",
        "uuid",
        pd.array([str(UUID), None], dtype="str"),
        "str",
        stored=[UUID, None],
        read=[UUID, None],
    ),
    Accepted(
        "jsonb-dict",
        "jsonb",
        [{"b": [1, None], "a": 'x,"y"'}, None],
        "object",
        stored=['{"a": "x,\\"y\\"", "b": [1, null]}', None],
        fetch="{}::text",
    ),
    Accepted(
        "json-dict",
        "json",
        [{"b": [1, None], "a": 'x,"y"'}, None],
        "object",
        stored=['{"a": "x,\\"y\\"", "b": [1, null]}', None],
        fetch="{}::text",
    ),
    Accepted("bytea", "bytea", [b"\x00\xff\n\\", None], "object"),
    Accepted("bytea-empty", "bytea", [b"", b"\x00"], "object"),
    # ---- text the server parses (values in the type's own spelling, which reads back as is)
    Accepted(
        "inet",
        "inet",
        pd.array(["192.168.0.1/24", None], dtype="str"),
        "str",
        fetch="{}::text",
    ),
    Accepted(
        "cidr",
        "cidr",
        pd.array(["10.0.0.0/8", None], dtype="str"),
        "str",
        fetch="{}::text",
    ),
    Accepted(
        "macaddr",
        "macaddr",
        pd.array(["08:00:2b:01:02:03", None], dtype="str"),
        "str",
    ),
    Accepted(
        "enum",
        "mood",
        pd.array(["happy", None], dtype="str"),
        "str",
        fetch="{}::text",
    ),
]


@dataclass(frozen=True)
class Refused:
    """A write the package refuses. The table holds row 1 (``literal``) before the write;
    the frame changes row 1 and adds row 2. ``error``: the class raised; ``match``: what the
    message says beyond the column's name (the offending value, for the server's refusals)."""

    id: str
    sql_type: str
    literal: str
    values: Any
    error: type[Exception] | tuple[type[Exception], ...]
    match: str


# Refused by the planner before anything is written: the column's type would change a value.
PLANNED = [
    Refused(
        "numeric(10,2)-Decimal",
        "numeric(10,2)",
        "1.5",
        [decimal.Decimal("1.234"), None],
        TableMismatchError,
        r"numeric\(10,2\), which would round the frame's value 1\.234",
    ),
    Refused(
        "varchar(5)-6-chars",
        "varchar(5)",
        "'abc'",
        pd.array(["abcd", "héllo!"], dtype="str"),
        TableMismatchError,
        "holds at most 5 characters.*héllo!",
    ),
    Refused(
        "char(3)-str",
        "char(3)",
        "'abc'",
        pd.array(["ab", None], dtype="str"),
        TableMismatchError,
        r"character\(3\).*would not store unchanged",
    ),
    Refused(
        "timestamptz(3)",
        "timestamptz(3)",
        "'2024-01-01 00:00:00+00'",
        pd.to_datetime([TS, None]).tz_localize("UTC"),
        TableMismatchError,
        r"timestamp\(3\) with time zone, which would round the frame's value "
        r"2024-01-01 10:00:00\.123456",
    ),
    Refused(
        "timestamp(0)",
        "timestamp(0)",
        "'2024-01-01 00:00:00'",
        pd.to_datetime([TS, None]),
        TableMismatchError,
        r"timestamp\(0\) without time zone, which would round",
    ),
    Refused(
        "interval(0)",
        "interval(0)",
        "'1 day'",
        pd.to_timedelta(["1.5s", None]),
        TableMismatchError,
        r"interval\(0\), which would round the frame's value 00:00:01\.5",
    ),
    Refused(
        "double-int64",
        "double precision",
        "1",
        np.array([2, 2**53 + 1]),
        TableMismatchError,
        r"double precision.*bigint.*would not store unchanged",
    ),
    # A zone is not added or dropped on the way in (types.fit; the README's "Types" says
    # otherwise).
    Refused(
        "timestamptz-naive",
        "timestamptz",
        "'2024-01-01 00:00:00+00'",
        pd.to_datetime([TS, None]),
        TableMismatchError,
        r"timestamp with time zone.*without time zone.*would not store unchanged",
    ),
    Refused(
        "timestamp-zoned",
        "timestamp",
        "'2024-01-01 00:00:00'",
        pd.to_datetime([TS, None]).tz_localize("UTC"),
        TableMismatchError,
        r"timestamp without time zone.*with time zone.*would not store unchanged",
    ),
    # Arrays are not writable: lists become jsonb, which no array column takes.
    Refused(
        "integer[]-lists",
        "integer[]",
        "'{1,2}'",
        [[1, None], [2]],
        TableMismatchError,
        r"integer\[\].*jsonb.*would not store unchanged",
    ),
    Refused(
        "text[]-lists",
        "text[]",
        "'{a}'",
        [["a", None], None],
        TableMismatchError,
        r"text\[\].*jsonb.*would not store unchanged",
    ),
]

SERVER_ERRORS = (DatabaseError, TableMismatchError)

# Refused by the server when the merge casts or checks the values: the offending value fails
# the whole write, in a table that holds a row or none.
SERVER = [
    Refused(
        "smallint-out-of-range",
        "smallint",
        "1",
        np.array([2, 32768]),
        SERVER_ERRORS,
        "smallint out of range",
    ),
    Refused(
        "numeric(10,2)-too-large",
        "numeric(10,2)",
        "1",
        np.array([2, 10**8]),
        SERVER_ERRORS,
        "numeric field overflow",
    ),
    Refused(
        "domain-check",
        "positive",
        "1",
        np.array([2, -1]),
        SERVER_ERRORS,
        "positive_check",
    ),
    Refused(
        "domain-check-exact-type",
        "positive_big",
        "1",
        np.array([2, -1]),
        SERVER_ERRORS,
        "positive_big_check",
    ),
    Refused(
        "enum-unknown-label",
        "mood",
        "'sad'",
        pd.array(["happy", "angry"], dtype="str"),
        SERVER_ERRORS,
        'enum mood: "angry"',
    ),
    Refused(
        "uuid-bad-str",
        "uuid",
        f"'{UUID}'",
        pd.array([str(uuid.UUID(int=1)), "not-a-uuid"], dtype="str"),
        SERVER_ERRORS,
        'uuid: "not-a-uuid"',
    ),
    Refused(
        "inet-bad",
        "inet",
        "'10.0.0.1'",
        pd.array(["10.0.0.2", "10.0.0.256"], dtype="str"),
        SERVER_ERRORS,
        'inet: "10.0.0.256"',
    ),
    Refused(
        "cidr-host-bits",
        "cidr",
        "'10.0.0.0/8'",
        pd.array(["10.1.0.0/16", "10.0.0.1/8"], dtype="str"),
        SERVER_ERRORS,
        'cidr value: "10.0.0.1/8"',
    ),
    Refused(
        "macaddr-bad",
        "macaddr",
        "'08:00:2b:01:02:03'",
        pd.array(["08:00:2b:01:02:04", "08:00:2b:01:02"], dtype="str"),
        SERVER_ERRORS,
        'macaddr: "08:00:2b:01:02"',
    ),
]


def _params(cases: Sequence[Accepted]) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases]


def _create(db: Database, sql_type: str) -> None:
    db.execute(f"{TYPES} CREATE TABLE {TABLE} (id bigint PRIMARY KEY, {COLUMN} {sql_type})")


def _frame(values: Any) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(1, len(values) + 1), COLUMN: values})


def _upsert(postgres: PostgresResource, frame: pd.DataFrame) -> WriteResult:
    return postgres.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table="t", plan=PLAN)
    )


def _read(postgres: PostgresResource) -> pd.DataFrame:
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    return read.sort_values("id").reset_index(drop=True)


def _missing(value: Any) -> bool:
    if isinstance(value, decimal.Decimal):
        return False  # Decimal('NaN') is a value numeric stores, though pandas counts it missing
    return value is None or (not isinstance(value, list | dict) and bool(pd.isna(value)))


def _same(got: Any, expected: Any) -> bool:
    """Equal and of the same kind: a Decimal keeps its digits, text stays text (not a UUID
    or bytes), a missing value is missing (any flavour: the read's dtype decides which)."""
    if _missing(expected):
        return _missing(got)
    if isinstance(expected, decimal.Decimal):
        return isinstance(got, decimal.Decimal) and got.as_tuple() == expected.as_tuple()
    if isinstance(expected, str | bytes | dt.time | uuid.UUID | list | dict):
        # isinstance: asyncpg's UUID is a subclass of uuid.UUID.
        return isinstance(got, type(expected)) and bool(got == expected)
    if isinstance(expected, dt.date) and not isinstance(expected, dt.datetime):
        return type(got) is dt.date and got == expected
    if isinstance(expected, bool | np.bool_):
        return isinstance(got, bool | np.bool_) and bool(got == expected)
    if isinstance(expected, numbers.Integral):
        # An integer reads back as an integer (or, from numeric, a Decimal), never a float.
        kinds = numbers.Integral | decimal.Decimal
        return isinstance(got, kinds) and not isinstance(got, bool) and bool(got == expected)
    if isinstance(expected, numbers.Real):
        return isinstance(got, float | np.floating) and bool(got == expected)
    return not _missing(got) and bool(got == expected)


def _values(column: Any) -> list[Any]:
    return list(pd.Series(column, dtype=object))


def _stored(db: Database, fetch: str) -> list[Any]:
    expression = fetch.format(COLUMN)
    return [row["v"] for row in db.fetch(f"SELECT {expression} AS v FROM {TABLE} ORDER BY id")]


def _names_column(message: str) -> bool:
    return re.search(rf"[\"']{COLUMN}[\"']", message) is not None


@pytest.mark.parametrize("case", _params(ACCEPTED))
def test_written_twice_stored_and_read_back_unchanged(
    case: Accepted, postgres: PostgresResource, db: Database
) -> None:
    _create(db, case.sql_type)
    frame = _frame(case.values)
    assert str(frame[COLUMN].dtype) == case.dtype
    written = _values(case.values)

    first = _upsert(postgres, frame)
    assert (first.rows_inserted, first.rows_updated) == (2, 0)
    after_first = db.snapshot(TABLE)
    second = _upsert(postgres, frame)
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (0, 0, 2)
    assert db.snapshot(TABLE) == after_first

    stored = _stored(db, case.fetch)
    expected = [None if _missing(v) else v for v in (case.stored or written)]
    assert all(_same(g, e) for g, e in zip(stored, expected, strict=True)), (
        f"stored {stored!r}, expected {expected!r}"
    )

    read = _read(postgres)
    assert list(read.columns) == ["id", COLUMN]
    assert read["id"].tolist() == [1, 2]
    got = _values(read[COLUMN])
    back = list(case.read or written)
    assert all(_same(g, e) for g, e in zip(got, back, strict=True)), f"read {got!r}, wrote {back!r}"

    # The values swapped between the rows: both rows change, and are updated.
    swapped = _frame(case.values[::-1])
    third = _upsert(postgres, swapped)
    assert (third.rows_inserted, third.rows_updated, third.rows_unchanged) == (0, 2, 0)
    assert all(_same(g, e) for g, e in zip(_stored(db, case.fetch), expected[::-1], strict=True))


def _refuse(case: Refused, postgres: PostgresResource, db: Database) -> None:
    before = db.snapshot(TABLE)
    with pytest.raises(case.error, match=case.match) as refused:
        _upsert(postgres, _frame(case.values))
    assert db.snapshot(TABLE) == before
    message = str(refused.value)
    assert _names_column(message), message


@pytest.mark.parametrize("case", PLANNED, ids=[c.id for c in PLANNED])
def test_a_type_that_would_change_values_is_refused(
    case: Refused, postgres: PostgresResource, db: Database
) -> None:
    _create(db, case.sql_type)
    db.execute(f"INSERT INTO {TABLE} VALUES (1, {case.literal})")
    _refuse(case, postgres, db)


@pytest.mark.parametrize("prefilled", [True, False], ids=["with-a-row", "empty"])
@pytest.mark.parametrize("case", SERVER, ids=[c.id for c in SERVER])
def test_a_value_the_server_refuses_fails_the_whole_write(
    case: Refused, prefilled: bool, postgres: PostgresResource, db: Database
) -> None:
    _create(db, case.sql_type)
    if prefilled:
        db.execute(f"INSERT INTO {TABLE} VALUES (1, {case.literal})")
    _refuse(case, postgres, db)
