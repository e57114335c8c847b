"""PostgreSQL's own partitioned tables: as targets the user created (range, list, hash,
sub-partitioned), and created by the IO manager for Dagster partitions (``partitioning:
native``), one child table per partition, made by the write that first needs it, also by
backfill steps side by side. Plain tables of partitioned assets get a partition index."""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)

from resources import PostgresResource
from resources.catalog import read_catalog
from resources.core import driver_connection
from resources.options import TimeWindowSlice
from resources.read import read_query

from .conftest import Database
from .helpers import failure_message, frame_asset, resources_for, run_assets, written

DAYS = DailyPartitionsDefinition(start_date="2024-03-01", end_date="2024-03-11")
REGIONS = StaticPartitionsDefinition(["eu", "us-east", "us_east"])
NATIVE = {"conflict_target": ["day", "id"], "partition_expr": "day", "partitioning": "native"}


def day_rows(day: str, ids: Sequence[int], value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {"day": [date.fromisoformat(day)] * len(ids), "id": list(ids), "v": [value] * len(ids)}
    ).astype({"day": "datetime64[s]"})


def daily_asset(metadata: dict[str, Any], sizes: dict[str, int], value: list[float]) -> Any:
    @asset(key_prefix=["n"], partitions_def=DAYS, metadata=metadata)
    def events(context: AssetExecutionContext) -> pd.DataFrame:
        day = context.partition_key
        return day_rows(day, range(sizes.get(day, 3)), value[0])

    return events


def children(db: Database, table: str) -> dict[str, str]:
    """Each partition of ``table`` (at any depth) and its bounds, as PostgreSQL prints them."""
    return {
        r["name"]: r["bound"]
        for r in db.fetch(
            "SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound "
            "FROM pg_partition_tree($1::regclass) AS t JOIN pg_class AS c ON c.oid = t.relid "
            "WHERE t.level > 0",
            table,
        )
    }


def rows_by_child(db: Database, table: str) -> dict[str, int]:
    return {
        r["child"]: r["n"]
        for r in db.fetch(
            f"SELECT tableoid::regclass::text AS child, count(*) AS n FROM {table} GROUP BY 1"
        )
    }


def test_native_daily_partitions_get_a_child_each_and_replace_touches_only_theirs(
    postgres: PostgresResource, db: Database
) -> None:
    sizes: dict[str, int] = {}
    value = [1.0]
    events = daily_asset(NATIVE, sizes, value)
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        assert run_assets([events], postgres, partition_key=day).success
    assert db.fetch(
        "SELECT partstrat::text AS s FROM pg_partitioned_table "
        "WHERE partrelid = 'n.events'::regclass"
    ) == [{"s": "r"}]
    assert children(db, "n.events") == {
        f"events_2024030{d}": f"FOR VALUES FROM ('2024-03-0{d} 00:00:00') TO "
        f"('2024-03-0{d + 1} 00:00:00')"
        for d in (1, 2, 3)
    }
    before = {d: db.snapshot(f"n.events_2024030{d}") for d in (1, 3)}

    # An upsert of day 2 with changed values and one new row, then a replace with fewer.
    sizes["2024-03-02"], value[0] = 4, 2.0
    meta = written(run_assets([events], postgres, partition_key="2024-03-02"), ("n", "events"))
    assert (meta["rows_inserted"], meta["rows_updated"]) == (1, 3)
    replace = daily_asset({**NATIVE, "write_mode": "replace"}, sizes, value)
    sizes["2024-03-02"] = 2
    meta = written(run_assets([replace], postgres, partition_key="2024-03-02"), ("n", "events"))
    assert (meta["rows_deleted"], meta["dagster/partition_row_count"]) == (2, 2)
    assert rows_by_child(db, "n.events") == {
        "n.events_20240301": 3,
        "n.events_20240302": 2,
        "n.events_20240303": 3,
    }
    assert {d: db.snapshot(f"n.events_2024030{d}") for d in (1, 3)} == before
    assert db.fetch("SELECT DISTINCT v FROM n.events_20240302") == [{"v": 2.0}]

    seen: list[pd.DataFrame] = []

    @asset(key_prefix=["n"], partitions_def=DAYS, ins={"events": AssetIn(key_prefix=["n"])})
    def day_total(events: pd.DataFrame) -> None:
        seen.append(events)

    assert run_assets(
        [events, day_total], postgres, partition_key="2024-03-03", selection=[day_total]
    ).success
    assert len(seen[0]) == 3 and set(seen[0]["day"]) == {pd.Timestamp("2024-03-03")}


