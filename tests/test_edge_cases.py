"""Edge cases found in review: transactions, time zones, races, odd relations and types."""

from __future__ import annotations

import asyncio
import decimal
import struct
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from resources import (
    ConfigurationError,
    DatabaseError,
    FrameError,
    PostgresResource,
    TableMismatchError,
    TimeWindowSlice,
    WritePlan,
    WritePlanError,
    binary_copy,
    copy_upsert,
    read_table,
)
from resources.types import PgType, read_type

from .conftest import Database

KEYED = WritePlan.from_options(conflict_target="id")

# Every test runs on both merge statements (see conftest.merge_path).
pytestmark = pytest.mark.usefixtures("merge_path")


def write(
    postgres: PostgresResource,
    frame: pd.DataFrame,
    plan: WritePlan = KEYED,
    table: str = "t",
    **kwargs: object,
) -> object:
    return postgres.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table=table, plan=plan, **kwargs)  # type: ignore[arg-type]
    )


def test_write_after_begin_nests_in_the_callers_transaction(
    postgres: PostgresResource, db: Database
) -> None:
    async def begin_write_roll_back(conn: AsyncConnection) -> None:
        await conn.begin()
        await copy_upsert(conn, pd.DataFrame({"id": [1]}), schema="public", table="t", plan=KEYED)
        await conn.rollback()

    postgres.run(begin_write_roll_back)
    assert db.snapshot('public."t"') is None


def test_first_writes_of_many_tables_into_a_new_schema_at_once(database_url: str) -> None:
    async def write_four() -> None:
        url = make_url(database_url).set(drivername="postgresql+asyncpg")
        engine = create_async_engine(url, pool_size=4)

        async def one(i: int) -> None:
            async with engine.connect() as conn:
                frame = pd.DataFrame({"id": [i]})
                await copy_upsert(conn, frame, schema="fresh", table=f"t{i}", plan=KEYED)

        try:
            await asyncio.gather(*(one(i) for i in range(4)))
        finally:
            await engine.dispose()

    asyncio.run(write_four())
    assert Database(database_url).fetch(
        "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'fresh'"
    ) == [{"n": 4}]


@pytest.mark.parametrize(
    ("ddl", "kind"),
    [
        ("CREATE VIEW t AS SELECT 1 AS id", "a view"),
        ("CREATE MATERIALIZED VIEW t AS SELECT 1 AS id", "a materialized view"),
    ],
)
def test_target_that_is_not_a_plain_table_is_named(
    postgres: PostgresResource, db: Database, ddl: str, kind: str
) -> None:
    db.execute(ddl)
    with pytest.raises(TableMismatchError, match=f"public.t is {kind}"):
        write(postgres, pd.DataFrame({"id": [1]}))


def test_all_null_columns_take_the_tables_types(postgres: PostgresResource, db: Database) -> None:
    write(
        postgres,
        pd.DataFrame({"id": [1], "qty": [5], "at": [pd.Timestamp("2024-01-01", tz="UTC")]}),
    )
    write(postgres, pd.DataFrame({"id": [2], "qty": [None], "at": [None]}))
    write(postgres, pd.DataFrame(columns=["id", "qty", "at"]))
    assert db.rows('public."t"', "id")[1] == {"id": 2, "qty": None, "at": None}


def test_list_columns_round_trip_as_jsonb(postgres: PostgresResource, db: Database) -> None:
    frame = pd.DataFrame({"id": [1, 2], "tags": [[1, 2], [3]]})
    for _ in range(2):
        write(postgres, frame)
    assert db.fetch(
        "SELECT format_type(atttypid, NULL) AS t FROM pg_attribute "
        "WHERE attrelid = 't'::regclass AND attname = 'tags'"
    ) == [{"t": "jsonb"}]
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    assert read.sort_values("id")["tags"].tolist() == [[1, 2], [3]]


def test_an_empty_frame_empties_the_table_only_when_replacing(
    postgres: PostgresResource, db: Database
) -> None:
    """Upserting or appending no rows changes nothing; replacing with none leaves no row."""
    empty = pd.DataFrame({"id": pd.Series([], dtype="int64")})
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    for plan in (
        WritePlan.from_options(write_mode="append"),
        WritePlan.from_options(conflict_target="id"),
    ):
        result = write(postgres, empty, plan)
        assert result.rows_deleted == 0 and result.row_count == 2  # type: ignore[attr-defined]
    result = write(postgres, empty, WritePlan.from_options())
    assert result.rows_deleted == 2 and result.row_count == 0  # type: ignore[attr-defined]
    assert db.fetch("SELECT count(*) AS n FROM t") == [{"n": 0}]


