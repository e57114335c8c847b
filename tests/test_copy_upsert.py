"""The core module on its own: the seed's failure, and copy_upsert / read_table on a connection."""

from __future__ import annotations

import asyncio

import asyncpg
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from resources import PostgresResource, WritePlan, copy_upsert, read_table
from resources.errors import FrameError, TableMismatchError, WritePlanError
from resources.frame import ROW_NUMBER_COLUMN

from .conftest import Database

# Every test runs on both merge statements (see conftest.merge_path).
pytestmark = pytest.mark.usefixtures("merge_path")


def test_seed_failure_temp_table_vanishes_without_an_explicit_transaction(
    postgres: PostgresResource,
) -> None:
    """The seed's bug: on the driver connection behind SQLAlchemy each statement commits on
    its own, so ON COMMIT DROP drops the staging table before the COPY reaches it."""

    async def seed_method(conn: AsyncConnection) -> None:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        await driver.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text)")
        await driver.execute("CREATE TEMP TABLE _tmp_items (LIKE items) ON COMMIT DROP")
        await driver.copy_records_to_table("_tmp_items", records=[(1, "a")], columns=["id", "name"])

    with pytest.raises(asyncpg.UndefinedTableError, match="_tmp_items"):
        postgres.run(seed_method)


def test_package_path_stages_and_merges_on_the_same_kind_of_connection(
    postgres: PostgresResource, db: Database
) -> None:
    frame = pd.DataFrame({"id": [1, 2], "name": ["a", "b"]})
    plan = WritePlan.from_options(conflict_target="id")
    result = postgres.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table="items", plan=plan)
    )
    assert (result.rows_inserted, result.row_count) == (2, 2)
    assert db.rows('public."items"', "id") == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_write_joins_the_callers_transaction_as_a_savepoint(
    postgres: PostgresResource, db: Database
) -> None:
    frame = pd.DataFrame({"id": [1], "name": ["a"]})
    plan = WritePlan.from_options(conflict_target="id")

    async def write_then_roll_back(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TABLE marker (x int)"))
        await copy_upsert(conn, frame, schema="public", table="items", plan=plan)
        await conn.rollback()

    postgres.run(write_then_roll_back)
    assert db.snapshot('public."items"') is None
    assert db.snapshot('public."marker"') is None


async def _upsert_and_read(database_url: str, frame: pd.DataFrame) -> pd.DataFrame:
    # The core needs no Dagster and no resource: any SQLAlchemy asyncpg connection will do.
    engine = create_async_engine(make_url(database_url).set(drivername="postgresql+asyncpg"))
    plan = WritePlan.from_options(conflict_target=["k1", "k2"], update_columns=["v"])
    try:
        async with engine.connect() as conn:
            await copy_upsert(conn, frame, schema="core", table="pairs", plan=plan)
            return await read_table(conn, schema="core", table="pairs", columns=["k1", "v"])
    finally:
        await engine.dispose()


def test_core_runs_on_a_plain_async_engine(database_url: str) -> None:
    frame = pd.DataFrame({"k1": [1, 1, 2], "k2": ["a", "b", "a"], "v": [0.5, 1.5, 2.5]})
    read = asyncio.run(_upsert_and_read(database_url, frame))
    read_again = asyncio.run(_upsert_and_read(database_url, frame))
    expected = pd.DataFrame({"k1": [1, 1, 2], "v": [0.5, 1.5, 2.5]})
    for got in (read, read_again):
        pd.testing.assert_frame_equal(got.sort_values(["k1", "v"]).reset_index(drop=True), expected)
    assert read["k1"].dtype == "int64"  # NOT NULL (primary key) integers stay numpy int64


def test_read_of_a_missing_table_says_so(postgres: PostgresResource) -> None:
    with pytest.raises(TableMismatchError, match="does not exist"):
        postgres.run(lambda conn: read_table(conn, schema="public", table="nope"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"write_mode": "merge", "conflict_target": "id"}, "unknown write_mode 'merge'"),
        ({"on_conflict": "ignore", "conflict_target": "id"}, "unknown on_conflict 'ignore'"),
        ({"duplicates": "drop", "conflict_target": "id"}, "unknown duplicates 'drop'"),
        ({"write_mode": "upsert"}, "needs a conflict_target"),
        ({"conflict_target": 5}, "conflict_target must be a column name"),
        ({"conflict_target": "id", "update_columns": ["id"]}, "part of the conflict_target"),
        (
            {"conflict_target": "id", "write_mode": "replace", "on_conflict": "nothing"},
            r"write_mode 'replace' makes the table \(or the partition\) the frame, every row "
            "as sent, where on_conflict 'nothing' would keep stored values: drop on_conflict",
        ),
        (
            {"conflict_target": "id", "write_mode": "replace", "update_columns": "v"},
            "where update_columns would keep stored values: drop update_columns, or use "
            "write_mode 'upsert'",
        ),
        (
            {"write_mode": "append", "on_conflict": "nothing", "update_columns": "v"},
            r"write_mode 'append' only inserts rows \(a key already stored fails the write\), "
            "where on_conflict 'nothing' and update_columns would do nothing",
        ),
    ],
)
def test_write_plan_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(WritePlanError, match=message):
        WritePlan.from_options(**options)  # type: ignore[arg-type]


