"""Every Dagster output gets a table of its own (issue 12): graph-backed assets, op outputs in
jobs, dynamic outputs, asset keys of any length, a schema given two ways; and what a frame's
index, a frame without columns and an input mapped to no partition do. Each test runs real
Dagster definitions and looks at the tables before and after."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DynamicOut,
    DynamicOutput,
    In,
    Out,
    TimeWindowPartitionMapping,
    asset,
    graph_asset,
    job,
    mem_io_manager,
    op,
)

from resources import PostgresResource

from .conftest import Database
from .helpers import failure_message, frame_asset, resources_for, run_assets

ORDERS = pd.DataFrame({"id": range(1000), "amount": [float(i) for i in range(1000)]})


def _tables(db: Database) -> set[str]:
    rows = db.fetch(
        "SELECT n.nspname || '.' || c.relname AS name FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_temp%'"
    )
    return {row["name"] for row in rows}


def _values(db: Database, table: str, *columns: str) -> list[Any]:
    """The columns' values in order (a tuple a row for several columns)."""
    rows = db.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1")
    return [row[columns[0]] if len(columns) == 1 else tuple(row.values()) for row in rows]


# ---- naming --------------------------------------------------------------------------------------


def test_two_graph_backed_assets_keep_their_own_rows(
    postgres: PostgresResource, db: Database
) -> None:
    @op
    def load_a() -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2, 3]})

    @op
    def load_b() -> pd.DataFrame:
        return pd.DataFrame({"b": ["x", "y"]})

    @op
    def double(frame: pd.DataFrame) -> pd.DataFrame:
        return frame * 2

    @graph_asset
    def doubled_a() -> Any:
        return double(load_a())

    @graph_asset
    def doubled_b() -> Any:
        return double(load_b())

    for _ in range(2):
        assert run_assets([doubled_a, doubled_b], postgres).success
        assert db.rows("public.doubled_a", "a") == [{"a": 2}, {"a": 4}, {"a": 6}]
        assert db.rows("public.doubled_b", "b") == [{"b": "xx"}, {"b": "yy"}]
    # The inner ops' outputs went to tables of their own, named after their steps; the last
    # op's output is the asset.
    inner = "public.ephemeral_asset_job__doubled_{}__load_{}__result"
    assert _tables(db) == {
        "public.doubled_a",
        "public.doubled_b",
        inner.format("a", "a"),
        inner.format("b", "b"),
    }
    assert _values(db, inner.format("a", "a"), "a") == [1, 2, 3]


def test_ops_of_a_job_read_their_own_upstream(postgres: PostgresResource, db: Database) -> None:
    @op
    def first() -> pd.DataFrame:
        return pd.DataFrame({"v": [1]})

    @op
    def second() -> pd.DataFrame:
        return pd.DataFrame({"v": [2]})

    @op
    def combine(one: pd.DataFrame, two: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"one": one["v"], "two": two["v"]})

    @job(resource_defs=resources_for(postgres))
    def three_ops() -> None:
        combine(first(), second())

    assert three_ops.execute_in_process().success
    assert _values(db, "public.three_ops__combine__result", "one", "two") == [(1, 2)]
    assert _values(db, "public.three_ops__first__result", "v") == [1]
    assert _values(db, "public.three_ops__second__result", "v") == [2]


def test_an_op_output_named_like_an_asset_leaves_the_asset_alone(
    postgres: PostgresResource, db: Database
) -> None:
    orders = frame_asset(ORDERS, key=("orders",), metadata={"conflict_target": "id"})
    assert run_assets([orders], postgres).success
    before = db.snapshot("public.orders")
    assert before is not None and before[0] == 1000

    @op(out={"orders": Out()})
    def make_orders() -> pd.DataFrame:
        return pd.DataFrame({"id": [1], "amount": [0.0]})

    @job(resource_defs=resources_for(postgres))
    def unrelated() -> None:
        make_orders()

    assert unrelated.execute_in_process().success
    assert db.snapshot("public.orders") == before
    assert _values(db, "public.unrelated__make_orders__orders", "id") == [1]