def test_reads_fractional_timestamps_and_empty_tables(postgres: PostgresResource) -> None:
    at = pd.to_datetime(["2024-01-01 00:00:00.123456"]).tz_localize("UTC")
    write(postgres, pd.DataFrame({"id": [1], "at": at, "naive": at.tz_localize(None)}))
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    assert read["at"].iloc[0] == at[0] and read["naive"].iloc[0] == at[0].tz_localize(None)
    assert str(read["at"].dtype) == "datetime64[us, UTC]"

    window = TimeWindowSlice(
        "at", datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC)
    )
    empty = postgres.run(
        lambda conn: read_table(conn, schema="public", table="t", partition=[window])
    )
    assert empty.empty and list(empty.columns) == ["id", "at", "naive"]
    assert str(empty["at"].dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"])
def test_reads_text_with_line_breaks_beyond_one_parse_block(
    postgres: PostgresResource, line_break: str
) -> None:
    """Reads are parsed in pieces of 4 MB, and Arrow splits those into blocks at line ends;
    a value holding a line break must be cut at neither."""
    rows = 150_000  # about 7 MB of CSV
    frame = pd.DataFrame(
        {
            "id": range(rows),
            "note": [f'first line {i}{line_break}second, "quoted"' for i in range(rows)],
        }
    )
    write(postgres, frame)
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)


def test_time_zone_of_the_server_does_not_shift_values(
    postgres: PostgresResource, db: Database, database_url: str
) -> None:
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, plain timestamp, zoned timestamptz);"
        f"ALTER DATABASE \"{make_url(database_url).database}\" SET TimeZone = 'America/New_York'"
    )
    noon_utc = pd.Timestamp("2024-01-01 12:00", tz="UTC")
    write(
        postgres,
        pd.DataFrame({"id": [1], "plain": [noon_utc.tz_localize(None)], "zoned": [noon_utc]}),
    )
    stored = db.fetch("SELECT plain::text AS plain, zoned AT TIME ZONE 'UTC' AS zoned FROM t")
    assert stored == [{"plain": "2024-01-01 12:00:00", "zoned": datetime(2024, 1, 1, 12)}]
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    assert read["plain"].iloc[0] == noon_utc.tz_localize(None) and read["zoned"].iloc[0] == noon_utc


def test_a_zoned_frame_never_lands_in_a_naive_column(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, plain timestamp)")
    with pytest.raises(
        TableMismatchError, match=r"column 'plain' .* is timestamp without time zone"
    ):
        write(postgres, pd.DataFrame({"id": [1], "plain": [pd.Timestamp("2024-01-01", tz="UTC")]}))


def test_the_callers_time_zone_is_left_as_it_was(postgres: PostgresResource) -> None:
    async def inside_a_transaction(conn: AsyncConnection) -> str:
        await conn.execute(text("SET TimeZone = 'Asia/Tokyo'"))
        await copy_upsert(conn, pd.DataFrame({"id": [1]}), schema="public", table="t", plan=KEYED)
        await read_table(conn, schema="public", table="t")
        return str((await conn.execute(text("SHOW TimeZone"))).scalar_one())

    assert postgres.run(inside_a_transaction) == "Asia/Tokyo"


def test_partition_write_cannot_move_a_row_from_another_partition(
    postgres: PostgresResource, db: Database
) -> None:
    def day(d: int) -> list[TimeWindowSlice]:
        start = datetime(2024, 1, d, tzinfo=UTC)
        return [TimeWindowSlice("day", start, start.replace(day=d + 1))]

    frame = pd.DataFrame({"id": [1, 2], "day": pd.to_datetime(["2024-01-01"] * 2, utc=True)})
    write(postgres, frame, partition=day(1))
    before = db.snapshot('public."t"')
    moved = pd.DataFrame({"id": [1], "day": pd.to_datetime(["2024-01-02"], utc=True)})
    for mode in ("upsert", "replace"):
        plan = WritePlan.from_options(conflict_target="id", write_mode=mode)
        with pytest.raises(
            FrameError, match=r"key \{'id': 1\} is already stored in another partition"
        ):
            write(postgres, moved, plan, partition=day(2))
        assert db.snapshot('public."t"') == before


def test_time_window_on_a_text_column_is_refused(postgres: PostgresResource) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(WritePlanError, match="needs a date or timestamp column"):
        write(
            postgres,
            pd.DataFrame({"id": [1], "day": ["2024-01-01"]}),
            partition=[TimeWindowSlice("day", start, start.replace(day=2))],
        )


