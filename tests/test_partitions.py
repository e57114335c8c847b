"""Every Dagster partition kind, written with upsert and replace and read back by slice."""

import time
from datetime import datetime, timedelta

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionKeyRange,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)

from resources import PostgresResource

from .conftest import Database
from .helpers import failure_message, frame_asset, resources_for, run_assets, written

HOURS = HourlyPartitionsDefinition(start_date="2024-03-01-00:00", end_date="2024-03-01-06:00")


def test_hourly_partitions_upsert_and_read_only_their_hour(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(
        key_prefix=["p"],
        partitions_def=HOURS,
        metadata={"conflict_target": ["at", "sensor"], "partition_expr": "at"},
    )
    def readings(context: AssetExecutionContext) -> pd.DataFrame:
        start = context.partition_time_window.start
        times = [start + timedelta(minutes=m) for m in (0, 30)]
        return pd.DataFrame(
            {"at": pd.to_datetime(times, utc=True), "sensor": ["a", "a"], "value": [1.0, 2.0]}
        )

    seen: list[pd.DataFrame] = []

    @asset(key_prefix=["p"], partitions_def=HOURS, ins={"readings": AssetIn(key_prefix=["p"])})
    def reading_count(readings: pd.DataFrame) -> None:
        seen.append(readings)

    for hour in ("2024-03-01-01:00", "2024-03-01-02:00", "2024-03-01-01:00"):
        result = run_assets([readings, reading_count], postgres, partition_key=hour)
        assert written(result, ("p", "readings"))["dagster/partition_row_count"] == 2
    assert db.fetch('SELECT count(*) AS n FROM p."readings"') == [{"n": 4}]
    assert all(len(frame) == 2 for frame in seen)
    assert {ts.hour for ts in seen[1]["at"]} == {2}


def test_dynamic_partitions_replace_only_their_keys(
    postgres: PostgresResource, db: Database
) -> None:
    customers = DynamicPartitionsDefinition(name="customers")
    sizes = {"acme": 3, "globex": 2}

    @asset(
        key_prefix=["p"],
        partitions_def=customers,
        metadata={"partition_expr": "customer", "write_mode": "replace"},
    )
    def orders(context: AssetExecutionContext) -> pd.DataFrame:
        customer = context.partition_key
        return pd.DataFrame({"customer": [customer] * sizes[customer], "n": range(sizes[customer])})

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("customers", ["acme", "globex"])
        for key in ("acme", "globex"):
            assert run_assets([orders], postgres, partition_key=key, instance=instance).success
        sizes["acme"] = 1
        result = run_assets([orders], postgres, partition_key="acme", instance=instance)
    meta = written(result, ("p", "orders"))
    assert (
        meta["rows_deleted"],
        meta["dagster/partition_row_count"],
        meta["dagster/row_count"],
    ) == (3, 1, 3)


def test_multi_partitions_map_each_dimension_to_a_column(
    postgres: PostgresResource, db: Database
) -> None:
    regions = StaticPartitionsDefinition(["eu", "us"])
    grid = MultiPartitionsDefinition({"hour": HOURS, "region": regions})

    @asset(
        key_prefix=["p"],
        partitions_def=grid,
        metadata={
            "conflict_target": ["region", "at"],
            "partition_expr": {"hour": "at", "region": "region"},
        },
    )
    def load(context: AssetExecutionContext) -> pd.DataFrame:
        key = context.partition_key
        assert isinstance(key, MultiPartitionKey)
        start = datetime.strptime(key.keys_by_dimension["hour"], "%Y-%m-%d-%H:%M")
        return pd.DataFrame(
            {"region": [key.keys_by_dimension["region"]], "at": pd.to_datetime([start], utc=True)}
        )

    for hour in ("2024-03-01-00:00", "2024-03-01-01:00"):
        for region in ("eu", "us"):
            key = MultiPartitionKey({"hour": hour, "region": region})
            meta = written(run_assets([load], postgres, partition_key=key), ("p", "load"))
            assert meta["dagster/partition_row_count"] == 1
    assert db.fetch('SELECT count(*) AS n FROM p."load"') == [{"n": 4}]

    @asset(key_prefix=["p"], partitions_def=grid, metadata={"conflict_target": "at"})
    def no_expression() -> pd.DataFrame:
        return pd.DataFrame({"at": [1]})

    key = MultiPartitionKey({"hour": "2024-03-01-00:00", "region": "eu"})
    result = run_assets([no_expression], postgres, partition_key=key, raise_on_error=False)
    assert "mapping each dimension" in failure_message(result)


def test_single_run_backfill_writes_and_reads_the_whole_range(
    postgres: PostgresResource, db: Database
) -> None:
    @asset(
        key_prefix=["p"],
        partitions_def=HOURS,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={"conflict_target": "at", "partition_expr": "at"},
    )
    def ticks(context: AssetExecutionContext) -> pd.DataFrame:
        window = context.partition_time_window
        hours = pd.date_range(window.start, window.end, freq="h", inclusive="left")
        return pd.DataFrame({"at": hours.tz_convert("UTC"), "n": range(len(hours))})

    seen: list[pd.DataFrame] = []

    @asset(
        key_prefix=["p"],
        partitions_def=HOURS,
        backfill_policy=BackfillPolicy.single_run(),
        ins={"ticks": AssetIn(key=AssetKey(["p", "ticks"]))},
    )
    def tick_sum(ticks: pd.DataFrame) -> None:
        seen.append(ticks)

    keys = PartitionKeyRange("2024-03-01-01:00", "2024-03-01-04:00")
    job = define_asset_job("ticks_job", selection=[ticks, tick_sum])
    defs = Definitions(assets=[ticks, tick_sum], jobs=[job], resources=resources_for(postgres))
    for _ in range(2):
        result = defs.resolve_job_def("ticks_job").execute_in_process(
            tags={
                "dagster/asset_partition_range_start": keys.start,
                "dagster/asset_partition_range_end": keys.end,
            }
        )
        meta = written(result, ("p", "ticks"))
        assert "dagster/partition_row_count" not in meta  # four hours, one metadata
        assert meta["rows_staged"] == 4
    assert db.fetch('SELECT count(*) AS n FROM p."ticks"') == [{"n": 4}]
    assert [len(frame) for frame in seen] == [4, 4]


@pytest.mark.parametrize("write_mode", ["upsert", "replace"])
def test_rows_outside_the_partition_are_refused(
    postgres: PostgresResource, db: Database, write_mode: str
) -> None:
    @asset(
        key_prefix=["p"],
        partitions_def=HOURS,
        metadata={"conflict_target": "at", "partition_expr": "at", "write_mode": write_mode},
    )
    def stray(context: AssetExecutionContext) -> pd.DataFrame:
        start = context.partition_time_window.start
        return pd.DataFrame({"at": pd.to_datetime([start, start + timedelta(hours=1)], utc=True)})

    result = run_assets([stray], postgres, partition_key="2024-03-01-01:00", raise_on_error=False)
    message = failure_message(result)
    assert "rows outside the partition being written" in message and "'at'" in message
    assert "(at in [2024-03-01 01:00:00+00:00, 2024-03-01 02:00:00+00:00))" in message
    assert db.snapshot('p."stray"') in (None, (0, "d41d8cd98f00b204e9800998ecf8427e"))


def _region_frame(region: str, start: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(start, start + rows), "region": region, "v": 1.0})


