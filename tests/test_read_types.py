"""read.read_table on tables made with SQL: what each PostgreSQL type reads as (dtype and exact
value, NULL included), ±infinity in dates and timestamps, values of many MiB among short
ones, and the column and partition choices."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from resources import PostgresResource, read_table
from resources.binary_copy import PIECE_BYTES
from resources.errors import TableMismatchError
from resources.options import KeySlice, TimeWindowSlice

from .conftest import Database, new_database

UTC = dt.UTC
MiB = 1 << 20


@dataclass(frozen=True)
class Case:
    """One column of the matrix: its SQL type, the SQL literal stored in row 1, and what
    read_table returns: the column's dtype, row 1's value, and row 2's (NULL) value."""

    id: str
    sql_type: str
    literal: str
    dtype: str
    value: Any
    missing: Any = None  # None, pd.NA, pd.NaT or np.nan: how NULL comes back


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN price AS numeric(10,2);
CREATE DOMAIN label AS text;
"""

CASES = [
    Case("smallint", "smallint", "-32768", "Int16", -32768, pd.NA),
    Case("integer", "integer", "2147483647", "Int32", 2147483647, pd.NA),
    Case("bigint", "bigint", "-9223372036854775808", "Int64", -(2**63), pd.NA),
    Case("bigint-not-null", "bigint NOT NULL DEFAULT 7", "42", "int64", 42, 7),
    Case("real", "real", "3.4028235e+38", "float32", np.float32(3.4028235e38), np.nan),
    Case("double", "double precision", "0.1", "float64", 0.1, np.nan),
    Case(
        "numeric",
        "numeric",
        "'-12345678901234567890.123456789000'",
        "object",
        decimal.Decimal("-12345678901234567890.123456789000"),
    ),
    Case("numeric-nan", "numeric", "'NaN'", "object", decimal.Decimal("NaN")),
    Case("numeric(10,2)", "numeric(10,2)", "12345678.9", "object", decimal.Decimal("12345678.90")),
    Case("text", "text", "'plain'", "str", "plain", np.nan),
    Case(
        "text-quoted",
        "text",
        "E'a,\"b\"\\r\\nc\\n'",
        "str",
        'a,"b"\r\nc\n',
        np.nan,
    ),
    Case("text-empty", "text", "''", "str", "", np.nan),
    Case("text-NULL-word", "text", "'NULL'", "str", "NULL", np.nan),
    Case("varchar(5)", "varchar(5)", "'héllo'", "str", "héllo", np.nan),
    Case("char(3)", "char(3)", "'ab'", "str", "ab ", np.nan),
    Case("boolean", "boolean", "true", "boolean", True, pd.NA),
    Case("boolean-not-null", "boolean NOT NULL DEFAULT false", "true", "bool", True, False),
    Case("date", "date", "'2024-02-29'", "object", dt.date(2024, 2, 29)),
    Case("time", "time", "'23:59:59.999999'", "object", dt.time(23, 59, 59, 999999)),
    Case("time-24:00", "time", "'24:00:00'", "object", dt.time.max),
    Case("time(3)", "time(3)", "'10:00:00.1234'", "object", dt.time(10, 0, 0, 123000)),
    Case("timetz", "timetz", "'10:00:00+02'", "str", "10:00:00+02", np.nan),
    Case(
        "timestamp",
        "timestamp",
        "'2024-01-01 10:00:00.123456'",
        "datetime64[us]",
        pd.Timestamp("2024-01-01 10:00:00.123456"),
        pd.NaT,
    ),
    Case(
        "timestamp-1969",
        "timestamp",
        "'1969-12-31 23:59:59.999999'",
        "datetime64[us]",
        pd.Timestamp("1969-12-31 23:59:59.999999"),
        pd.NaT,
    ),
    Case(
        "timestamp(0)",
        "timestamp(0)",
        "'2024-01-01 10:00:00.6'",
        "datetime64[us]",
        pd.Timestamp("2024-01-01 10:00:01"),
        pd.NaT,
    ),
    Case(
        "timestamptz",
        "timestamptz",
        "'2024-01-01 10:00:00.123456+02'",
        "datetime64[us, UTC]",
        pd.Timestamp("2024-01-01 08:00:00.123456", tz="UTC"),
        pd.NaT,
    ),
    Case(
        "timestamptz(3)",
        "timestamptz(3)",
        "'2024-01-01 10:00:00.123456+00'",
        "datetime64[us, UTC]",
        pd.Timestamp("2024-01-01 10:00:00.123", tz="UTC"),
        pd.NaT,
    ),
    Case(
        "timestamptz-year-1",
        "timestamptz",
        "'0001-01-01 00:00:00+00'",
        "datetime64[us, UTC]",
        pd.Timestamp("0001-01-01", tz="UTC"),
        pd.NaT,
    ),
    Case(
        "interval",
        "interval",
        "'2 mons 3 days 04:05:06.789012'",
        "timedelta64[us]",
        pd.Timedelta(days=63, hours=4, minutes=5, seconds=6, microseconds=789012),
        pd.NaT,
    ),
    Case(
        "interval-negative",
        "interval",
        "'-1 days -00:00:00.000001'",
        "timedelta64[us]",
        pd.Timedelta(days=-1, microseconds=-1),
        pd.NaT,
    ),
    # A year counts 365 days, a month 30, as asyncpg and psycopg count them.
    Case(
        "interval-years",
        "interval",
        "'1 year 2 mons 3 days 04:05:06.789'",
        "timedelta64[us]",
        pd.Timedelta(days=428, hours=4, minutes=5, seconds=6, milliseconds=789),
        pd.NaT,
    ),
    Case(
        "interval-negative-years",
        "interval",
        "'-100 years -13 mons 1 day'",
        "timedelta64[us]",
        pd.Timedelta(days=-(101 * 365 + 30) + 1),
        pd.NaT,
    ),
    Case(
        "interval(0)",
        "interval(0)",
        "'1 day 00:00:01.6'",
        "timedelta64[us]",
        pd.Timedelta(days=1, seconds=2),
        pd.NaT,
    ),
    Case(
        "uuid",
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        "object",
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ),
    Case(
        "json",
        "json",
        """'{"b": [1, null], "a": "x,\\"y\\""}'""",
        "object",
        {"b": [1, None], "a": 'x,"y"'},
    ),
    Case("json-string", "json", """'"just text"'""", "object", "just text"),
    Case(
        "jsonb",
        "jsonb",
        """'{"a": 1.5, "b": [true, null]}'""",
        "object",
        {"a": 1.5, "b": [True, None]},
    ),
    Case("bytea", "bytea", "'\\x00ff0a22'::bytea", "object", b"\x00\xff\n\x22"),
    Case("bytea-empty", "bytea", "''::bytea", "object", b""),
    Case("inet", "inet", "'192.168.0.1/24'", "str", "192.168.0.1/24", np.nan),
    Case("inet-host", "inet", "'::1'", "str", "::1", np.nan),  # as PostgreSQL prints it
    Case("cidr", "cidr", "'10.0.0.0/8'", "str", "10.0.0.0/8", np.nan),
    Case("macaddr", "macaddr", "'08:00:2b:01:02:03'", "str", "08:00:2b:01:02:03", np.nan),
    Case("enum", "mood", "'happy'", "str", "happy", np.nan),
    Case("domain-numeric", "price", "1.5", "object", decimal.Decimal("1.50")),
    Case("domain-text", "label", "'x'", "str", "x", np.nan),
    Case("int[]", "integer[]", "'{1,NULL,3}'", "object", [1, None, 3]),
    Case(
        "numeric[]",
        "numeric[]",
        "'{12345678901234567890.123456789,NULL,1.50}'",
        "object",
        [decimal.Decimal("12345678901234567890.123456789"), None, decimal.Decimal("1.50")],
    ),
    Case("text[]", "text[]", """'{"a,b","c\\"d",NULL,""}'""", "object", ["a,b", 'c"d', None, ""]),
    Case("enum[]", "mood[]", "'{sad,happy}'", "object", ["sad", "happy"]),
]


def _column(case: Case) -> str:
    return f'"{case.id}"'


@pytest.fixture(scope="module")
def matrix(server_url: str) -> Iterator[pd.DataFrame]:
    """One table with a column of each case, row 1 holding its literal and row 2 NULL (or the
    default of a NOT NULL column), read once by read_table."""
    with new_database(server_url) as url:
        db = Database(url)
        db.execute(TYPES)
        columns = ", ".join(f"{_column(c)} {c.sql_type}" for c in CASES)
        db.execute(f"CREATE TABLE public.matrix (id integer NOT NULL, {columns})")
        names = ", ".join(_column(c) for c in CASES)
        values = ", ".join(c.literal for c in CASES)
        db.execute(f"INSERT INTO public.matrix (id, {names}) VALUES (1, {values})")
        db.execute("INSERT INTO public.matrix (id) VALUES (2)")
        postgres = PostgresResource(url=url)
        try:
            read = postgres.run(lambda conn: read_table(conn, schema="public", table="matrix"))
        finally:
            postgres.dispose()
        yield read.sort_values("id").reset_index(drop=True)


def _same(got: Any, expected: Any) -> bool:
    """Equal and of the same kind: a Decimal keeps its digits, a missing value its flavour."""
    if expected is None or expected is pd.NA or expected is pd.NaT:
        return got is expected
    if isinstance(expected, float) and np.isnan(expected):
        return isinstance(got, float | np.floating) and bool(np.isnan(got))
    if isinstance(expected, decimal.Decimal):
        return isinstance(got, decimal.Decimal) and got.as_tuple() == expected.as_tuple()
    if isinstance(expected, str | bytes | dt.date | dt.time | uuid.UUID | list | dict):
        return type(got) is type(expected) and bool(got == expected)
    return bool(got == expected)


def test_matrix_columns_keep_table_order(matrix: pd.DataFrame) -> None:
    assert list(matrix.columns) == ["id", *(c.id for c in CASES)]
    assert str(matrix["id"].dtype) == "int32"  # NOT NULL: plain numpy
    assert matrix["id"].tolist() == [1, 2]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_type_reads_as(case: Case, matrix: pd.DataFrame) -> None:
    column = matrix[case.id]
    assert str(column.dtype) == case.dtype
    value, missing = column.iloc[0], column.iloc[1]
    assert _same(value, case.value), f"{value!r} != {case.value!r}"
    assert _same(missing, case.missing), f"NULL read as {missing!r}"
    if case.dtype == "object" and not isinstance(case.value, str):
        assert not isinstance(value, str)


def test_floats_keep_nan_infinities_and_every_digit(
    postgres: PostgresResource, db: Database
) -> None:
    # A role that rounds floats and prints dates the SQL way: the read must not care.
    db.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET extra_float_digits = 0', "
        "current_database()); EXECUTE format('ALTER DATABASE %I SET DateStyle = ''SQL, DMY''', "
        "current_database()); END $$"
    )
    db.execute(
        "CREATE TABLE f (id int, r real, d double precision, day date, at timestamptz, "
        "ra real[], da double precision[]);"
        "INSERT INTO f (id, r, d, day, at) VALUES "
        "(2, 'Infinity', 'Infinity', NULL, NULL), (3, '-Infinity', '-Infinity', NULL, NULL), "
        "(4, 1.17549435e-38, 2.2250738585072014e-308, NULL, NULL), "
        "(5, 0.1, 0.30000000000000004, NULL, NULL);"
        "INSERT INTO f VALUES "
        "(1, 'NaN', 'NaN', '2024-01-02', '2024-01-02 03:04:05.678901+00', "
        "'{NaN,Infinity,-Infinity,NULL,2,1.17549435e-38}', "
        "'{{NaN,-Infinity},{NULL,0.30000000000000004}}')"
    )
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="f"))
    read = read.sort_values("id").reset_index(drop=True)
    assert str(read["r"].dtype) == "float32" and str(read["d"].dtype) == "float64"
    assert np.isnan(read["r"].iloc[0]) and np.isnan(read["d"].iloc[0])
    assert (
        read["r"].iloc[1:].tolist()
        == np.array([np.inf, -np.inf, 1.17549435e-38, 0.1], dtype=np.float32).tolist()
    )
    assert read["d"].iloc[1:].tolist() == [np.inf, -np.inf, 2.2250738585072014e-308, 0.1 + 0.2]
    # Arrays travel as JSON, where NaN and ±Infinity are strings: they read as floats.
    reals, doubles = read["ra"].iloc[0], read["da"].iloc[0]
    assert np.isnan(reals[0]) and np.isnan(doubles[0][0])
    assert reals[1:] == [np.inf, -np.inf, None, 2.0, float(np.float32(1.17549435e-38))]
    assert doubles[0][1:] == [-np.inf] and doubles[1] == [None, 0.1 + 0.2]
    assert all(type(v) is float for v in [*reals[:3], *reals[4:], doubles[0][1], doubles[1][1]])
    assert read["day"].iloc[0] == dt.date(2024, 1, 2)
    assert read["at"].iloc[0] == pd.Timestamp("2024-01-02 03:04:05.678901", tz="UTC")
    # The settings the read changed were its own: a new session still has the database's.
    assert db.fetch("SHOW extra_float_digits") == [{"extra_float_digits": "0"}]


def test_infinity_reads_as_the_largest_and_smallest_values(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE TABLE inf (id int, d date, ts timestamp, ts0 timestamp(0), tz timestamptz,"
        " tz3 timestamptz(3));"
        "INSERT INTO inf VALUES"
        " (1, 'infinity', 'infinity', 'infinity', 'infinity', 'infinity'),"
        " (2, '-infinity', '-infinity', '-infinity', '-infinity', '-infinity'),"
        " (3, '2024-01-02', '2024-01-02 03:04:05.678901', '2024-01-02 03:04:05',"
        "  '2024-01-02 03:04:05.678901+00', '2024-01-02 03:04:05.678+00'),"
        " (4, NULL, NULL, NULL, NULL, NULL)"
    )
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="inf"))
    read = read.sort_values("id").reset_index(drop=True)
    assert read["d"].tolist() == [dt.date.max, dt.date.min, dt.date(2024, 1, 2), None]
    for name in ("ts", "ts0"):
        assert str(read[name].dtype) == "datetime64[us]"
    for name in ("tz", "tz3"):
        assert str(read[name].dtype) == "datetime64[us, UTC]"
    assert read["ts"].iloc[0] == pd.Timestamp("9999-12-31 23:59:59.999999") == dt.datetime.max
    assert read["ts"].iloc[1] == pd.Timestamp(dt.datetime.min)
    assert read["ts0"].iloc[0] == pd.Timestamp(dt.datetime.max)  # not rounded to the column's 0
    assert read["tz"].iloc[0] == read["tz3"].iloc[0] == pd.Timestamp(dt.datetime.max, tz="UTC")
    assert read["tz"].iloc[1] == read["tz3"].iloc[1] == pd.Timestamp(dt.datetime.min, tz="UTC")
    finite = read.iloc[2]
    assert finite["ts"] == pd.Timestamp("2024-01-02 03:04:05.678901")
    assert finite["ts0"] == pd.Timestamp("2024-01-02 03:04:05")
    assert finite["tz"] == pd.Timestamp("2024-01-02 03:04:05.678901", tz="UTC")
    assert finite["tz3"] == pd.Timestamp("2024-01-02 03:04:05.678", tz="UTC")
    assert read.iloc[3, 1:].isna().all()


def test_timestamps_before_year_1_and_after_9999_read_exactly(
    postgres: PostgresResource, db: Database
) -> None:
    """pandas' microsecond timestamps span ±290,000 years around 1970: nearly all of
    PostgreSQL's range."""
    db.execute(
        "CREATE TABLE far_ts (id int, ts timestamp, tz timestamptz);"
        "INSERT INTO far_ts VALUES (1, '10000-01-01 00:00:00.000001', '200000-12-31 23:59:59+00'),"
        " (2, '4713-01-01 00:00:00 BC', '0001-12-31 23:59:59.999999+00 BC')"
    )
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="far_ts"))
    read = read.sort_values("id").reset_index(drop=True)
    expected = db.fetch(
        "SELECT (extract(epoch FROM ts) * 1000000)::bigint AS ts,"
        " (extract(epoch FROM tz) * 1000000)::bigint AS tz FROM far_ts ORDER BY id"
    )
    assert read["ts"].astype("int64").tolist() == [row["ts"] for row in expected]
    assert read["tz"].astype("int64").tolist() == [row["tz"] for row in expected]
    # The last 30 years of PostgreSQL's range do not fit: an error, never a wrapped value.
    db.execute("INSERT INTO far_ts VALUES (3, NULL, '294276-12-31 23:59:59+00')")
    with pytest.raises(TableMismatchError, match=r"public\.far_ts holds a value .*column 'tz'"):
        postgres.run(lambda conn: read_table(conn, schema="public", table="far_ts"))