def test_other_unique_constraint_is_named(postgres: PostgresResource, db: Database) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, email text UNIQUE)")
    with pytest.raises(FrameError, match="unique constraint 't_email_key'"):
        write(postgres, pd.DataFrame({"id": [1, 2], "email": ["a@x", "a@x"]}))


def test_too_long_text_names_its_column(postgres: PostgresResource, db: Database) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, code varchar(3))")
    with pytest.raises(TableMismatchError, match=r"column 'code' .* at most 3 characters"):
        write(postgres, pd.DataFrame({"id": [1], "code": ["toolong"]}))
    assert db.snapshot('public."t"') == (0, "d41d8cd98f00b204e9800998ecf8427e")


def test_a_bad_url_fails_the_same_way_every_time() -> None:
    resource = PostgresResource(url="mysql://u:pw@h/db")
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="not PostgreSQL"):
            resource.run(lambda conn: asyncio.sleep(0))
    resource.dispose()


def test_password_in_the_query_string_is_masked() -> None:
    resource = PostgresResource(url="postgresql://loader@db.internal/wh?password=S3cretQ")
    assert "S3cretQ" not in repr(resource)


def test_new_frame_columns_are_added_and_absent_ones_kept(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, keep text DEFAULT 'default', n int)")
    write(postgres, pd.DataFrame({"id": [1], "n": pd.array([5], dtype="int32")}))
    db.execute("UPDATE t SET keep = 'mine'")
    write(
        postgres,
        pd.DataFrame({"id": [1, 2], "n": pd.array([6, 7], dtype="int16"), "extra": [0.5, None]}),
    )
    assert db.rows("t", "id") == [
        {"id": 1, "keep": "mine", "n": 6, "extra": 0.5},
        {"id": 2, "keep": "default", "n": 7, "extra": None},
    ]


def test_absent_not_null_column_without_default_is_named(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, required text NOT NULL)")
    with pytest.raises(
        TableMismatchError, match=r"column 'required' of table public\.t is NOT NULL"
    ):
        write(postgres, pd.DataFrame({"id": [1]}))


def test_two_writers_add_the_same_column_at_once(database_url: str, db: Database) -> None:
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY)")

    async def both() -> None:
        engine = create_async_engine(make_url(database_url).set(drivername="postgresql+asyncpg"))

        async def one(i: int) -> None:
            async with engine.connect() as conn:
                frame = pd.DataFrame({"id": [i], "added": [f"by {i}"]})
                await copy_upsert(conn, frame, schema="public", table="t", plan=KEYED)

        try:
            await asyncio.gather(one(1), one(2))
        finally:
            await engine.dispose()

    asyncio.run(both())
    assert db.rows("t", "id") == [{"id": 1, "added": "by 1"}, {"id": 2, "added": "by 2"}]


def test_users_own_table_with_defaults_generated_columns_and_indexes(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, price double precision NOT NULL CHECK (price >= 0),"
        " qty bigint DEFAULT 1, total double precision GENERATED ALWAYS AS (price * qty) STORED,"
        " created timestamptz DEFAULT '2024-01-01 00:00Z');"
        "CREATE INDEX t_price ON t (price); COMMENT ON TABLE t IS 'mine'"
    )
    oid = db.fetch("SELECT 't'::regclass::oid AS oid")
    for prices in ([2.0, 3.0], [2.0, 4.0]):
        write(postgres, pd.DataFrame({"id": [1, 2], "price": prices}))
    assert db.rows("t", "id") == [
        {
            "id": 1,
            "price": 2.0,
            "qty": 1,
            "total": 2.0,
            "created": datetime(2024, 1, 1, tzinfo=UTC),
        },
        {
            "id": 2,
            "price": 4.0,
            "qty": 1,
            "total": 4.0,
            "created": datetime(2024, 1, 1, tzinfo=UTC),
        },
    ]
    # The same table, never dropped or re-created, with its index and comment.
    assert db.fetch("SELECT 't'::regclass::oid AS oid") == oid
    assert db.fetch("SELECT obj_description('t'::regclass) AS c") == [{"c": "mine"}]
    assert db.fetch("SELECT count(*) AS n FROM pg_indexes WHERE indexname = 't_price'") == [
        {"n": 1}
    ]
    with pytest.raises(TableMismatchError, match="price"):
        write(postgres, pd.DataFrame({"id": [3], "price": [-1.0]}))


