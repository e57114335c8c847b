"""The example pipeline, in process, on the full nycflights13 data set."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, build_schedule_context

from pipelines.__main__ import runs
from pipelines.assets import MEASURES, MONTHS
from pipelines.data import nycflights13
from pipelines.definitions import defs

from .conftest import Database

NEW_YORK = ZoneInfo("America/New_York")


def test_definitions_load() -> None:
    Definitions.validate_loadable(defs)
    assert len(MONTHS.get_partition_keys()) == 12


def test_workspace_validates_with_the_dagster_cli() -> None:
    """`dagster dev` loads workspace.yaml with no flags; the CLI's own check agrees."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=root,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_flights_key_is_unique_in_the_data() -> None:
    flights = nycflights13("flights")
    assert not flights.duplicated(["year", "month", "day", "carrier", "flight", "origin"]).any()


def _materialize_everything() -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    with DagsterInstance.ephemeral() as instance:
        for result in runs(instance):
            assert result.success
            for event in result.get_asset_materialization_events():
                meta = {k: v.value for k, v in event.materialization.metadata.items()}
                table = str(meta["dagster/table_name"]).split(".")[-1]
                sums = totals.setdefault(table, {"inserted": 0, "updated": 0, "unchanged": 0})
                for name in sums:
                    sums[name] += int(meta[f"rows_{name}"])
    return totals


def test_pipeline_loads_nycflights13_and_a_second_run_changes_nothing(
    database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    expected_rows = {
        "airlines": 16,
        "airports": 1458,
        "planes": 3322,
        "weather": 26115 - 3,  # three airports x one repeated local hour, keep_first
        "flights": 336_776,
        "route_stats": 2_313,
    }
    first = _materialize_everything()
    for table, rows in expected_rows.items():
        assert first[table]["inserted"] == rows
        assert db.fetch(f'SELECT count(*) AS n FROM nycflights."{table}"') == [{"n": rows}]

    # flights is natively partitioned: each month's rows are in that month's child table.
    per_month = db.fetch(
        "SELECT tableoid::regclass::text AS child, count(*) AS n, count(DISTINCT "
        "date_trunc('month', sched_dep_at AT TIME ZONE 'America/New_York')) AS months "
        "FROM nycflights.flights GROUP BY 1 ORDER BY 1"
    )
    expected = nycflights13("flights").groupby("month").size().tolist()
    assert [r["n"] for r in per_month] == expected
    assert [r["child"] for r in per_month] == [
        f"nycflights.flights_2013{m:02d}01" for m in range(1, 13)
    ]
    assert {r["months"] for r in per_month} == {1}

    # Spot values: UA 1545 left EWR at 05:17 on 2013-01-01, scheduled 05:15 EST.
    ua1545 = db.fetch(
        "SELECT sched_dep_at, dep_time, dep_delay, tailnum FROM nycflights.flights "
        "WHERE carrier = 'UA' AND flight = 1545 AND origin = 'EWR' "
        "AND sched_dep_at < '2013-01-02 00:00-05'"
    )
    assert ua1545 == [
        {
            "sched_dep_at": datetime(2013, 1, 1, 5, 15, tzinfo=NEW_YORK),
            "dep_time": 517.0,
            "dep_delay": 2.0,
            "tailnum": "N14228",
        }
    ]
    # The repeated hour kept its first (EDT, 05:00 UTC) reading.
    repeated = db.fetch(
        "SELECT time_hour, temp FROM nycflights.weather "
        "WHERE origin = 'EWR' AND year = 2013 AND month = 11 AND day = 3 AND hour = 1"
    )
    assert repeated == [
        {"time_hour": pd.Timestamp("2013-11-03 05:00Z").to_pydatetime(), "temp": 51.98}
    ]
    # Delay statistics agree with pandas on the source data.
    jan = nycflights13("flights").query("month == 1 and carrier == 'AA' and origin == 'JFK'")
    stats = db.fetch(
        "SELECT flights, mean_dep_delay, airline FROM nycflights.monthly_delays "
        "WHERE carrier = 'AA' AND origin = 'JFK' AND month = '2013-01-01 00:00-05'"
    )
    assert stats[0]["flights"] == len(jan)
    assert stats[0]["mean_dep_delay"] == pytest.approx(jan["dep_delay"].mean())
    assert stats[0]["airline"] == "American Airlines Inc."
    # route_stats (polars, from the table the pandas flights asset wrote) agrees with pandas.
    route = db.fetch(
        "SELECT flights, mean_air_time, distance FROM nycflights.route_stats "
        "WHERE origin = 'JFK' AND dest = 'LAX' AND month = '2013-01-01 00:00-05'"
    )
    jfk_lax = nycflights13("flights").query("month == 1 and origin == 'JFK' and dest == 'LAX'")
    assert route == [
        {
            "flights": len(jfk_lax),
            "mean_air_time": pytest.approx(jfk_lax["air_time"].mean()),
            "distance": 2475.0,
        }
    ]
    # weather_readings, streamed a measure at a time: every present value, once.
    weather = nycflights13("weather")
    readings = db.fetch(
        "SELECT measure, count(*) AS n, sum(value) AS total FROM nycflights.weather_readings "
        "GROUP BY measure ORDER BY measure"
    )
    assert {r["measure"]: r["n"] for r in readings} == {
        m: int(weather[m].notna().sum()) for m in sorted(MEASURES)
    }
    assert readings[0]["total"] == pytest.approx(weather[readings[0]["measure"]].sum())

    second = _materialize_everything()
    for table, sums in second.items():
        assert (sums["inserted"], sums["updated"]) == (0, 0), table
        assert sums["unchanged"] > 0


def test_schedules_request_the_expected_runs() -> None:
    flights_schedule = defs.resolve_schedule_def("flights_monthly_schedule")
    tick = datetime(2013, 3, 1, 6, 0, tzinfo=NEW_YORK)
    with build_schedule_context(scheduled_execution_time=tick) as context:
        requests = flights_schedule.evaluate_tick(context).run_requests
    assert requests is not None and [r.partition_key for r in requests] == ["2013-02-01"]
    assert flights_schedule.job_name == "flights_monthly"

    dimensions_schedule = defs.resolve_schedule_def("dimensions_schedule")
    assert dimensions_schedule.cron_schedule == "0 5 * * *"
    with build_schedule_context(scheduled_execution_time=tick) as context:
        requests = dimensions_schedule.evaluate_tick(context).run_requests
    assert requests is not None and len(requests) == 1
    assert dimensions_schedule.job_name == "dimensions"