def test_infinite_interval_reads_as_the_largest_and_smallest_values(
    postgres: PostgresResource, db: Database
) -> None:
    if db.fetch("SELECT current_setting('server_version_num')::int / 10000 AS v")[0]["v"] < 17:
        pytest.skip("infinite intervals need PostgreSQL 17 or later")
    db.execute(
        "CREATE TABLE i (id int, v interval);"
        "INSERT INTO i VALUES (1, 'infinity'), (2, '-infinity'), (3, '1 day'), (4, NULL)"
    )
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="i"))
    got = read.sort_values("id")["v"].tolist()
    largest = pd.Timedelta(np.timedelta64(2**63 - 1, "us"))
    assert got[:3] == [largest, -largest, pd.Timedelta(days=1)] and got[3] is pd.NaT


def test_an_interval_longer_than_timedelta_holds_fails_naming_its_column(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE TABLE long_i (id int, v interval); INSERT INTO long_i VALUES (1, '178000000 years')"
    )
    with pytest.raises(TableMismatchError, match=r"public\.long_i holds a value .*column 'v'"):
        postgres.run(lambda conn: read_table(conn, schema="public", table="long_i"))
    read = postgres.run(
        lambda conn: read_table(conn, schema="public", table="long_i", columns="id")
    )
    assert read["id"].tolist() == [1]


