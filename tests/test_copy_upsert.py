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
from resources.errors import TableMismatchError, WritePlanError

from .conftest import Database


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
    ],
)
def test_write_plan_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(WritePlanError, match=message):
        WritePlan.from_options(**options)  # type: ignore[arg-type]


def test_write_plan_defaults() -> None:
    assert WritePlan.from_options(conflict_target="id").write_mode == "upsert"
    assert WritePlan.from_options().write_mode == "replace"
    plan = WritePlan.from_options(conflict_target=["a", "b"])
    assert (plan.conflict_target, plan.on_conflict, plan.duplicates) == (
        ("a", "b"),
        "update",
        "error",
    )