def test_on_conflict_update_is_the_default_of_every_mode() -> None:
    """Spelling out the default keeps every stored row as sent: no mode refuses it."""
    for mode in ("upsert", "replace", "append"):
        plan = WritePlan.from_options(conflict_target="id", write_mode=mode, on_conflict="update")
        assert (plan.write_mode, plan.on_conflict) == (mode, "update")


def test_write_plan_defaults() -> None:
    assert WritePlan.from_options(conflict_target="id").write_mode == "upsert"
    assert WritePlan.from_options().write_mode == "replace"
    plan = WritePlan.from_options(conflict_target=["a", "b"])
    assert (plan.conflict_target, plan.on_conflict, plan.duplicates) == (
        ("a", "b"),
        "update",
        "error",
    )


@pytest.mark.parametrize("policy", ["keep_first", "keep_last"])
@pytest.mark.parametrize("table_exists", [False, True], ids=["empty-table", "stored-rows"])
@pytest.mark.parametrize("in_key_order", [False, True], ids=["shuffled", "sorted"])
def test_repeated_keys_across_chunks_keep_the_first_or_last_row(
    postgres: PostgresResource, db: Database, policy: str, table_exists: bool, in_key_order: bool
) -> None:
    """Duplicates are resolved on the server by the row's position in the frame, also when
    the copies travel in different COPY chunks (65,536 rows each), whichever path the write
    takes first (a COPY of a frame in key order, or an ordered INSERT into an empty table)."""
    rows = 150_000
    ids = [i % 100_000 for i in range(rows)]  # keys below 50,000 appear twice, chunks apart
    frame = pd.DataFrame({"id": ids, "position": range(rows)})
    if in_key_order:
        frame = frame.sort_values("id", kind="stable", ignore_index=True)
    plan = WritePlan.from_options(conflict_target="id", duplicates=policy)
    if table_exists:
        seed = pd.DataFrame({"id": [0, 99_999], "position": [-1, -1]})
        postgres.run(lambda conn: copy_upsert(conn, seed, schema="public", table="kept", plan=plan))
    result = postgres.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table="kept", plan=plan)
    )
    assert result.rows_staged == 100_000
    assert result.row_count == 100_000
    stored = db.fetch('SELECT sum(position) AS s FROM public."kept"')[0]["s"]
    first = sum(range(100_000))
    # keep_last: keys 0..49,999 keep their second position, 100,000 further on.
    expected = first + 50_000 * 100_000 if policy == "keep_last" else first
    assert stored == expected


def test_repeated_keys_under_error_are_refused_on_a_stored_table(
    postgres: PostgresResource, db: Database
) -> None:
    plan = WritePlan.from_options(conflict_target=["a", "b"])
    stored = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "v": [1.0, 2.0]})
    postgres.run(lambda conn: copy_upsert(conn, stored, schema="public", table="pairs", plan=plan))
    before = db.snapshot('public."pairs"')
    repeated = pd.DataFrame({"a": [2, 2, 3, 3, 3], "b": ["y"] * 2 + ["z"] * 3, "v": 1.0})
    with pytest.raises(
        FrameError,
        match=r"2 conflict_target key\(s\) on \['a', 'b'\] appear "
        r"more than once \(5 rows\)",
    ):
        postgres.run(
            lambda conn: copy_upsert(conn, repeated, schema="public", table="pairs", plan=plan)
        )
    assert db.snapshot('public."pairs"') == before


