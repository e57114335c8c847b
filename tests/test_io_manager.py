"""PostgresUpsertIOManager through in-process materializations; every test writes twice."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    AssetOut,
    DailyPartitionsDefinition,
    StaticPartitionsDefinition,
    TableColumn,
    TableSchema,
    asset,
    materialize,
    multi_asset,
)

from resources import PostgresResource

from .conftest import Database
from .helpers import counts, failure_message, frame_asset, resources_for, run_assets, written

PRODUCTS = 'shop."products"'


def products(prices: list[float], skus: list[str] | None = None) -> pd.DataFrame:
    skus = skus or [f"sku-{i}" for i in range(len(prices))]
    return pd.DataFrame({"sku": skus, "price": prices, "name": [s.upper() for s in skus]})


def test_upsert_inserts_updates_and_skips_unchanged_rows(
    postgres: PostgresResource, db: Database
) -> None:
    meta = {"conflict_target": ["sku"]}
    first = written(run_assets([frame_asset(products([1.0, 2.0, 3.0]), metadata=meta)], postgres))
    assert counts(first) == (3, 3, 0, 0, 0)
    assert first["dagster/row_count"] == 3
    versions = {r["sku"]: r["xmin"] for r in db.fetch(f"SELECT sku, xmin::text FROM {PRODUCTS}")}

    # sku-1 changes, sku-3 is new, sku-0 and sku-2 are sent again unchanged.
    second_frame = products([1.0, 20.0, 3.0, 4.0])
    second = written(run_assets([frame_asset(second_frame, metadata=meta)], postgres))
    assert counts(second) == (4, 1, 1, 2, 0)
    assert second["dagster/row_count"] == 4
    after = {r["sku"]: r["xmin"] for r in db.fetch(f"SELECT sku, xmin::text FROM {PRODUCTS}")}
    # An unchanged row keeps its row version: nothing was rewritten.
    assert after["sku-0"] == versions["sku-0"] and after["sku-2"] == versions["sku-2"]
    assert after["sku-1"] != versions["sku-1"]

    third = written(run_assets([frame_asset(second_frame, metadata=meta)], postgres))
    assert counts(third) == (4, 0, 0, 4, 0)
    stored = db.rows(PRODUCTS, "sku")
    assert [r["price"] for r in stored] == [1.0, 20.0, 3.0, 4.0]


def test_on_conflict_nothing_keeps_stored_rows(postgres: PostgresResource, db: Database) -> None:
    meta = {"conflict_target": "sku", "on_conflict": "nothing"}
    run_assets([frame_asset(products([1.0, 2.0]), metadata=meta)], postgres)
    again = written(run_assets([frame_asset(products([9.0, 9.0, 3.0]), metadata=meta)], postgres))
    assert counts(again) == (3, 1, 0, 2, 0)
    assert [r["price"] for r in db.rows(PRODUCTS, "sku")] == [1.0, 2.0, 3.0]


def test_update_columns_limits_what_a_conflict_overwrites(
    postgres: PostgresResource, db: Database
) -> None:
    meta = {"conflict_target": ["sku"], "update_columns": ["price"]}
    run_assets([frame_asset(products([1.0]), metadata=meta)], postgres)
    changed = products([5.0]).assign(name=["renamed"])
    again = written(run_assets([frame_asset(changed, metadata=meta)], postgres))
    assert counts(again) == (1, 0, 1, 0, 0)
    assert db.rows(PRODUCTS, "sku") == [{"sku": "sku-0", "price": 5.0, "name": "SKU-0"}]
    # A change only in a column outside update_columns is no change at all.
    renamed_only = products([5.0]).assign(name=["other"])
    third = written(run_assets([frame_asset(renamed_only, metadata=meta)], postgres))
    assert counts(third) == (1, 0, 0, 1, 0)


def test_replace_without_key_makes_the_table_the_frame(
    postgres: PostgresResource, db: Database
) -> None:
    first = written(run_assets([frame_asset(products([1.0, 2.0, 3.0]))], postgres))
    assert counts(first) == (3, 3, 0, 0, 0)
    second = written(run_assets([frame_asset(products([7.0]))], postgres))
    assert counts(second) == (1, 1, 0, 0, 3)
    assert db.rows(PRODUCTS, "sku") == [{"sku": "sku-0", "price": 7.0, "name": "SKU-0"}]


def test_replace_with_key_deletes_rows_the_frame_no_longer_has(
    postgres: PostgresResource, db: Database
) -> None:
    meta = {"conflict_target": ["sku"], "write_mode": "replace"}
    run_assets([frame_asset(products([1.0, 2.0, 3.0]), metadata=meta)], postgres)
    frame = products([1.0, 5.0], skus=["sku-0", "sku-1"])
    second = written(run_assets([frame_asset(frame, metadata=meta)], postgres))
    assert counts(second) == (2, 0, 1, 1, 1)
    assert [r["price"] for r in db.rows(PRODUCTS, "sku")] == [1.0, 5.0]


def test_append_adds_rows(postgres: PostgresResource, db: Database) -> None:
    meta = {"write_mode": "append"}
    run_assets([frame_asset(products([1.0, 2.0]), metadata=meta)], postgres)
    second = written(run_assets([frame_asset(products([1.0, 2.0]), metadata=meta)], postgres))
    assert counts(second) == (2, 2, 0, 0, 0)
    assert second["dagster/row_count"] == 4


@pytest.mark.parametrize(("policy", "kept"), [("keep_last", 2.0), ("keep_first", 1.0)])
def test_duplicate_keys_resolved_by_policy(
    postgres: PostgresResource, db: Database, policy: str, kept: float
) -> None:
    meta = {"conflict_target": ["sku"], "duplicates": policy}
    frame = products([1.0, 2.0], skus=["a", "a"])
    for _ in range(2):
        result = written(run_assets([frame_asset(frame, metadata=meta)], postgres))
        assert result["rows_staged"] == 1
    assert [r["price"] for r in db.rows(PRODUCTS, "sku")] == [kept]


def test_empty_frame_creates_the_table_and_writes_nothing(
    postgres: PostgresResource, db: Database
) -> None:
    empty = pd.DataFrame(
        {"sku": pd.Series([], dtype="str"), "price": pd.Series([], dtype="float64")}
    )
    for _ in range(2):
        result = written(
            run_assets([frame_asset(empty, metadata={"conflict_target": "sku"})], postgres)
        )
        assert counts(result) == (0, 0, 0, 0, 0)
        assert result["dagster/row_count"] == 0
    columns = db.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'shop' AND table_name = 'products' ORDER BY ordinal_position"
    )
    assert columns == [
        {"column_name": "sku", "data_type": "text"},
        {"column_name": "price", "data_type": "double precision"},
    ]


def test_created_table_has_types_from_dtypes_and_a_primary_key(
    postgres: PostgresResource, db: Database
) -> None:
    frame = pd.DataFrame(
        {
            "id": np.array([1, 2], dtype="int64"),
            "small": np.array([1, 2], dtype="int16"),
            "ratio": [0.5, np.nan],
            "label": ["a", None],
            "flag": [True, False],
            "maybe": pd.array([1, None], dtype="Int64"),
            "at": pd.to_datetime(["2024-01-01 10:00", None]).tz_localize("Europe/Paris"),
            "naive": pd.to_datetime(["2024-01-01 10:00", "2024-06-01 00:00"]),
        }
    )
    result = written(run_assets([frame_asset(frame, metadata={"conflict_target": "id"})], postgres))
    assert result["dagster/column_schema"] == TableSchema(
        columns=[
            TableColumn("id", "bigint"),
            TableColumn("small", "smallint"),
            TableColumn("ratio", "double precision"),
            TableColumn("label", "text"),
            TableColumn("flag", "boolean"),
            TableColumn("maybe", "bigint"),
            TableColumn("at", "timestamp with time zone"),
            TableColumn("naive", "timestamp without time zone"),
        ]
    )
    assert result["dagster/table_name"].endswith(".shop.products")
    key = db.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'shop.products'::regclass AND i.indisprimary"
    )
    assert key == [{"attname": "id"}]
    rows = db.rows(PRODUCTS, "id")
    assert rows[0]["at"] == datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
    assert rows[1]["ratio"] is None and rows[1]["label"] is None and rows[1]["maybe"] is None


def test_multi_asset_reads_the_plan_from_asset_out(
    postgres: PostgresResource, db: Database
) -> None:
    @multi_asset(
        outs={
            "orders": AssetOut(key_prefix=["shop"], metadata={"conflict_target": ["order_id"]}),
            "customers": AssetOut(key_prefix=["shop"], metadata={"conflict_target": "customer_id"}),
        }
    )
    def shop_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
        orders = pd.DataFrame({"order_id": [1, 2], "customer_id": [7, 7]})
        customers = pd.DataFrame({"customer_id": [7], "name": ["Ann"]})
        return orders, customers

    for expected in ((2, 2, 0, 0, 0), (2, 0, 0, 2, 0)):
        result = run_assets([shop_tables], postgres)
        assert counts(written(result, ("shop", "orders"))) == expected
    assert db.rows('shop."customers"', "customer_id") == [{"customer_id": 7, "name": "Ann"}]


def test_schema_comes_from_metadata_then_key_prefix_then_config_then_public(
    postgres: PostgresResource, db: Database
) -> None:
    frame = products([1.0])
    cases = [
        (
            frame_asset(frame, key=("a", "t1"), metadata={"schema": "from_meta"}),
            {"schema": "from_config"},
            "from_meta",
        ),
        (frame_asset(frame, key=("a", "t2")), {"schema": "a"}, "a"),
        (frame_asset(frame, key=("a", "t3")), {}, "a"),
        (frame_asset(frame, key=("t4",)), {"schema": "from_config"}, "from_config"),
        (frame_asset(frame, key=("t5",)), {}, "public"),
    ]
    for assets_def, io_config, schema in cases:
        for _ in range(2):
            assert run_assets([assets_def], postgres, io_config=io_config).success
        table = assets_def.key.path[-1]
        assert db.fetch(f'SELECT count(*) AS n FROM "{schema}"."{table}"') == [{"n": 1}]


def test_async_asset_and_downstream_read_with_columns(
    postgres: PostgresResource, db: Database
) -> None:
    from sqlalchemy import text

    @asset(key_prefix=["shop"], metadata={"conflict_target": "sku"})
    async def products_async(postgres: PostgresResource) -> pd.DataFrame:
        async with postgres.connect() as conn:
            version = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
        return products([1.0, 2.0]).assign(server=int(version))

    @asset(
        key_prefix=["shop"],
        ins={
            "rows": AssetIn(
                key=AssetKey(["shop", "products_async"]), metadata={"columns": ["sku", "price"]}
            )
        },
        metadata={"conflict_target": "sku"},
    )
    def doubled(rows: pd.DataFrame) -> pd.DataFrame:
        assert list(rows.columns) == ["sku", "price"]
        return rows.assign(price=rows["price"] * 2)

    for expected in ((2, 2, 0, 0, 0), (2, 0, 0, 2, 0)):
        result = run_assets([products_async, doubled], postgres)
        assert counts(written(result, ("shop", "doubled"))) == expected
    assert [r["price"] for r in db.rows('shop."doubled"', "sku")] == [2.0, 4.0]


def test_two_runs_in_one_process_leave_no_connection_open(
    postgres: PostgresResource, db: Database
) -> None:
    assets_def = frame_asset(products([1.0]), metadata={"conflict_target": "sku"})
    for _ in range(2):
        assert materialize([assets_def], resources=resources_for(postgres)).success
        open_sessions = db.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
            postgres.application_name,
        )
        assert open_sessions == [{"n": 0}]


def test_static_partitions_write_and_read_their_own_rows(
    postgres: PostgresResource, db: Database
) -> None:
    regions = StaticPartitionsDefinition(["eu", "us"])

    @asset(
        key_prefix=["shop"],
        partitions_def=regions,
        metadata={"conflict_target": ["region", "sku"], "partition_expr": "region"},
    )
    def sales(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        region = context.partition_key
        return pd.DataFrame({"region": [region] * 2, "sku": ["a", "b"], "units": [1, 2]})

    @asset(
        key_prefix=["shop"],
        partitions_def=regions,
        metadata={"conflict_target": ["region", "sku"], "partition_expr": "region"},
    )
    def sales_copy(sales: pd.DataFrame) -> pd.DataFrame:
        assert set(sales["region"]) == {"eu"}
        return sales.assign(units=sales["units"] * 10)

    for _ in range(2):
        result = run_assets([sales, sales_copy], postgres, partition_key="eu")
        meta = written(result, ("shop", "sales"))
        assert meta["dagster/partition_row_count"] == 2
    result = run_assets([sales], postgres, partition_key="us")
    assert written(result, ("shop", "sales"))["dagster/row_count"] == 4


def test_daily_partition_replace_touches_only_its_day(
    postgres: PostgresResource, db: Database
) -> None:
    days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
    readings = {"count": 3}

    @asset(
        key_prefix=["shop"],
        partitions_def=days,
        metadata={"partition_expr": "at", "write_mode": "replace"},
    )
    def visits(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        start = context.partition_time_window.start
        times = [start + pd.Timedelta(hours=h) for h in range(readings["count"])]
        return pd.DataFrame({"at": pd.to_datetime(times, utc=True), "n": range(len(times))})

    for day in ("2024-01-01", "2024-01-02"):
        run_assets([visits], postgres, partition_key=day)
    readings["count"] = 1
    result = written(run_assets([visits], postgres, partition_key="2024-01-01"), ("shop", "visits"))
    assert (
        result["rows_deleted"],
        result["dagster/partition_row_count"],
        result["dagster/row_count"],
    ) == (3, 1, 4)
    per_day = db.fetch(
        'SELECT at::date AS day, count(*) AS n FROM shop."visits" GROUP BY 1 ORDER BY 1'
    )
    assert [r["n"] for r in per_day] == [1, 3]


def test_a_misspelled_metadata_key_fails_before_replacing_the_table(
    postgres: PostgresResource, db: Database
) -> None:
    """Without its conflict_target a write replaces the whole table: a key one letter away
    from one the IO manager reads is refused, and the table keeps its rows."""
    rows = pd.DataFrame({"id": range(100), "v": [1.0] * 100})
    assert run_assets([frame_asset(rows, metadata={"conflict_target": "id"})], postgres).success
    before = db.snapshot("shop.products")
    typo = frame_asset(rows.iloc[:1], metadata={"conflict_tagret": "id", "owner": "team-a"})
    result = run_assets([typo], postgres, raise_on_error=False)
    message = failure_message(result)
    assert "unknown metadata key 'conflict_tagret': did you mean 'conflict_target'?" in message
    assert db.snapshot("shop.products") == before == (100, before[1])
