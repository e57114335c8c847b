"""Definitions run by test_resource.py with the multiprocess executor (each step its own
process, with its own event loop). The database comes from DATABASE_URL."""

from __future__ import annotations

import pandas as pd
from dagster import Definitions, JobDefinition, asset, define_asset_job
from sqlalchemy import text

from resources import PostgresResource, PostgresUpsertIOManager

postgres = PostgresResource()


@asset(key_prefix=["mp"], metadata={"conflict_target": "id"})
def left() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3], "a": ["x", "y", "z"]})


@asset(key_prefix=["mp"], metadata={"conflict_target": "id"})
async def right(postgres: PostgresResource) -> pd.DataFrame:
    async with postgres.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return pd.DataFrame({"id": [1, 2, 3], "b": [pid > 0] * 3})


@asset(key_prefix=["mp"], metadata={"conflict_target": "id"})
def joined(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    return left.merge(right, on="id")


defs = Definitions(
    assets=[left, right, joined],
    resources={"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)},
    jobs=[define_asset_job("everything")],
)


def everything() -> JobDefinition:
    return defs.resolve_job_def("everything")