def test_two_writers_create_the_same_missing_table_at_once(database_url: str, db: Database) -> None:
    async def both() -> None:
        engine = create_async_engine(make_url(database_url).set(drivername="postgresql+asyncpg"))

        async def one(i: int) -> None:
            async with engine.connect() as conn:
                frame = pd.DataFrame({"id": [i, 100], "v": [i, 0]})
                await copy_upsert(conn, frame, schema="new", table="same", plan=KEYED)

        try:
            await asyncio.gather(*(one(i) for i in range(4)))
        finally:
            await engine.dispose()

    asyncio.run(both())
    assert db.fetch('SELECT count(*) AS n FROM new."same"') == [{"n": 5}]


def test_statement_timeout_names_the_table(database_url: str, db: Database) -> None:
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v bigint);"
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$;"
        "CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()"
    )
    impatient = PostgresResource(url=database_url, statement_timeout=0.5)
    try:
        with pytest.raises(
            DatabaseError, match=r"writing public\.t ran longer than statement_timeout"
        ):
            write(impatient, pd.DataFrame({"id": [1], "v": [1]}))
    finally:
        impatient.dispose()
    assert db.fetch("SELECT count(*) AS n FROM t") == [{"n": 0}]


@pytest.mark.parametrize(
    ("ddl", "frame", "ok"),
    [
        ("v numeric(10,2)", pd.DataFrame({"id": [1], "v": [decimal.Decimal("1.234")]}), False),
        ("v numeric(10,2)", pd.DataFrame({"id": [1], "v": [7]}), True),
        (
            "v timestamp(0)",
            pd.DataFrame({"id": [1], "v": [pd.Timestamp("2024-01-01 00:00:00.7")]}),
            False,
        ),
        ("v char(4)", pd.DataFrame({"id": [1], "v": ["ab"]}), False),
        ("v varchar(2)", pd.DataFrame({"id": [1], "v": ["xy   "]}), False),
        ("v varchar(2)", pd.DataFrame({"id": [1], "v": ["xy"]}), True),
    ],
    ids=[
        "decimal-into-numeric-10-2",
        "integer-into-numeric-10-2",
        "into-timestamp-0",
        "into-char-4",
        "trailing-spaces-into-varchar-2",
        "fits-varchar-2",
    ],
)
def test_type_modifiers_never_round_trim_or_pad(
    postgres: PostgresResource, db: Database, ddl: str, frame: pd.DataFrame, ok: bool
) -> None:
    db.execute(f"CREATE TABLE t (id bigint PRIMARY KEY, {ddl})")
    if ok:
        write(postgres, frame)
        assert db.fetch("SELECT v::text AS v FROM t") in ([{"v": "7.00"}], [{"v": "xy"}])
    else:
        with pytest.raises(TableMismatchError, match=r"column 'v' of table public\.t"):
            write(postgres, frame)
        assert db.snapshot("t") == (0, "d41d8cd98f00b204e9800998ecf8427e")


def test_json_columns_are_found_whatever_the_index(postgres: PostgresResource) -> None:
    frame = pd.DataFrame({"id": [1, 2], "j": [{"a": 1}, [1, 2]]}, index=[0, 0])
    write(postgres, frame)
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t"))
    assert read.sort_values("id")["j"].tolist() == [{"a": 1}, [1, 2]]


def _binary_copy(rows: list[tuple[bytes | None, ...]]) -> bytes:
    """``rows`` (each field's binary form, None for NULL) as COPY's binary format."""
    out = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    for row in rows:
        out += struct.pack(">h", len(row))
        for field in row:
            out += struct.pack(">i", -1) if field is None else struct.pack(">i", len(field)) + field
    return out + struct.pack(">h", -1)


@pytest.mark.parametrize("piece_bytes", [1, 7, 20, 1 << 20])
def test_pieces_are_cut_only_between_rows(
    monkeypatch: pytest.MonkeyPatch, piece_bytes: int
) -> None:
    """Fed a few bytes at a time, the binary decoder finds every row and field whatever piece
    its bytes land in: NULLs, empty values, and line breaks and tabs inside text."""
    monkeypatch.setattr(binary_copy, "PIECE_BYTES", piece_bytes)
    notes = [b"a\nb", b'say "hi"\r\n', None, b"", b"x,\ty", "C:\\new\\ é".encode()]
    data = _binary_copy([(struct.pack(">q", i + 1), note) for i, note in enumerate(notes)])
    decoder = binary_copy.BinaryCopyDecoder(
        {"id": read_type(PgType("int8")), "note": read_type(PgType("text"))}
    )

    async def decode() -> pa.Table:
        for start in range(0, len(data), 3):
            await decoder.feed(data[start : start + 3])
        return await decoder.table(rows=6)

    table = asyncio.run(decode())
    assert (len(decoder.pieces) > 1) == (piece_bytes < len(data))
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert table.column("note").to_pylist() == [n if n is None else n.decode() for n in notes]