def test_a_table_without_columns_fails_saying_so(postgres: PostgresResource, db: Database) -> None:
    db.execute("CREATE TABLE no_columns (); INSERT INTO no_columns DEFAULT VALUES")
    with pytest.raises(TableMismatchError, match=r"public\.no_columns has no columns.*add a"):
        postgres.run(lambda conn: read_table(conn, schema="public", table="no_columns"))


def test_a_domain_over_a_domain_reads_as_its_base_type(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE DOMAIN price AS numeric(10,2); CREATE DOMAIN list_price AS price;"
        "CREATE TABLE p (v list_price); INSERT INTO p VALUES (1.5)"
    )
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="p"))
    assert read["v"].tolist() == [decimal.Decimal("1.50")]


# ---- values longer than Arrow's CSV block --------------------------------------------------------


def _letters(size: int, seed: int) -> str:
    """``size`` characters that COPY sends unquoted (no comma, quote or line break)."""
    alphabet = np.frombuffer(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "u1"
    )
    picks = np.random.default_rng(seed).integers(0, len(alphabet), size)
    return alphabet[picks].tobytes().decode()


def _huge(kind: str, size: int, seed: int) -> str | bytes:
    return _letters(size, seed) if kind == "text" else random.Random(seed).randbytes(size)


@pytest.mark.parametrize("kind", ["text", "bytea"])
def test_64_mb_values_round_trip(kind: str, postgres: PostgresResource, db: Database) -> None:
    db.execute(f"CREATE TABLE big (id int, v {kind})")
    huge = _huge(kind, 64 * MiB, seed=1)
    # Stored first, it arrives alone: a piece of one unquoted row 64 MB (text) or 128 MB (hex)
    # long. The rows after it: quoted values (longer than a block), NULL, empty, and another
    # long value among short ones.
    quoted = 'x,"y"\r\n' * (3 * MiB // 7)
    rows: list[str | bytes | None] = (
        [huge, "a", quoted, None, "", _huge(kind, 5 * MiB, seed=2), "z"]
        if kind == "text"
        else [huge, b"\x00", quoted.encode(), None, b"", _huge(kind, 5 * MiB, seed=2), b"\n"]
    )
    for i, value in enumerate(rows, 1):
        db.fetch("INSERT INTO big VALUES ($1, $2)", i, value)
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="big"))
    assert str(read["v"].dtype) == ("str" if kind == "text" else "object")
    got = read.sort_values("id")["v"].tolist()
    del read
    lengths = [len(v) if isinstance(v, str | bytes) else "NULL" for v in got]
    assert lengths == [len(v) if v is not None else "NULL" for v in rows]
    # Compared without pytest's diff, which would print 64 MB.
    same = [type(g) is type(v) and g == v for g, v in zip(got, rows, strict=True) if v is not None]
    assert all(same), f"values changed on the way back: {same}"