def test_a_backfill_range_in_one_run_makes_a_child_per_day(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(
        key_prefix=["n"],
        partitions_def=DAYS,
        metadata=NATIVE,
        backfill_policy=BackfillPolicy.single_run(),
    )
    def ranged(context: AssetExecutionContext) -> pd.DataFrame:
        window = context.partition_time_window
        days = pd.date_range(window.start, window.end, freq="D", inclusive="left").date
        return pd.concat([day_rows(str(d), [1, 2]) for d in days])

    job = define_asset_job("ranged_job", selection=[ranged])
    defs = Definitions(assets=[ranged], jobs=[job], resources=resources_for(postgres))
    result = defs.resolve_job_def("ranged_job").execute_in_process(
        tags={
            "dagster/asset_partition_range_start": "2024-03-04",
            "dagster/asset_partition_range_end": "2024-03-07",
        }
    )
    # The same metadata goes on each day's materialization: the range's count is no day's.
    assert "dagster/partition_row_count" not in written(result, ("n", "ranged"))
    assert sorted(children(db, "n.ranged")) == [f"ranged_2024030{d}" for d in (4, 5, 6, 7)]
    assert set(rows_by_child(db, "n.ranged").values()) == {2}


def test_native_list_partitions_name_keys_that_are_not_plain_words_apart(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(
        key_prefix=["n"],
        partitions_def=REGIONS,
        metadata={"partition_expr": "region", "partitioning": "native", "write_mode": "replace"},
    )
    def sales(context: AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"region": [context.partition_key] * 2, "amount": [1, 2]})

    for region in REGIONS.get_partition_keys():
        assert run_assets([sales], postgres, partition_key=region).success
    made = children(db, "n.sales")
    assert made["sales_eu"] == "FOR VALUES IN ('eu')"
    assert made["sales_us_east"] == "FOR VALUES IN ('us_east')"
    hyphen = [name for name, bound in made.items() if bound == "FOR VALUES IN ('us-east')"]
    assert len(hyphen) == 1 and hyphen[0].startswith("sales_us_east_")
    assert set(rows_by_child(db, "n.sales").values()) == {2} and len(made) == 3


def test_native_multi_partitions_are_sub_partitioned(
    postgres: PostgresResource, db: Database
) -> None:
    grid = MultiPartitionsDefinition({"day": DAYS, "region": REGIONS})

    @asset(
        key_prefix=["n"],
        partitions_def=grid,
        metadata={
            "conflict_target": ["day", "region", "id"],
            "partition_expr": {"day": "day", "region": "region"},
            "partitioning": "native",
        },
    )
    def visits(context: AssetExecutionContext) -> pd.DataFrame:
        key = context.partition_key
        assert isinstance(key, MultiPartitionKey)
        frame = day_rows(key.keys_by_dimension["day"], [1, 2, 3])
        return frame.assign(region=key.keys_by_dimension["region"])

    for day, region in (("2024-03-01", "eu"), ("2024-03-01", "us_east"), ("2024-03-02", "eu")):
        key = MultiPartitionKey({"day": day, "region": region})
        assert run_assets([visits], postgres, partition_key=key).success
    made = children(db, "n.visits")
    assert set(made) == {
        "visits_20240301",
        "visits_20240301_eu",
        "visits_20240301_us_east",
        "visits_20240302",
        "visits_20240302_eu",
    }
    assert made["visits_20240301_eu"] == "FOR VALUES IN ('eu')"
    assert db.fetch(
        "SELECT partstrat::text AS s FROM pg_partitioned_table "
        "WHERE partrelid = 'n.visits_20240301'::regclass"
    ) == [{"s": "l"}]
    assert rows_by_child(db, "n.visits") == {
        "n.visits_20240301_eu": 3,
        "n.visits_20240301_us_east": 3,
        "n.visits_20240302_eu": 3,
    }


def test_parallel_backfill_steps_create_children_side_by_side(
    database_url: str, db: Database
) -> None:
    """Eight steps at once, two per new day: each child is made once, every row lands."""
    events = daily_asset(NATIVE, {}, [1.0])

    def step(day: str) -> bool:
        resource = PostgresResource(url=database_url)
        try:
            return run_assets([events], resource, partition_key=day).success
        finally:
            resource.dispose()

    days = [f"2024-03-0{d}" for d in (4, 5, 6, 7)] * 2
    with ThreadPoolExecutor(len(days)) as pool:
        assert all(pool.map(step, days))
    assert rows_by_child(db, "n.events") == {f"n.events_2024030{d}": 3 for d in (4, 5, 6, 7)}
    assert len(children(db, "n.events")) == 4


def test_native_partitioning_never_converts_an_existing_plain_table(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE SCHEMA n; CREATE TABLE n.events (day timestamp, id bigint, v float8, "
        "PRIMARY KEY (day, id)); INSERT INTO n.events VALUES ('2024-03-01', 9, 9)"
    )
    before = db.snapshot("n.events")
    result = run_assets(
        [daily_asset(NATIVE, {}, [1.0])], postgres, partition_key="2024-03-01", raise_on_error=False
    )
    message = failure_message(result)
    assert "Asset n/events" in message and "exists as a plain table" in message
    assert db.snapshot("n.events") == before


def test_native_partitioning_needs_the_partition_column_in_the_key(
    postgres: PostgresResource, db: Database
) -> None:
    metadata = {**NATIVE, "conflict_target": ["id"]}
    result = run_assets(
        [daily_asset(metadata, {}, [1.0])],
        postgres,
        partition_key="2024-03-01",
        raise_on_error=False,
    )
    assert "conflict_target ['id'] lacks ['day']" in failure_message(result)
    assert db.fetch("SELECT to_regclass('n.events') AS t") == [{"t": None}]


USER_TABLES = {
    "range": (
        "CREATE TABLE t (id bigint, k text, v float8, PRIMARY KEY (id)) PARTITION BY RANGE (id);"
        "CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (MINVALUE) TO (100);"
        "CREATE TABLE t_high PARTITION OF t FOR VALUES FROM (100) TO (MAXVALUE)"
    ),
    "list": (
        "CREATE TABLE t (id bigint, k text, v float8, PRIMARY KEY (id, k)) PARTITION BY LIST (k);"
        "CREATE TABLE t_a PARTITION OF t FOR VALUES IN ('a');"
        "CREATE TABLE t_other PARTITION OF t DEFAULT"
    ),
    "hash": (
        "CREATE TABLE t (id bigint, k text, v float8, PRIMARY KEY (id)) PARTITION BY HASH (id);"
        + ";".join(
            f"CREATE TABLE t_{r} PARTITION OF t FOR VALUES WITH (MODULUS 3, REMAINDER {r})"
            for r in range(3)
        )
    ),
    "sub-partitioned": (
        "CREATE TABLE t (id bigint, k text, v float8, PRIMARY KEY (id, k)) "
        "PARTITION BY LIST (k);"
        "CREATE TABLE t_a PARTITION OF t FOR VALUES IN ('a') PARTITION BY RANGE (id);"
        "CREATE TABLE t_a_low PARTITION OF t_a FOR VALUES FROM (MINVALUE) TO (100);"
        "CREATE TABLE t_a_high PARTITION OF t_a FOR VALUES FROM (100) TO (MAXVALUE);"
        "CREATE TABLE t_b PARTITION OF t FOR VALUES IN ('b')"
    ),
}


@pytest.mark.parametrize("kind", list(USER_TABLES))
def test_user_created_partitioned_tables_take_upserts_and_replaces(
    postgres: PostgresResource, db: Database, merge_path: str, kind: str
) -> None:
    db.execute(USER_TABLES[kind])
    key = ["id", "k"] if kind in ("list", "sub-partitioned") else ["id"]
    first = pd.DataFrame({"id": [1, 150, 2, 250], "k": ["a", "a", "b", "b"], "v": [1.0] * 4})
    meta = written(
        run_assets([frame_asset(first, key=["t"], metadata={"conflict_target": key})], postgres),
        ["t"],
    )
    assert meta["rows_inserted"] == 4
    second = pd.DataFrame({"id": [1, 2, 300], "k": ["a", "b", "b"], "v": [5.0, 1.0, 7.0]})
    meta = written(
        run_assets([frame_asset(second, key=["t"], metadata={"conflict_target": key})], postgres),
        ["t"],
    )
    assert (meta["rows_inserted"], meta["rows_updated"], meta["rows_unchanged"]) == (1, 1, 1)
    assert [(r["id"], r["v"]) for r in db.rows("t", "id")] == [
        (1, 5.0),
        (2, 1.0),
        (150, 1.0),
        (250, 1.0),
        (300, 7.0),
    ]
    replace = frame_asset(
        second.iloc[:2], key=["t"], metadata={"conflict_target": key, "write_mode": "replace"}
    )
    meta = written(run_assets([replace], postgres), ["t"])
    assert meta["rows_deleted"] == 3
    assert [r["id"] for r in db.rows("t", "id")] == [1, 2]
    assert sum(rows_by_child(db, "t").values()) == 2


REFUSED = {
    "a key without the partition column": (
        USER_TABLES["list"] + "; INSERT INTO t VALUES (1, 'a', 1)",
        pd.DataFrame({"id": [1], "k": ["a"], "v": [2.0]}),
        ("partitioned by ['k']", "lacks ['k']"),
    ),
    "a row without a partition": (
        "CREATE TABLE t (id bigint PRIMARY KEY, v float8) PARTITION BY RANGE (id);"
        "CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (0) TO (100);"
        "INSERT INTO t VALUES (1, 1)",
        pd.DataFrame({"id": [2, 500], "v": [2.0, 2.0]}),
        ("public.t has no partition for a row", "(id) = (500)"),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_write_into_a_partitioned_table_is_named_and_changes_nothing(
    postgres: PostgresResource, db: Database, case: str
) -> None:
    ddl, frame, expected = REFUSED[case]
    db.execute(ddl)
    before = db.snapshot("t")
    result = run_assets(
        [frame_asset(frame, key=["t"], metadata={"conflict_target": "id"})],
        postgres,
        raise_on_error=False,
    )
    message = failure_message(result)
    assert all(part in message for part in expected), message
    assert db.snapshot("t") == before


def test_a_partitioned_assets_plain_table_is_indexed_on_its_partition_column(
    postgres: PostgresResource, db: Database
) -> None:
    metadata = {"conflict_target": ["id"], "partition_expr": "day"}
    assert run_assets(
        [daily_asset(metadata, {}, [1.0])], postgres, partition_key="2024-03-01"
    ).success
    assert db.fetch(
        "SELECT indexname AS name, indexdef LIKE '%(day)' AS on_day FROM pg_indexes "
        "WHERE schemaname = 'n' AND tablename = 'events' AND indexname LIKE '%partition%'"
    ) == [{"name": "events_partition_idx", "on_day": True}]


def test_the_catalog_sizes_a_plain_table_by_its_file_and_no_partitioned_one(
    postgres: PostgresResource, db: Database
) -> None:
    """The size decides whether a write counts the table's rows afterwards (a scan). A
    partitioned table is not sized: that would lock each of its partitions at every write."""
    db.execute(
        USER_TABLES["range"] + "; CREATE TABLE plain (id bigint PRIMARY KEY); "
        "INSERT INTO t SELECT i, 'a', 1 FROM generate_series(1, 5000) AS i; "
        "INSERT INTO plain SELECT generate_series(1, 5000)"
    )

    async def sizes(conn: Any) -> list[int | None]:
        driver = await driver_connection(conn)
        async with driver.transaction():
            return [
                (await read_catalog(driver, "public", name)).table.size_bytes  # type: ignore[union-attr]
                for name in ("t", "plain")
            ]

    plain = db.fetch("SELECT pg_relation_size('plain') AS n")[0]["n"]
    assert postgres.run(sizes) == [None, plain] and plain > 0


def test_a_partitions_read_and_merge_are_pruned_to_its_child_while_planning(
    postgres: PostgresResource, db: Database
) -> None:
    """The partition filter's bounds are constants of the column's type to the planner, so
    a read (and the merge, which uses the same filter) plans the one child only."""
    events = daily_asset(NATIVE, {}, [1.0])
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        assert run_assets([events], postgres, partition_key=day).success
    window = DAYS.time_window_for_partition_key("2024-03-02")
    part = [TimeWindowSlice("day", window.start, window.end)]

    async def plan(conn: Any) -> str:
        driver = await driver_connection(conn)
        async with driver.transaction():
            stored = (await read_catalog(driver, "n", "events")).table.columns  # type: ignore[union-attr]
            query, params = read_query("n", "events", stored, part, stored)
            return "\n".join(r[0] for r in await driver.fetch(f"EXPLAIN {query}", *params))

    explained = postgres.run(plan)
    assert "events_20240302" in explained
    assert "events_20240301" not in explained and "events_20240303" not in explained
    assert "Subplans Removed" not in explained  # pruned while planning, not at run time


@pytest.mark.parametrize("partitioning", ["plain", "native"])
@pytest.mark.parametrize("on_conflict", ["update", "nothing"])
def test_a_partition_upsert_counts_and_keeps_other_partitions(
    postgres: PostgresResource, db: Database, merge_path: str, partitioning: str, on_conflict: str
) -> None:
    metadata = {**NATIVE, "partitioning": partitioning, "on_conflict": on_conflict}
    sizes, value = {"2024-03-01": 3, "2024-03-02": 3}, [1.0]
    events = daily_asset(metadata, sizes, value)
    for day in sizes:
        assert run_assets([events], postgres, partition_key=day).success
    other = db.fetch("SELECT * FROM n.events WHERE day = '2024-03-01' ORDER BY id")
    sizes["2024-03-02"], value[0] = 5, 2.0
    meta = written(run_assets([events], postgres, partition_key="2024-03-02"), ("n", "events"))
    updated = 3 if on_conflict == "update" else 0
    assert (meta["rows_inserted"], meta["rows_updated"]) == (2, updated)
    assert db.fetch("SELECT * FROM n.events WHERE day = '2024-03-01' ORDER BY id") == other
    values = db.fetch("SELECT v FROM n.events WHERE day = '2024-03-02' ORDER BY id")
    assert [r["v"] for r in values] == [2.0 if on_conflict == "update" else 1.0] * 3 + [2.0] * 2


def test_a_failed_write_leaves_no_new_partition_behind(
    postgres: PostgresResource, db: Database
) -> None:
    value = [1.0]
    events = daily_asset(NATIVE, {}, value)
    assert run_assets([events], postgres, partition_key="2024-03-01").success
    db.execute("ALTER TABLE n.events ADD CONSTRAINT positive CHECK (v > 0)")
    before = db.snapshot("n.events")
    value[0] = -1.0  # refused by the CHECK, after the day's child is created
    result = run_assets([events], postgres, partition_key="2024-03-02", raise_on_error=False)
    assert "positive" in failure_message(result)
    assert list(children(db, "n.events")) == ["events_20240301"]
    assert db.snapshot("n.events") == before


def test_native_dynamic_partitions_get_a_child_per_key_as_keys_are_added(
    postgres: PostgresResource, db: Database
) -> None:
    customers = DynamicPartitionsDefinition(name="customers")

    @asset(
        key_prefix=["n"],
        partitions_def=customers,
        metadata={
            "conflict_target": ["customer", "n"],
            "partition_expr": "customer",
            "partitioning": "native",
            "write_mode": "replace",
        },
    )
    def orders(context: AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"customer": [context.partition_key] * 2, "n": [1, 2]})

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("customers", ["acme"])
        assert run_assets([orders], postgres, partition_key="acme", instance=instance).success
        instance.add_dynamic_partitions("customers", ["globex"])
        for key in ("globex", "acme"):
            assert run_assets([orders], postgres, partition_key=key, instance=instance).success
    assert children(db, "n.orders") == {
        "orders_acme": "FOR VALUES IN ('acme')",
        "orders_globex": "FOR VALUES IN ('globex')",
    }
    assert rows_by_child(db, "n.orders") == {"n.orders_acme": 2, "n.orders_globex": 2}


FALL_BACK = HourlyPartitionsDefinition(
    start_date="2024-11-03-00:00", end_date="2024-11-03-04:00", timezone="America/New_York"
)


def test_the_hour_repeated_when_summer_time_ends_gets_a_child_of_its_own(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(
        key_prefix=["n"],
        partitions_def=FALL_BACK,
        metadata={"partition_expr": "at", "partitioning": "native", "write_mode": "replace"},
    )
    def ticks(context: AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"at": [context.partition_time_window.start], "n": [1]})

    keys = FALL_BACK.get_partition_keys()
    assert len(keys) == 5  # 00:00, 01:00 (EDT), 01:00 (EST), 02:00, 03:00
    for key in keys:
        assert run_assets([ticks], postgres, partition_key=key).success
    made = children(db, "n.ticks")
    assert len(made) == 5
    assert {"ticks_20241103_0100_m0400", "ticks_20241103_0100_m0500"} <= set(made)
    assert len(rows_by_child(db, "n.ticks")) == 5


def test_the_repeated_hour_into_a_timestamp_without_zone_is_refused_by_name(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(key_prefix=["n"], partitions_def=FALL_BACK, metadata={"partition_expr": "at"})
    def naive(context: AssetExecutionContext) -> pd.DataFrame:
        start = context.partition_time_window.start.replace(tzinfo=None)
        return pd.DataFrame({"at": [start], "n": [1]})

    assert run_assets([naive], postgres, partition_key="2024-11-03-00:00").success
    before = db.snapshot("n.naive")
    # [01:00 EDT, 01:00 EST): no wall-clock time lies in it.
    result = run_assets([naive], postgres, partition_key="2024-11-03-01:00", raise_on_error=False)
    message = failure_message(result)
    assert "column 'at'" in message and "store the column as timestamptz" in message
    assert db.snapshot("n.naive") == before


NATIVE_SALES = {"partition_expr": "region", "partitioning": "native", "write_mode": "replace"}


def sales_asset(name: str = "sales") -> Any:
    @asset(name=name, partitions_def=REGIONS, metadata=NATIVE_SALES)
    def sales(context: AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"region": [context.partition_key], "amount": [1]})

    return sales


REFUSED_NATIVE = {
    "a table that is not its partition has the child's name": (
        "CREATE TABLE sales (region text, amount bigint) PARTITION BY LIST (region);"
        "CREATE TABLE sales_eu (note text)",
        "another relation of that name exists",
    ),
    "a partition of another name holds the key": (
        "CREATE TABLE sales (region text, amount bigint) PARTITION BY LIST (region);"
        "CREATE TABLE europe PARTITION OF sales FOR VALUES IN ('eu', 'x')",
        "overlaps one it has",
    ),
    "the DEFAULT partition holds the key's rows": (
        "CREATE TABLE sales (region text, amount bigint) PARTITION BY LIST (region);"
        "CREATE TABLE other PARTITION OF sales DEFAULT; INSERT INTO sales VALUES ('eu', 5)",
        "the DEFAULT partition of public.sales holds rows",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_NATIVE))
def test_a_native_partition_that_cannot_be_made_is_named(
    postgres: PostgresResource, db: Database, case: str
) -> None:
    ddl, expected = REFUSED_NATIVE[case]
    db.execute(ddl)
    before = db.snapshot("sales"), children(db, "sales")
    result = run_assets([sales_asset()], postgres, partition_key="eu", raise_on_error=False)
    message = failure_message(result)
    assert "Asset sales" in message and expected in message, message
    assert (db.snapshot("sales"), children(db, "sales")) == before


def test_native_children_of_your_own_parent_take_its_generated_columns(
    postgres: PostgresResource, db: Database
) -> None:
    db.execute(
        "CREATE TABLE sales (region text, amount bigint, "
        "doubled bigint GENERATED ALWAYS AS (amount * 2) STORED) PARTITION BY LIST (region)"
    )
    assert run_assets([sales_asset()], postgres, partition_key="eu").success
    assert db.fetch("SELECT region, doubled FROM sales_eu") == [{"region": "eu", "doubled": 2}]