def test_a_keyed_op_output_in_random_order_keeps_its_run_id(
    postgres: PostgresResource, db: Database
) -> None:
    """An integer key is sorted on the client: the run id column goes along with the sorted
    rows, into the new table (straight in) and into the filled one (staged)."""

    @op(out=Out(metadata={"conflict_target": "id"}))
    def scores() -> pd.DataFrame:
        return pd.DataFrame({"id": [3, 1, 2], "score": [0.3, 0.1, 0.2]})

    @op
    def total(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"total": [frame["score"].sum()], "rows": [len(frame)]})

    @job(resource_defs=resources_for(postgres))
    def scored() -> None:
        total(scores())

    table = "public.scored__scores__result"
    for _ in range(2):
        result = scored.execute_in_process()
        assert result.success
        rows = _values(db, table, "id", "score", "dagster_run_id")
        assert rows == [(i, i / 10, result.run_id) for i in (1, 2, 3)]
        # The downstream op read the rows of its own run.
        (total_row,) = _values(db, "public.scored__total__result", "total", "rows")
        assert total_row == (pytest.approx(0.6), 3)


def test_an_op_output_table_holds_its_last_runs_rows(
    postgres: PostgresResource, db: Database
) -> None:
    """A keyed op output whose keys change from run to run: each run's table holds that
    run's rows only (an upsert kept the earlier run's, and the next step refused them)."""
    keys = iter([[1, 2], [3]])

    @op(out=Out(metadata={"conflict_target": "id"}))
    def scores() -> pd.DataFrame:
        ids = next(keys)
        return pd.DataFrame({"id": ids, "score": [i / 10 for i in ids]})

    @op
    def total(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"ids": [",".join(map(str, sorted(frame["id"])))]})

    @job(resource_defs=resources_for(postgres))
    def scored() -> None:
        total(scores())

    for expected in ([1, 2], [3]):
        result = scored.execute_in_process()
        assert result.success
        rows = _values(db, "public.scored__scores__result", "id", "dagster_run_id")
        assert rows == [(i, result.run_id) for i in expected]
        seen = ",".join(map(str, expected))
        assert _values(db, "public.scored__total__result", "ids") == [seen]