@pytest.mark.parametrize("policy", ["error", "keep_first", "keep_last"])
@pytest.mark.parametrize("write_mode", ["upsert", "append"])
def test_keys_equal_once_rounded_to_microseconds_are_one_key(
    postgres: PostgresResource, db: Database, policy: str, write_mode: str
) -> None:
    """Three nanosecond timestamps in one microsecond: rows 0 and 2 are one key as stored,
    with another row between them in nanosecond order. The client sorts the values as they
    are sent, so it finds the repeat, and the server's duplicate handling runs."""
    db.execute("CREATE TABLE public.rounded (ts timestamp, b bigint, v text)")
    if write_mode == "upsert":
        db.execute("ALTER TABLE public.rounded ADD PRIMARY KEY (ts, b)")
    at = pd.Timestamp("2024-01-01")
    frame = pd.DataFrame(
        {
            "ts": [at + pd.Timedelta(nanoseconds=n) for n in (1000, 1001, 1002)],
            "b": [2, 1, 2],
            "v": ["first", "second", "third"],
        }
    )
    plan = WritePlan.from_options(
        conflict_target=["ts", "b"], duplicates=policy, write_mode=write_mode
    )

    def write() -> object:
        return postgres.run(
            lambda conn: copy_upsert(conn, frame, schema="public", table="rounded", plan=plan)
        )

    if policy == "error":
        with pytest.raises(FrameError, match=r"on \['ts', 'b'\] appear more than once"):
            write()
        assert db.rows("public.rounded", "b") == []
        return
    write()
    kept = "first" if policy == "keep_first" else "third"
    assert [(r["b"], r["v"]) for r in db.rows("public.rounded", "b")] == [(1, "second"), (2, kept)]


def test_a_zoned_timestamp_in_the_repeated_hour_is_rounded_in_utc(
    postgres: PostgresResource, db: Database
) -> None:
    """Nanoseconds are rounded down in UTC: in Berlin's own clock 02:30 happens twice on
    2024-10-27, and rounding there failed as ambiguous."""
    utc = pd.to_datetime(["2024-10-27 00:30:00.000000001Z", "2024-10-27 01:30:00.000001999Z"])
    frame = pd.DataFrame({"at": utc.tz_convert("Europe/Berlin"), "v": [1, 2]})
    plan = WritePlan.from_options(conflict_target="at")
    postgres.run(lambda conn: copy_upsert(conn, frame, schema="public", table="berlin", plan=plan))
    stored = [r["at"] for r in db.rows("public.berlin", "at")]
    assert [pd.Timestamp(t) for t in stored] == list(utc.floor("us"))


@pytest.mark.parametrize("on_conflict", ["update", "nothing"])
@pytest.mark.parametrize(
    "copies",
    [[("b", 1.0), ("b", 5.0)], [("b", 1.0), ("b", 1.0)], [("new", 1.0), ("new", 2.0)]],
    ids=["one-copy-as-stored", "every-copy-as-stored", "new-key"],
)
@pytest.mark.parametrize("skip_same", [False, True], ids=["", "trigger-skips-unchanged"])
def test_a_repeated_key_is_refused_however_its_copies_compare_with_the_stored_row(
    postgres: PostgresResource,
    db: Database,
    on_conflict: str,
    copies: list[tuple[str, float]],
    skip_same: bool,
) -> None:
    """A copy equal to the stored row writes nothing, yet its key is still refused; also
    when a trigger skips every update that changes nothing."""
    plan = WritePlan.from_options(conflict_target="k", on_conflict=on_conflict)
    stored = pd.DataFrame({"k": ["a", "b"], "v": [0.0, 1.0]})
    postgres.run(lambda conn: copy_upsert(conn, stored, schema="public", table="kv", plan=plan))
    if skip_same:
        db.execute(
            "CREATE TRIGGER skip_same BEFORE UPDATE ON kv FOR EACH ROW "
            "EXECUTE FUNCTION suppress_redundant_updates_trigger()"
        )
    before = db.snapshot('public."kv"')
    repeated = pd.DataFrame([*copies, ("c", 3.0)], columns=["k", "v"])
    with pytest.raises(
        FrameError, match=r"1 conflict_target key\(s\) on \['k'\] appear more than once \(2 rows\)"
    ):
        postgres.run(
            lambda conn: copy_upsert(conn, repeated, schema="public", table="kv", plan=plan)
        )
    assert db.snapshot('public."kv"') == before


@pytest.mark.parametrize("on_conflict", ["update", "nothing"])
def test_rows_sent_again_unchanged_are_neither_rewritten_nor_locked(
    postgres: PostgresResource, db: Database, on_conflict: str
) -> None:
    plan = WritePlan.from_options(conflict_target="id", on_conflict=on_conflict)
    first = pd.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    postgres.run(lambda conn: copy_upsert(conn, first, schema="public", table="same", plan=plan))
    versions = 'SELECT id, xmin::text, xmax::text FROM public."same" WHERE id <= 3 ORDER BY id'
    before = db.fetch(versions)
    again = pd.DataFrame({"id": [3, 1, 4, 2], "v": ["c", "a", "d", "b"]})
    result = postgres.run(
        lambda conn: copy_upsert(conn, again, schema="public", table="same", plan=plan)
    )
    assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == (1, 0, 3)
    assert db.fetch(versions) == before
    assert {row["xmax"] for row in before} == {"0"}