@pytest.mark.parametrize(
    "size",
    # Arrow's default block is 1 MiB: rows of about that size once failed to parse.
    [MiB - 2, MiB, 2 * MiB, PIECE_BYTES + 1],
    ids=["block-2", "block", "2MiB", "piece+1"],
)
def test_long_rows_among_many_short_ones(
    size: int, postgres: PostgresResource, db: Database
) -> None:
    # Enough short rows that the long ones land inside, at the start and at the end of pieces.
    db.execute(
        "CREATE TABLE mixed (id int, note text);"
        "INSERT INTO mixed SELECT i, 'row ' || i FROM generate_series(1, 300000) AS i"
    )
    longs = {i: _letters(size, seed=i) for i in (1, 150_000, 150_001, 300_000)}
    for i, value in longs.items():
        db.fetch("UPDATE mixed SET note = $2 WHERE id = $1", i, value)
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="mixed"))
    assert len(read) == 300_000
    notes = dict(zip(read["id"].tolist(), read["note"].tolist(), strict=True))
    same = all(notes[i] == value for i, value in longs.items())
    assert same, "a long row changed on the way back"
    assert all(notes[i] == f"row {i}" for i in range(2, 150_000, 997))


# ---- columns and partitions ----------------------------------------------------------------------


@pytest.fixture
def events(db: Database) -> Database:
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.events"
        " (id int PRIMARY KEY, at timestamptz(3), region text, amount numeric(10,2));"
        "INSERT INTO shop.events VALUES"
        " (1, '2024-01-01 00:00:00+00', 'eu', 1.5),"
        " (2, '2024-01-01 23:59:59.999+00', 'us', 2),"
        " (3, '2024-01-02 00:00:00+00', 'eu', 3),"
        " (4, '2023-12-31 23:59:59.999+00', 'asia', NULL),"
        " (5, '2024-01-01 12:00:00+00', NULL, 5)"
    )
    return db


