"""A step that reads its input as a pyarrow.RecordBatchReader, returns a generator over it,
and fails before the generator is read: the reader is never read nor freed (the failure's
traceback holds it). The process must still end. Run by test_streams.py.

python -m tests.abandoned_reader URL
"""

from __future__ import annotations

import os
import sys
from typing import Any

import polars as pl
import pyarrow as pa
from dagster import DagsterInstance, EnvVar, Output, asset, materialize

from resources import PostgresResource, PostgresUpsertIOManager

ROWS = 300_000


@asset(metadata={"conflict_target": "id"})
def source() -> pl.DataFrame:
    return pl.DataFrame({"id": range(ROWS), "v": [f"value-{i}" for i in range(ROWS)]})


# Its table is the source's, which another asset owns: refused once planned, before a row
# of the reader is read.
@asset(metadata={"conflict_target": "id", "table": "source"})
def copied(source: pa.RecordBatchReader) -> Output[Any]:
    return Output(batch for batch in source)


if __name__ == "__main__":
    os.environ["ABANDONED_READER_URL"] = sys.argv[1]
    # Configured as a project does it: Dagster builds the resource for each run and tears it
    # down after, which cancels the read the reader left waiting.
    postgres = PostgresResource(url=EnvVar("ABANDONED_READER_URL"))
    resources = {"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)}
    instance = DagsterInstance.ephemeral()
    assert materialize([source], instance=instance, resources=resources).success
    result = materialize(
        [source.to_source_asset(), copied],
        selection=[copied],
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    print("succeeded" if result.success else "failed", flush=True)