def test_a_column_named_like_the_merge_marker_is_an_ordinary_column(
    postgres: PostgresResource, db: Database
) -> None:
    plan = WritePlan.from_options(conflict_target="id")

    def write(frame: pd.DataFrame) -> None:
        postgres.run(lambda conn: copy_upsert(conn, frame, schema="public", table="m", plan=plan))

    write(pd.DataFrame({"id": [1, 2], "copy_upsert_repeated": [False, False]}))
    write(pd.DataFrame({"id": [2, 3], "copy_upsert_repeated": [True, True]}))
    assert db.rows('public."m"', "id") == [
        {"id": 1, "copy_upsert_repeated": False},
        {"id": 2, "copy_upsert_repeated": True},
        {"id": 3, "copy_upsert_repeated": True},
    ]
    with pytest.raises(FrameError, match="appear more than once"):
        write(pd.DataFrame({"id": [3, 3], "copy_upsert_repeated": [True, False]}))


def test_a_table_with_a_rule_is_merged_all_the_same(
    postgres: PostgresResource, db: Database
) -> None:
    """MERGE refuses a table with rules; the write falls back to INSERT ... ON CONFLICT
    (which refuses only INSERT and UPDATE rules)."""
    db.execute("CREATE TABLE ruled (id bigint PRIMARY KEY, v text)")
    db.execute("CREATE TABLE ruled_log (id bigint)")
    db.execute(
        "CREATE RULE log_deletes AS ON DELETE TO ruled "
        "DO ALSO INSERT INTO ruled_log VALUES (OLD.id)"
    )
    db.execute("INSERT INTO ruled VALUES (1, 'a'), (2, 'b'), (4, 'd')")
    plan = WritePlan.from_options(conflict_target="id", write_mode="replace")
    frame = pd.DataFrame({"id": [2, 3, 1], "v": ["B", "c", "a"]})
    result = postgres.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table="ruled", plan=plan)
    )
    counts = (result.rows_deleted, result.rows_inserted, result.rows_updated, result.rows_unchanged)
    assert counts == (1, 1, 1, 1)
    assert db.fetch("SELECT id FROM ruled_log") == [{"id": 4}]
    assert db.rows("ruled", "id") == [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "B"},
        {"id": 3, "v": "c"},
    ]


def test_row_number_column_name_is_reserved_when_duplicates_are_resolved() -> None:
    frame = pd.DataFrame({"id": [1], ROW_NUMBER_COLUMN: [1]})
    plan = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    with pytest.raises(FrameError, match="reserved"):
        asyncio.run(copy_upsert(None, frame, schema="public", table="t", plan=plan))  # type: ignore[arg-type]


@pytest.mark.parametrize("library", ["pandas", "pyarrow", "polars"])
def test_a_frame_in_random_order_fills_an_empty_table_in_key_order(
    postgres: PostgresResource, db: Database, library: str
) -> None:
    """Sorted on the client, the rows go straight into the empty table in key order (no
    stage, no merge), and the heap holds them in key order."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    rng = np.random.default_rng(7)
    ids = rng.permutation(200_000)
    data = pd.DataFrame(
        {"id": ids, "at": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(ids, "s")}
    )
    frame: object = {
        "pandas": data,
        "pyarrow": pa.Table.from_pandas(data),
        "polars": pl.from_pandas(data),
    }[library]
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz)")
    plan = WritePlan.from_options(conflict_target="id")
    said: list[str] = []
    result = postgres.run(
        lambda conn: copy_upsert(
            conn, frame, schema="public", table="t", plan=plan, progress=said.append
        )
    )
    assert (result.rows_inserted, result.row_count) == (200_000, 200_000)
    assert not [line for line in said if "merging" in line], said
    heap = db.fetch("SELECT id, at FROM t")  # no ORDER BY: as stored
    assert [r["id"] for r in heap] == list(range(200_000))
    assert heap[5]["at"] == pd.Timestamp("2024-01-01 00:00:05", tz="UTC")


def test_a_repeated_key_in_a_sorted_first_write_falls_back_to_the_stage(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute("CREATE TABLE t (id bigint PRIMARY KEY, v float8)")
    data = pd.DataFrame({"id": [3, 1, 2, 1], "v": [3.0, 1.0, 2.0, 1.5]})
    plan = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    result = postgres.run(
        lambda conn: copy_upsert(conn, data, schema="public", table="t", plan=plan)
    )
    assert result.rows_inserted == 3
    assert db.rows("t", "id") == [
        {"id": 1, "v": 1.5},
        {"id": 2, "v": 2.0},
        {"id": 3, "v": 3.0},
    ]
