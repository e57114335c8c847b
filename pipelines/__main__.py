"""The main job: materialize every asset (each month of flights included) and print what
the writes did, per table. ``python -m pipelines``; runs land in $DAGSTER_HOME when set."""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Iterator

from dagster import DagsterInstance, ExecuteInProcessResult

from .assets import MONTHS
from .definitions import defs

COUNTS = ("rows_inserted", "rows_updated", "rows_unchanged", "rows_deleted")
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def runs(instance: DagsterInstance) -> Iterator[ExecuteInProcessResult]:
    yield defs.resolve_job_def("dimensions").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    flights_job = defs.resolve_job_def("flights_monthly")
    for month in MONTHS.get_partition_keys():
        yield flights_job.execute_in_process(
            instance=instance, partition_key=month, run_config=QUIET, raise_on_error=False
        )


def main() -> int:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    # dagster/row_count is left out when counting would scan a large table (see the README).
    rows: dict[str, str] = {}
    failed = 0
    with (
        DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else DagsterInstance.ephemeral() as instance
    ):
        for result in runs(instance):
            failed += not result.success
            for event in result.get_asset_materialization_events():
                meta = {k: v.value for k, v in event.materialization.metadata.items()}
                table = str(meta["dagster/table_name"])
                rows[table] = str(meta.get("dagster/row_count", "?"))
                for count in COUNTS:
                    totals[table][count] += int(meta[count])  # type: ignore[arg-type]
    print(
        f"\n{'table':<34}{'rows':>9}{'inserted':>10}{'updated':>9}{'unchanged':>11}{'deleted':>9}"
    )
    for table, counts in sorted(totals.items()):
        print(
            f"{table:<34}{rows[table]:>9}"
            + "".join(f"{counts[c]:>{w}}" for c, w in zip(COUNTS, (10, 9, 11, 9), strict=True))
        )
    if "?" in rows.values():
        print("(?: not counted, the count would scan a large table; see exact_row_count)")
    if failed:
        print(f"\n{failed} run(s) failed: see the log above", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