DAY = TimeWindowSlice(
    "at", dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)
)


def _read(postgres: PostgresResource, **options: Any) -> pd.DataFrame:
    read = postgres.run(lambda conn: read_table(conn, schema="shop", table="events", **options))
    return read.sort_values("id").reset_index(drop=True)


def test_columns_subset_in_the_order_asked(events: Database, postgres: PostgresResource) -> None:
    read = _read(postgres, columns=["amount", "id"])
    assert list(read.columns) == ["amount", "id"]
    assert str(read["id"].dtype) == "int32"
    assert read["amount"].tolist() == [
        decimal.Decimal("1.50"),
        decimal.Decimal("2.00"),
        decimal.Decimal("3.00"),
        None,
        decimal.Decimal("5.00"),
    ]
    # One name alone is taken as one column, not as a sequence of letters.
    region = postgres.run(
        lambda conn: read_table(conn, schema="shop", table="events", columns="region")
    )
    assert list(region.columns) == ["region"] and region["region"].isna().sum() == 1


def test_time_window_partition(events: Database, postgres: PostgresResource) -> None:
    read = _read(postgres, partition=[DAY])
    assert read["id"].tolist() == [1, 2, 5]
    assert str(read["at"].dtype) == "datetime64[us, UTC]"
    assert read["at"].iloc[1] == pd.Timestamp("2024-01-01 23:59:59.999", tz="UTC")


