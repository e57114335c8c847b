"""A process that materializes one large asset with the package's IO manager, to be
interrupted mid-write by a signal from test_interrupts.py.

python -m tests.interrupted_run URL APPLICATION_NAME ROWS SEED

Prints one JSON line each time ``materialize`` returns (whether the run succeeded, the class
of the step's error), then waits on stdin: a line "again" materializes the asset once more in
the same process, end of input ends it. So the process outlives the interrupted run while the
test looks at the server.
"""

from __future__ import annotations

import json
import sys

from dagster import AssetKey, asset, materialize

from resources import PostgresResource, PostgresUpsertIOManager
from tests.data import TABLE, frame


def main(url: str, application_name: str, rows: int, seed: int) -> None:
    # Built before the run starts, so that the run's time is the write's.
    data = frame(rows, seed=seed)

    @asset(key=AssetKey(["public", TABLE]), metadata={"conflict_target": ["id"]})
    def bench() -> object:
        return data

    postgres = PostgresResource(url=url, application_name=application_name)
    while True:
        result = materialize(
            [bench],
            resources={"io_manager": PostgresUpsertIOManager(postgres=postgres)},
            raise_on_error=False,
        )
        failures = result.get_step_failure_events()
        error = failures[0].step_failure_data.error if failures else None
        report = {"success": result.success, "error": error.cls_name if error else None}
        print(json.dumps(report), flush=True)
        if sys.stdin.readline().strip() != "again":
            return


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