def test_a_partition_replace_after_rows_the_statistics_have_not_seen_stays_linear(
    postgres: PostgresResource, db: Database
) -> None:
    """The replace deletes the partition's rows the frame lacks with an anti-join against the
    stage. Rows written just before (autovacuum has not analyzed them yet) leave the table's
    statistics promising almost none, for which the planner would pick a nested loop over
    the unindexed stage: once per row of the table. Timed against the same replace with
    fresh statistics."""
    regions = StaticPartitionsDefinition(["a", "b"])
    metadata = {"conflict_target": "id", "write_mode": "replace", "partition_expr": "region"}
    frames = {"frame": _region_frame("a", 0, 2_000)}
    products = frame_asset(lambda: frames["frame"], metadata=metadata, partitions_def=regions)
    assert run_assets([products], postgres, partition_key="a").success
    db.execute("ANALYZE shop.products; ALTER TABLE shop.products SET (autovacuum_enabled = false)")
    rows = 40_000
    seconds = {}
    for n, stats in enumerate(("stale", "fresh")):
        start = (n + 1) * 1_000_000
        db.execute(
            f"INSERT INTO shop.products SELECT g, 'b', 0 FROM generate_series({start - rows}, "
            f"{start - 1}) AS g"
        )
        if stats == "fresh":
            db.execute("ANALYZE shop.products")
        frames["frame"] = _region_frame("b", start, rows)
        began = time.perf_counter()
        assert run_assets([products], postgres, partition_key="b").success
        seconds[stats] = time.perf_counter() - began
        stored = db.fetch(
            "SELECT count(*) AS n, min(id) AS lo FROM shop.products WHERE region = 'b'"
        )
        assert stored == [{"n": rows, "lo": start}]
    assert db.fetch("SELECT count(*) AS n FROM shop.products WHERE region = 'a'") == [{"n": 2_000}]
    # A nested loop took minutes here (40,000 x 40,000 rows); a hash anti-join, under a second.
    assert seconds["stale"] < 10 * seconds["fresh"], seconds