def test_dynamic_outputs_get_a_table_each(postgres: PostgresResource, db: Database) -> None:
    @op(out=DynamicOut())
    def regions() -> Iterator[DynamicOutput[pd.DataFrame]]:
        for region in ("north", "south"):
            yield DynamicOutput(pd.DataFrame({"region": [region]}), mapping_key=region)

    @op
    def tag(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(tagged=True)

    @job(resource_defs=resources_for(postgres))
    def fan_out() -> None:
        regions().map(tag)

    assert fan_out.execute_in_process().success
    for region in ("north", "south"):
        assert _values(db, f"public.fan_out__regions__result__{region}", "region") == [region]
        tagged = _values(db, f"public.fan_out__tag__{region}__result", "region", "tagged")
        assert tagged == [(region, True)]


def test_a_fan_in_annotated_as_a_list_loads_each_output_as_its_element_type(
    postgres: PostgresResource,
) -> None:
    seen: dict[str, list[object]] = {}

    @op(out=DynamicOut(metadata={"conflict_target": "id"}))
    def regions() -> Iterator[DynamicOutput[pl.DataFrame]]:
        for region in ("north", "south"):
            frame = pl.DataFrame({"id": [1, 2], "region": [region] * 2})
            yield DynamicOutput(frame, mapping_key=region)

    @op
    def gather_arrow(frames: list[pa.Table]) -> None:
        seen["arrow"] = list(frames)

    @op
    def gather_polars(frames: list[pl.DataFrame]) -> None:
        seen["polars"] = list(frames)

    @job(resource_defs=resources_for(postgres))
    def fan_in() -> None:
        collected = regions().collect()
        gather_arrow(collected)
        gather_polars(collected)

    assert fan_in.execute_in_process().success
    assert sorted(t.column("region")[0].as_py() for t in seen["arrow"]) == ["north", "south"]
    assert all(isinstance(t, pa.Table) and t.num_rows == 2 for t in seen["arrow"])
    assert all(isinstance(f, pl.DataFrame) and f.height == 2 for f in seen["polars"])


def test_keys_of_three_components_do_not_collide(postgres: PostgresResource, db: Database) -> None:
    sales = frame_asset(pd.DataFrame({"id": [1, 2]}), key=("sales", "raw", "orders"))
    marketing = frame_asset(pd.DataFrame({"id": [7]}), key=("marketing", "raw", "orders"))
    for _ in range(2):
        assert run_assets([sales, marketing], postgres).success
        assert db.rows('"sales__raw".orders', "id") == [{"id": 1}, {"id": 2}]
        assert db.rows('"marketing__raw".orders', "id") == [{"id": 7}]
    assert "raw.orders" not in _tables(db)


def test_a_schema_given_two_ways_is_refused(postgres: PostgresResource, db: Database) -> None:
    shop = frame_asset(pd.DataFrame({"sku": ["a"]}), key=("shop", "products"))
    warehouse = frame_asset(pd.DataFrame({"sku": ["b"]}), key=("warehouse", "products"))
    result = run_assets(
        [shop, warehouse], postgres, io_config={"schema": "analytics"}, raise_on_error=False
    )
    message = failure_message(result)
    assert "Asset shop/products: the asset key's prefix names schema 'shop'" in message
    assert "the IO manager's 'schema' is 'analytics'" in message
    assert _tables(db) == set()

    # The IO manager's schema is for keys without a prefix; a matching prefix is fine.
    plain = frame_asset(pd.DataFrame({"sku": ["c"]}), key=("products",))
    same = frame_asset(pd.DataFrame({"sku": ["d"]}), key=("analytics", "items"))
    assert run_assets([plain, same], postgres, io_config={"schema": "analytics"}).success
    assert db.rows("analytics.products", "sku") == [{"sku": "c"}]
    assert db.rows("analytics.items", "sku") == [{"sku": "d"}]


# ---- the frame -----------------------------------------------------------------------------------


def test_named_index_levels_are_stored_as_columns(postgres: PostgresResource, db: Database) -> None:
    by_id = pd.DataFrame({"id": [1, 2], "v": ["a", "b"]}).set_index("id")
    keyed = frame_asset(by_id, metadata={"conflict_target": "id"})
    for _ in range(2):
        assert run_assets([keyed], postgres).success
    assert db.rows("shop.products", "id") == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]

    levels = pd.DataFrame({"day": ["d1", "d1"], "shop": [1, 2], "n": [5, 6]})
    multi = frame_asset(levels.set_index(["day", "shop"]), key=("visits",))
    assert run_assets([multi], postgres).success
    assert db.rows("public.visits", "shop") == [
        {"day": "d1", "shop": 1, "n": 5},
        {"day": "d1", "shop": 2, "n": 6},
    ]

    # An unnamed index (here not a default one) is dropped.
    unnamed = frame_asset(pd.DataFrame({"v": [1]}, index=[42]), key=("plain",))
    assert run_assets([unnamed], postgres).success
    assert db.rows("public.plain", "v") == [{"v": 1}]


def test_an_index_named_like_a_column_is_refused(postgres: PostgresResource, db: Database) -> None:
    keyed = frame_asset(ORDERS, metadata={"conflict_target": "id"})
    assert run_assets([keyed], postgres).success
    before = db.snapshot("shop.products")
    clash = ORDERS.set_index(pd.Index(range(1000), name="id"))
    result = run_assets(
        [frame_asset(clash, metadata={"conflict_target": "id"})], postgres, raise_on_error=False
    )
    message = failure_message(result)
    assert "Asset shop/products: index level 'id' has the name of a column" in message
    assert db.snapshot("shop.products") == before


