"""The example pipeline plus a schedule that fires every minute, so that the end-to-end
tests can watch the daemon launch a run on its own."""

from __future__ import annotations

import pandas as pd
from dagster import (
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    asset,
    define_asset_job,
)

from pipelines import definitions
from resources import PostgresResource, PostgresUpsertIOManager
from tests.data import TABLE, frame

every_minute = ScheduleDefinition(
    name="every_minute",
    job=definitions.dimensions_job,
    cron_schedule="* * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
)

defs = Definitions.merge(definitions.defs, Definitions(schedules=[every_minute]))

# A write that takes several seconds (2M rows, each one changed), by sessions of their own
# application_name: tests/test_interrupts.py terminates its runs mid-write.
INTERRUPTED_APPLICATION = "copy-upsert-e2e-interrupted"
INTERRUPTED_ROWS = 2_000_000


@asset(
    key=["interrupts", TABLE],
    metadata={"conflict_target": ["id"]},
    io_manager_key="interrupted_io_manager",
)
def interrupted_bench() -> pd.DataFrame:
    return frame(INTERRUPTED_ROWS, seed=2)


interrupted_job = define_asset_job("interrupted_bench_job", selection=[interrupted_bench])
interrupted_postgres = PostgresResource(application_name=INTERRUPTED_APPLICATION)
defs = Definitions.merge(
    defs,
    Definitions(
        assets=[interrupted_bench],
        jobs=[interrupted_job],
        resources={
            "interrupted_io_manager": PostgresUpsertIOManager(postgres=interrupted_postgres)
        },
    ),
)
