"""Materialize every example asset and print what each write did: ``python -m pipelines``."""

from __future__ import annotations

import sys

from .definitions import defs


def main() -> int:
    job = defs.resolve_implicit_global_asset_job_def()
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = job.execute_in_process(run_config=quiet, raise_on_error=False)
    print(
        f"\n{'table':<32}{'rows':>10}{'inserted':>10}{'updated':>10}{'unchanged':>11}{'deleted':>9}"
    )
    for event in result.get_asset_materialization_events():
        meta = {key: value.value for key, value in event.materialization.metadata.items()}
        print(
            f"{meta['dagster/table_name']!s:<32}{meta['dagster/row_count']:>10}"
            f"{meta['rows_inserted']:>10}{meta['rows_updated']:>10}"
            f"{meta['rows_unchanged']:>11}{meta['rows_deleted']:>9}"
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