def test_a_frame_without_columns_is_refused(postgres: PostgresResource, db: Database) -> None:
    keyed = frame_asset(ORDERS, metadata={"conflict_target": "id"})
    assert run_assets([keyed], postgres).success
    before = db.snapshot("shop.products")
    for key in (("shop", "products"), ("fresh",)):
        empty = frame_asset(pd.DataFrame(index=range(3)), key=key)
        message = failure_message(run_assets([empty], postgres, raise_on_error=False))
        assert f"Asset {'/'.join(key)}: the frame has no columns" in message
    assert db.snapshot("shop.products") == before
    assert db.snapshot("public.fresh") is None


# ---- metadata and inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("writemode", "write_mode"), ("conflict_targets", "conflict_target")],
)
def test_misspelled_metadata_keys_fail_before_writing(
    postgres: PostgresResource, db: Database, typo: str, meant: str
) -> None:
    keyed = frame_asset(ORDERS, metadata={"conflict_target": "id"})
    assert run_assets([keyed], postgres).success
    before = db.snapshot("shop.products")
    value = "append" if typo == "writemode" else "id"
    bad = frame_asset(ORDERS.head(1), metadata={"conflict_target": "id", typo: value})
    message = failure_message(run_assets([bad], postgres, raise_on_error=False))
    assert f"Asset shop/products: unknown metadata key {typo!r}: did you mean {meant!r}?" in message
    assert db.snapshot("shop.products") == before


DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")


def _daily_with_previous(seen: list[pd.DataFrame], typo: bool = False) -> Any:
    @asset(
        partitions_def=DAYS,
        metadata={"partition_exp" if typo else "partition_expr": "day"},
        ins={
            "previous": AssetIn(
                key=AssetKey("daily"),
                partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            )
        },
    )
    def daily(context, previous: pd.DataFrame) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        seen.append(previous)
        day = pd.Timestamp(context.partition_key)
        return pd.DataFrame({"day": [day], "total": [len(previous) + 1]})

    return daily


def test_an_input_mapped_to_no_partition_is_empty(postgres: PostgresResource, db: Database) -> None:
    seen: list[pd.DataFrame] = []
    daily = _daily_with_previous(seen)
    # The first partition, before the table exists: no columns.
    assert run_assets([daily], postgres, partition_key="2024-01-01").success
    assert seen[-1].shape == (0, 0)
    # Again, now that the table exists: its columns and dtypes, no rows.
    assert run_assets([daily], postgres, partition_key="2024-01-01").success
    assert list(seen[-1].columns) == ["day", "total"] and len(seen[-1]) == 0
    assert str(seen[-1]["day"].dtype).startswith("datetime64")
    assert run_assets([daily], postgres, partition_key="2024-01-02").success
    assert seen[-1]["total"].tolist() == [1]
    assert db.rows("public.daily", "day")[-1]["total"] == 2


def test_a_misspelled_partition_expr_fails_naming_it(
    postgres: PostgresResource, db: Database
) -> None:
    result = run_assets(
        [_daily_with_previous([], typo=True)],
        postgres,
        partition_key="2024-01-02",
        raise_on_error=False,
    )
    message = failure_message(result)
    assert "Asset daily: unknown metadata key 'partition_exp': did you mean" in message
    assert db.snapshot("public.daily") is None