def test_a_copy_that_ends_inside_a_row_fails() -> None:
    """Output cut short (a row without its last field) is an error, never a shorter table."""
    data = _binary_copy([(struct.pack(">q", 1), b"abc")])[:-6]
    decoder = binary_copy.BinaryCopyDecoder(
        {"id": read_type(PgType("int8")), "note": read_type(PgType("text"))}
    )

    async def decode() -> pa.Table:
        await decoder.feed(data)
        return await decoder.table(rows=1)

    with pytest.raises(RuntimeError, match="ended inside a row"):
        asyncio.run(decode())


# Found in the third review: duplicates resolved on the server.

DAY = pd.Timestamp("2024-01-01").date()
JANUARY_FIRST = [TimeWindowSlice("day", datetime(2024, 1, 1), datetime(2024, 1, 2))]


def test_a_keyed_append_resolves_repeated_keys(postgres: PostgresResource, db: Database) -> None:
    plan = WritePlan.from_options(conflict_target="id", write_mode="append", duplicates="keep_last")
    result = write(postgres, pd.DataFrame({"id": [1, 1, 2], "v": ["old", "new", "x"]}), plan)
    assert result.rows_staged == 2  # type: ignore[attr-defined]
    assert db.rows('public."t"', "id") == [{"id": 1, "v": "new"}, {"id": 2, "v": "x"}]


def test_a_keyed_append_refuses_repeated_keys_without_a_unique_index(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE public.t (id bigint, v text)")
    plan = WritePlan.from_options(conflict_target="id", write_mode="append")
    with pytest.raises(FrameError, match="appear more than once"):
        write(postgres, pd.DataFrame({"id": [1, 1], "v": ["a", "b"]}), plan)
    assert db.rows('public."t"', "id") == []


def test_a_partitioned_keyed_append_keeps_the_first_copy(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE public.t (id bigint, day date, v text)")
    plan = WritePlan.from_options(
        conflict_target="id", write_mode="append", duplicates="keep_first"
    )
    frame = pd.DataFrame({"id": [1, 1], "day": [DAY, DAY], "v": ["first", "second"]})
    write(postgres, frame, plan, partition=JANUARY_FIRST)
    assert db.fetch("SELECT id, v FROM public.t") == [{"id": 1, "v": "first"}]


def test_a_dropped_copy_is_not_checked_against_the_partition(
    postgres: PostgresResource, db: Database
) -> None:
    plan = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    frame = pd.DataFrame(
        {"id": [1, 1], "day": [pd.Timestamp("2023-12-31").date(), DAY], "v": ["dropped", "kept"]}
    )
    write(postgres, frame, plan, partition=JANUARY_FIRST)
    assert db.fetch("SELECT id, v FROM public.t") == [{"id": 1, "v": "kept"}]


def test_a_dropped_copy_is_not_checked_against_varchar_lengths(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE public.t (id bigint PRIMARY KEY, v varchar(3))")
    plan = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    write(postgres, pd.DataFrame({"id": [1, 1], "v": ["toolong", "ok"]}), plan)
    assert db.fetch("SELECT id, v FROM public.t") == [{"id": 1, "v": "ok"}]


def test_many_copies_of_one_key_keep_the_last(postgres: PostgresResource, db: Database) -> None:
    """A self-join of the copies would grow with their square; a grouped one does not."""
    db.execute("CREATE TABLE public.t (id bigint PRIMARY KEY, v bigint)")
    db.execute("INSERT INTO public.t VALUES (-1, 0)")
    plan = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    copies = 20_000
    result = write(postgres, pd.DataFrame({"id": [7] * copies, "v": range(copies)}), plan)
    assert result.rows_staged == 1  # type: ignore[attr-defined]
    assert db.fetch("SELECT v FROM public.t WHERE id = 7") == [{"v": copies - 1}]


def test_reads_one_nullable_column(postgres: PostgresResource, db: Database) -> None:
    """COPY writes a one-column NULL as an empty line, which Arrow skips unless told."""
    db.execute("CREATE TABLE public.t (id bigint PRIMARY KEY, note text)")
    db.execute("INSERT INTO public.t VALUES (1, 'a'), (2, NULL), (3, '')")
    read = postgres.run(lambda conn: read_table(conn, schema="public", table="t", columns=["note"]))
    assert read["note"].tolist()[0] == "a" and pd.isna(read["note"][1])
    assert read["note"][2] == ""
