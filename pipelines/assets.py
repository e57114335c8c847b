"""Assets over nycflights13: every flight that left New York City in 2013, with its
airlines, airports, planes and hourly weather, written by the COPY-upsert IO manager into
the ``nycflights`` schema. Most are pandas; ``route_stats`` is polars (reading a table a
pandas asset wrote), and ``weather_readings`` streams its output in chunks."""

from collections.abc import Iterator
from typing import Any

import pandas as pd
import polars as pl
from dagster import AssetExecutionContext, AssetIn, MonthlyPartitionsDefinition, Output, asset

from .data import nycflights13

# The data set's dates and hours are New York local time, so its months are too.
MONTHS = MonthlyPartitionsDefinition(
    start_date="2013-01-01", end_date="2014-01-01", timezone="America/New_York"
)
# Bounds how many steps write to PostgreSQL at once (see dagster.yaml and the README).
POOL = "nycflights_postgres"
PREFIX = ["nycflights"]
# Shown on each asset in the UI: where it lives and which library makes it.
PANDAS = {"postgres", "pandas"}
POLARS = {"postgres", "polars"}
# The hourly measures of the weather table, streamed one at a time by weather_readings.
MEASURES = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True)


@asset(
    key_prefix=PREFIX,
    group_name="dimensions",
    pool=POOL,
    kinds=PANDAS,
    metadata={"conflict_target": ["carrier"]},
)
def airlines() -> pd.DataFrame:
    """Airline names by carrier code."""
    return nycflights13("airlines")


@asset(
    key_prefix=PREFIX,
    group_name="dimensions",
    pool=POOL,
    kinds=PANDAS,
    metadata={"conflict_target": ["faa"]},
)
def airports() -> pd.DataFrame:
    """Airports by FAA code, with their location and time zone."""
    return nycflights13("airports")


@asset(
    key_prefix=PREFIX,
    group_name="dimensions",
    pool=POOL,
    kinds=PANDAS,
    metadata={"conflict_target": ["tailnum"]},
)
def planes() -> pd.DataFrame:
    """Planes by tail number. ``year`` (of manufacture) is missing for some: kept as a
    nullable integer."""
    return nycflights13("planes").astype({"year": "Int64"})


@asset(
    key_prefix=PREFIX,
    group_name="dimensions",
    pool=POOL,
    kinds=PANDAS,
    metadata={
        "conflict_target": ["origin", "year", "month", "day", "hour"],
        # 01:00 on 2013-11-03 happens twice in New York (the end of daylight saving time):
        # the data has both readings under the same local key. Keep the first (EDT) one.
        "duplicates": "keep_first",
    },
)
def weather() -> pd.DataFrame:
    """Hourly weather at the three NYC airports, keyed by airport and local date and hour."""
    frame = nycflights13("weather")
    return frame.assign(time_hour=_utc(frame["time_hour"]))


@asset(
    key_prefix=PREFIX,
    group_name="flights",
    partitions_def=MONTHS,
    pool=POOL,
    kinds=PANDAS,
    metadata={
        "conflict_target": ["carrier", "flight", "origin", "sched_dep_at"],
        "partition_expr": "sched_dep_at",
        # A child table per month: a month's write and read touch only its own.
        "partitioning": "native",
    },
)
def flights(context: AssetExecutionContext) -> pd.DataFrame:
    """The month's departures, with ``sched_dep_at``: the scheduled departure as a
    ``timestamptz`` (the UTC hour the data set gives, plus the scheduled minute)."""
    window = context.partition_time_window
    frame = nycflights13("flights")
    in_month = (frame["year"] == window.start.year) & (frame["month"] == window.start.month)
    month: pd.DataFrame = frame.loc[in_month]
    time_hour = _utc(month["time_hour"])
    return month.assign(
        time_hour=time_hour,
        sched_dep_at=time_hour + pd.to_timedelta(month["minute"], unit="min"),
    )


@asset(
    key_prefix=PREFIX,
    group_name="flights",
    partitions_def=MONTHS,
    pool=POOL,
    kinds=PANDAS,
    ins={
        "flights": AssetIn(
            key_prefix=PREFIX,
            metadata={"columns": ["carrier", "origin", "dep_delay", "arr_delay"]},
        ),
        "airlines": AssetIn(key_prefix=PREFIX),
    },
    metadata={
        "conflict_target": ["month", "carrier", "origin"],
        "partition_expr": "month",
        "write_mode": "replace",
    },
)
def monthly_delays(
    context: AssetExecutionContext, flights: pd.DataFrame, airlines: pd.DataFrame
) -> pd.DataFrame:
    """Departure and arrival delays per month, carrier and NYC airport. Reads only the
    month's flights, and only the four columns it needs."""
    delays = (
        flights.assign(late=flights["dep_delay"] > 15, cancelled=flights["dep_delay"].isna())
        .groupby(["carrier", "origin"], as_index=False)
        .agg(
            flights=("origin", "size"),
            cancelled=("cancelled", "sum"),
            late_departures=("late", "sum"),
            mean_dep_delay=("dep_delay", "mean"),
            mean_arr_delay=("arr_delay", "mean"),
        )
    )
    named = delays.merge(airlines.rename(columns={"name": "airline"}), on="carrier", how="left")
    return named.assign(month=context.partition_time_window.start).astype(
        {"flights": "int64", "cancelled": "int64", "late_departures": "int64"}
    )


@asset(
    key_prefix=PREFIX,
    group_name="dimensions",
    pool=POOL,
    kinds=PANDAS,
    metadata={"conflict_target": ["origin", "time_hour", "measure"]},
)
def weather_readings() -> Output[Any]:
    """The weather as one row per airport, hour and measure, written as a stream of one
    chunk per measure: the long table is never whole in memory. (A generator goes in an
    ``Output``: Dagster reads a bare generator returned by an asset as its events, and takes
    no ``Iterator[...]`` as an output type.)"""
    weather = nycflights13("weather")
    weather = weather.assign(time_hour=_utc(weather["time_hour"]))

    def by_measure() -> Iterator[pd.DataFrame]:
        for measure in MEASURES:
            readings = weather[["origin", "time_hour", measure]].dropna(subset=[measure])
            yield readings.rename(columns={measure: "value"}).assign(measure=measure)

    return Output(by_measure())


@asset(
    key_prefix=PREFIX,
    group_name="flights",
    partitions_def=MONTHS,
    pool=POOL,
    kinds=POLARS,
    ins={
        "flights": AssetIn(
            key_prefix=PREFIX, metadata={"columns": ["origin", "dest", "air_time", "distance"]}
        )
    },
    metadata={
        "conflict_target": ["month", "origin", "dest"],
        "partition_expr": "month",
        "write_mode": "replace",
    },
)
def route_stats(context: AssetExecutionContext, flights: pl.DataFrame) -> pl.DataFrame:
    """Flights and mean air time per month and route, in polars: the month's flights (which
    a pandas asset wrote) are read straight into polars, and the result is written from it."""
    return (
        flights.group_by("origin", "dest")
        .agg(
            flights=pl.len().cast(pl.Int32),
            mean_air_time=pl.col("air_time").mean(),
            distance=pl.col("distance").first(),
        )
        .with_columns(month=pl.lit(context.partition_time_window.start))
    )