def test_key_partition_and_both(events: Database, postgres: PostgresResource) -> None:
    assert _read(postgres, partition=[KeySlice("region", ("eu", "asia"))])["id"].tolist() == [
        1,
        3,
        4,
    ]
    both = _read(postgres, columns=["id"], partition=[DAY, KeySlice("region", ("eu", "us"))])
    assert both["id"].tolist() == [1, 2]
    assert list(both.columns) == ["id"]


def test_an_empty_slice_keeps_the_dtypes(events: Database, postgres: PostgresResource) -> None:
    read = _read(postgres, partition=[KeySlice("region", ("nowhere",))])
    assert read.empty and list(read.columns) == ["id", "at", "region", "amount"]
    assert str(read["at"].dtype) == "datetime64[us, UTC]" and str(read["id"].dtype) == "int32"


def test_missing_table_column_or_partition_column(
    events: Database, postgres: PostgresResource
) -> None:
    with pytest.raises(TableMismatchError, match=r"table shop\.nope does not exist"):
        postgres.run(lambda conn: read_table(conn, schema="shop", table="nope"))
    with pytest.raises(TableMismatchError, match=r"columns \['colour'\] are not in table shop"):
        _read(postgres, columns=["id", "colour"])
    with pytest.raises(TableMismatchError, match="partition_expr column 'colour'"):
        _read(postgres, partition=[KeySlice("colour", ("red",))])