def test_op_outputs_report_the_op_and_output(postgres: PostgresResource, db: Database) -> None:
    @op(ins={"frame": In()})
    def passthrough(frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    @op
    def no_columns() -> pd.DataFrame:
        return pd.DataFrame(index=range(2))

    @job(resource_defs=resources_for(postgres))
    def broken() -> None:
        passthrough(no_columns())

    result = broken.execute_in_process(raise_on_error=False)
    message = failure_message(result)
    assert "Op 'no_columns' output 'result' of job 'broken': the frame has no columns" in message
    assert _tables(db) == set()


# ---- ownership -----------------------------------------------------------------------------------


def test_a_table_belongs_to_the_output_that_first_wrote_it(
    postgres: PostgresResource, db: Database
) -> None:
    orders = frame_asset(ORDERS, key=("shop", "orders"), metadata={"conflict_target": "id"})
    assert run_assets([orders], postgres).success
    before = db.snapshot("shop.orders")

    # Another asset naming the same table on purpose, but not as shared.
    intruder = frame_asset(
        ORDERS.head(1), key=("archive", "orders"), metadata={"schema": "shop", "table": "orders"}
    )
    message = failure_message(run_assets([intruder], postgres, raise_on_error=False))
    assert "Asset archive/orders:" in message
    assert "asset shop/orders" in message and "shared_table" in message
    assert db.snapshot("shop.orders") == before

    # An op output pointed at it is refused the same way.
    @op(out={"result": Out(metadata={"schema": "shop", "table": "orders"})})
    def stray() -> pd.DataFrame:
        return pd.DataFrame({"id": [1], "amount": [0.0]})

    @job(resource_defs=resources_for(postgres))
    def strays() -> None:
        stray()

    message = failure_message(strays.execute_in_process(raise_on_error=False))
    assert "Op 'stray' output 'result' of job 'strays':" in message
    assert "asset shop/orders" in message
    assert db.snapshot("shop.orders") == before

    # The owner itself keeps writing.
    assert run_assets([orders], postgres).success


def test_tables_shared_on_purpose(postgres: PostgresResource, db: Database) -> None:
    shared = {"schema": "shop", "table": "events", "shared_table": True, "write_mode": "append"}
    web = frame_asset(pd.DataFrame({"source": ["web"]}), key=("web_events",), metadata=shared)
    app = frame_asset(pd.DataFrame({"source": ["app"]}), key=("app_events",), metadata=shared)
    for _ in range(2):
        assert run_assets([web], postgres).success
        assert run_assets([app], postgres).success
    assert db.rows("shop.events", "source") == [{"source": s} for s in ("app",) * 2 + ("web",) * 2]


def test_a_table_made_by_hand_is_adopted_by_its_first_writer(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.products (sku text PRIMARY KEY, price float8);"
        "COMMENT ON TABLE shop.products IS 'Prices, loaded nightly.'"
    )
    frame = pd.DataFrame({"sku": ["a"], "price": [1.0]})
    assert run_assets([frame_asset(frame, metadata={"conflict_target": "sku"})], postgres).success
    comment = db.fetch("SELECT obj_description('shop.products'::regclass, 'pg_class') AS c")
    assert comment[0]["c"].startswith("Prices, loaded nightly.")
    before = db.snapshot("shop.products")
    other = frame_asset(
        frame.assign(price=2.0),
        key=("other",),
        metadata={"schema": "shop", "table": "products", "conflict_target": "sku"},
    )
    message = failure_message(run_assets([other], postgres, raise_on_error=False))
    assert "Asset other:" in message and "asset shop/products" in message
    assert db.snapshot("shop.products") == before


def test_shared_on_one_side_only_is_refused(postgres: PostgresResource, db: Database) -> None:
    customers = frame_asset(
        pd.DataFrame({"id": [1, 2]}), key=("customers",), metadata={"conflict_target": "id"}
    )
    fix = frame_asset(
        pd.DataFrame({"id": [99]}),
        key=("customers_fix",),
        metadata={"table": "customers", "shared_table": True, "write_mode": "replace"},
    )
    assert run_assets([customers], postgres).success
    before = db.snapshot("public.customers")
    message = failure_message(run_assets([fix], postgres, raise_on_error=False))
    assert "Asset customers_fix:" in message and "asset customers" in message
    assert db.snapshot("public.customers") == before

    # The other way round: a table shared first stays shared.
    db.execute("DROP TABLE public.customers")
    assert run_assets([fix], postgres).success
    message = failure_message(run_assets([customers], postgres, raise_on_error=False))
    assert "Asset customers:" in message and "shared_table: true" in message


def test_ops_of_one_name_in_two_jobs_keep_their_own_tables(
    postgres: PostgresResource, db: Database
) -> None:
    def loader(rows: list[int]) -> Any:
        @op(name="load")
        def load() -> pd.DataFrame:
            return pd.DataFrame({"k": rows})

        return load

    @job(resource_defs=resources_for(postgres))
    def users_job() -> None:
        loader([1, 2, 3])()

    @job(resource_defs=resources_for(postgres))
    def events_job() -> None:
        loader(list(range(100)))()

    assert users_job.execute_in_process().success
    assert events_job.execute_in_process().success
    assert _values(db, "public.users_job__load__result", "k") == [1, 2, 3]
    assert len(_values(db, "public.events_job__load__result", "k")) == 100


def test_a_step_never_reads_another_runs_rows(postgres: PostgresResource, db: Database) -> None:
    """Run A's downstream op waits while run B of the same job replaces the op output A
    wrote: A's load fails naming both runs, and writes nothing."""
    upstream_done, replaced = threading.Event(), threading.Event()

    @op(config_schema={"customer": str})
    def extract(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        return pd.DataFrame({"customer": [context.op_config["customer"]], "amount": [3]})

    @op(out=Out(io_manager_key="mem"))
    def gate(frame: pd.DataFrame) -> int:
        upstream_done.set()
        assert replaced.wait(60)
        return len(frame)

    @op
    def invoice(frame: pd.DataFrame, _gate: int) -> pd.DataFrame:
        return frame.assign(amount=frame["amount"] * 2)

    @job(resource_defs={**resources_for(postgres), "mem": mem_io_manager})
    def billing() -> None:
        rows = extract()
        invoice(rows, gate(rows))

    def config(customer: str) -> dict[str, Any]:
        return {"ops": {"extract": {"config": {"customer": customer}}}}

    results: list[Any] = []
    run_a = threading.Thread(
        target=lambda: results.append(
            billing.execute_in_process(run_config=config("ACME"), raise_on_error=False)
        )
    )
    run_a.start()
    try:
        assert upstream_done.wait(60)
        run_b = billing.execute_in_process(run_config=config("GLOBEX"), op_selection=["extract"])
        assert run_b.success
    finally:
        replaced.set()
        run_a.join(60)
    message = failure_message(results[0])
    assert "Op 'extract' output 'result' of job 'billing':" in message
    assert f"holds rows of run {run_b.run_id} instead of run {results[0].run_id}" in message
    assert "public.billing__invoice__result" not in _tables(db)
    assert _values(db, "public.billing__extract__result", "customer") == ["GLOBEX"]


def test_frames_the_table_cannot_take_as_they_are(postgres: PostgresResource, db: Database) -> None:
    aggregated = (
        pd.DataFrame({"k": ["a", "a", "b"], "v": [1, 2, 3]})
        .groupby("k")
        .agg({"v": ["sum", "mean"]})
    )
    message = failure_message(
        run_assets([frame_asset(aggregated, key=("agg",))], postgres, raise_on_error=False)
    )
    assert "Asset agg: the frame's columns are a MultiIndex" in message
    assert "flatten it first" in message
    assert _tables(db) == set()


def test_an_empty_frame_of_any_dtype_replaces(postgres: PostgresResource, db: Database) -> None:
    db.execute(
        "CREATE TABLE public.keyed (id bigint PRIMARY KEY, name text); "
        "INSERT INTO public.keyed VALUES (1, 'a'), (2, 'b')"
    )
    # pandas makes these columns float64.
    empty = pd.DataFrame({"id": [], "name": []})
    result = run_assets(
        [frame_asset(empty, key=("keyed",), metadata={"write_mode": "replace"})], postgres
    )
    assert result.success
    assert db.snapshot("public.keyed") == (0, "d41d8cd98f00b204e9800998ecf8427e")


def test_metadata_that_would_widen_a_write_is_refused(
    postgres: PostgresResource, db: Database
) -> None:
    keyed = frame_asset(ORDERS, metadata={"conflict_target": "id"})
    assert run_assets([keyed], postgres).success
    before = db.snapshot("shop.products")
    for metadata, expected in (
        (
            {"primary_key": "id"},
            "unknown metadata key 'primary_key': did you mean 'conflict_target'?",
        ),
        (
            {"partition_expr": "id"},
            "metadata 'partition_expr' is set but the asset has no partitions_def",
        ),
    ):
        bad = frame_asset(ORDERS.head(1), metadata=metadata)
        message = failure_message(run_assets([bad], postgres, raise_on_error=False))
        assert f"Asset shop/products: {expected}" in message
        assert db.snapshot("shop.products") == before


def test_a_misspelled_input_key_is_refused(postgres: PostgresResource, db: Database) -> None:
    wide = frame_asset(pd.DataFrame({"a": [1], "b": [2]}), key=("wide",))

    @asset(ins={"wide": AssetIn(metadata={"colums": ["a"]})})
    def narrow(wide: pd.DataFrame) -> pd.DataFrame:
        return wide

    message = failure_message(run_assets([wide, narrow], postgres, raise_on_error=False))
    assert (
        "Input 'wide' of asset narrow: unknown input metadata key 'colums': did you mean "
        "'columns'? (nothing was read; input metadata keys this IO manager reads: columns)"
    ) in message
    assert "public.narrow" not in _tables(db)


def test_an_input_asking_for_no_column_is_refused(postgres: PostgresResource, db: Database) -> None:
    wide = frame_asset(pd.DataFrame({"a": [1], "b": [2]}), key=("wide",))

    @asset(ins={"wide": AssetIn(metadata={"columns": []})})
    def narrow(wide: pd.DataFrame) -> pd.DataFrame:
        return wide

    message = failure_message(run_assets([wide, narrow], postgres, raise_on_error=False))
    assert "Asset wide: the read of table public.wide asks for no column (columns: [])" in message
    assert "public.narrow" not in _tables(db)


def test_long_asset_names_are_shortened(postgres: PostgresResource, db: Database) -> None:
    name = "customer_lifetime_value_by_acquisition_channel_and_cohort_month_x"
    assert len(name) > 63
    assert run_assets([frame_asset(pd.DataFrame({"v": [1]}), key=(name,))], postgres).success
    (table,) = [t for t in _tables(db) if t.startswith("public.customer_lifetime")]
    assert len(table.removeprefix("public.")) == 63
    assert _values(db, table, "v") == [1]


def test_the_first_range_of_an_asset_that_reads_itself(
    postgres: PostgresResource, db: Database
) -> None:
    seen: list[pd.DataFrame] = []

    @asset(
        partitions_def=DAYS,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={"partition_expr": "day"},
        ins={
            "previous": AssetIn(
                key=AssetKey("running"),
                partition_mapping=TimeWindowPartitionMapping(start_offset=-1, end_offset=-1),
            )
        },
    )
    def running(context, previous: pd.DataFrame) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        seen.append(previous)
        days = pd.date_range(*context.partition_time_window, freq="D", inclusive="left")
        return pd.DataFrame({"day": days, "n": range(len(days))})

    tags = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-01-03",
    }
    assert run_assets([running], postgres, tags=tags).success
    assert seen[-1].shape == (0, 0)
    assert _values(db, "public.running", "n") == [0, 1, 2]
    # Once the table exists, the range reads what is stored.
    assert run_assets([running], postgres, tags=tags).success
    assert len(seen[-1]) == 2
