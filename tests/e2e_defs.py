"""The example pipeline plus a schedule that fires every minute, so that the end-to-end
tests can watch the daemon launch a run on its own."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, Definitions, ScheduleDefinition

from pipelines import definitions

every_minute = ScheduleDefinition(
    name="every_minute",
    job=definitions.dimensions_job,
    cron_schedule="* * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
)

defs = Definitions.merge(definitions.defs, Definitions(schedules=[every_minute]))