def test_inside_a_callers_transaction_its_time_zone_is_kept(
    events: Database, postgres: PostgresResource
) -> None:
    async def work(conn: AsyncConnection) -> tuple[pd.DataFrame, str, str]:
        async with conn.begin():
            await conn.execute(text("SET LOCAL TimeZone = 'Asia/Tokyo'"))
            await conn.execute(text("SET LOCAL DateStyle = 'German'"))
            read = await read_table(conn, schema="shop", table="events", partition=[DAY])
            zone = (await conn.execute(text("SHOW TimeZone"))).scalar_one()
            style = (await conn.execute(text("SHOW DateStyle"))).scalar_one()
            return read, zone, style

    read, zone, style = postgres.run(work)
    assert (zone, style) == ("Asia/Tokyo", "German, DMY")
    assert sorted(read["id"].tolist()) == [1, 2, 5]
    assert read["at"].min() == pd.Timestamp("2024-01-01", tz="UTC")


def test_a_value_pandas_cannot_hold_fails_naming_the_table(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE far (id int, d date); INSERT INTO far VALUES (1, '10000-01-01')")
    with pytest.raises(TableMismatchError, match=r"table public\.far holds a value .*column 'd'"):
        postgres.run(lambda conn: read_table(conn, schema="public", table="far"))
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="far", columns=["id"]))
    assert read["id"].tolist() == [1]
