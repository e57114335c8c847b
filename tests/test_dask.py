"""The example's backfill on a distributed engine that reuses its worker processes:
dagster-dask's executor on a ``LocalCluster`` of two single-threaded workers.

Every step of every run goes to one of the same two processes, which set up and tear down
the IO manager's resource (its loop thread and pool) once per step. After the runs the
tables hold exactly the rows the example derives from the source data, the connections
open at once never exceeded (pool_size + max_overflow) x the workers, and each worker, after
30 or more steps, holds no engine, event loop, thread or connection of the package's (its
garbage collector is off meanwhile: what a teardown leaves open stays open, and is found)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import dask._task_spec as task_spec
import distributed.client
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, execute_job, reconstructable
from dagster._core.storage.dagster_run import DagsterRun
from distributed import Client, LocalCluster

from pipelines.assets import MEASURES, MONTHS
from pipelines.data import nycflights13
from resources import PostgresResource

from . import dask_defs
from .conftest import Database

pytestmark = pytest.mark.slow

WORKERS = 2
STEPS_PER_WORKER = 30
# Rounds of the twelve-month backfill: the first writes, the others change nothing. More
# rounds run (up to MAX_ROUNDS) until each worker has run STEPS_PER_WORKER steps.
MIN_ROUNDS, MAX_ROUNDS = 2, 4
NEW_YORK = "America/New_York"


class SessionCounter:
    """Polls pg_stat_activity from a thread of its own: the most connections open to the
    database at once (other than its own; a parallel query's workers are no connections)."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        self.url, self.every = url, every
        self.peak, self.samples = 0, 0
        self.at_peak: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)
        self._error: BaseException | None = None

    async def _poll(self) -> None:
        try:
            conn = await asyncpg.connect(self.url)
            try:
                while not self._stop.is_set():
                    rows = await conn.fetch(
                        "SELECT application_name, state, backend_start, left(query, 60) AS q "
                        "FROM pg_stat_activity WHERE datname = current_database() "
                        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    )
                    self.samples += 1
                    if len(rows) > self.peak:
                        self.peak = len(rows)
                        self.at_peak = [
                            f"{r['application_name']} since {r['backend_start']:%T.%f}, "
                            f"{r['state']}: {r['q']}"
                            for r in rows
                        ]
                    await asyncio.sleep(self.every)
            finally:
                await conn.close()
        except BaseException as exc:
            self._error = exc

    def __enter__(self) -> SessionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error


@pytest.fixture(autouse=True)
def _dask_leaves_dagster_runs_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """dagster-dask 0.29.27 hands the DagsterRun to ``Client.submit``, which since dask
    2024.12 walks every tuple among a task's arguments (``dask._task_spec.parse_input``) in
    search of futures. A DagsterRun is a NamedTuple, and the example's runs hold ``@record``s
    that refuse iteration: the run's pools (``RunOpConcurrency``, every asset has
    ``pool=``) and its partitions (``TimeWindowPartitionsSubset``). Every run then fails
    in the executor, before its first step. Here (the orchestrating process, where the
    executor submits) a DagsterRun is passed on whole, as it was before dask 2024.12."""
    original = task_spec.parse_input

    def parse_input(obj: object) -> object:
        return obj if isinstance(obj, DagsterRun) else original(obj)

    # parse_input calls itself by its module's name; distributed.client imported it.
    monkeypatch.setattr(task_spec, "parse_input", parse_input)
    monkeypatch.setattr(distributed.client, "parse_input", parse_input)


@pytest.fixture
def client(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    # The workers are spawned now and read the database from their environment.
    monkeypatch.setenv("DATABASE_URL", database_url)
    cluster = LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _failures(events: list[DagsterEvent]) -> str:
    """The errors of a failed run's failure events, for the assertion's message."""
    errors = []
    for event in events:
        error = getattr(event.event_specific_data, "error", None)
        if event.is_failure and error is not None:
            errors.append(f"{event.step_key or event.job_name}: {error.to_string()}")
    return "\n".join(errors)


def _step_pids(instance: DagsterInstance) -> Counter[int]:
    """How many steps succeeded in each process, over every run."""
    pids: Counter[int] = Counter()
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS):
            assert record.dagster_event is not None
            pids[record.dagster_event.pid] += 1
    return pids


def test_backfill_on_dask_workers_that_run_many_steps_each(
    client: Client, database_url: str, db: Database, tmp_path: Path
) -> None:
    started = time.monotonic()
    # Start each worker's task thread (dask makes it on the first task), then note what
    # each worker holds before its first step.
    addresses = list(client.scheduler_info()["workers"])
    assert len(addresses) == WORKERS
    client.gather(
        [client.submit(os.getpid, workers=[a], pure=False, key=f"warm-{a}") for a in addresses]
    )
    pids = client.run(dask_defs.record_baseline)

    run_config = {
        "execution": {
            "config": {"cluster": {"existing": {"address": client.cluster.scheduler_address}}}
        }
    }

    def run(job: object, **tags: str) -> list[dict[str, object]]:
        """Run the job; the output metadata of each table it wrote."""
        with execute_job(
            reconstructable(job), instance=instance, run_config=run_config, tags=tags
        ) as result:
            assert result.success, _failures(result.all_events)
            return [
                {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()
            ]

    rounds = 0
    with (
        DagsterInstance.local_temp(str(tmp_path)) as instance,
        SessionCounter(database_url) as sessions,
    ):
        assert len(run(dask_defs.dimensions)) == 5
        while rounds < MIN_ROUNDS or (
            rounds < MAX_ROUNDS
            and min(_step_pids(instance)[p] for p in pids.values()) < STEPS_PER_WORKER
        ):
            for month in MONTHS.get_partition_keys():
                written = run(dask_defs.flights_monthly, **{"dagster/partition": month})
                assert len(written) == 3
                if rounds:  # the months are in the tables already: nothing changes
                    for meta in written:
                        assert (meta["rows_inserted"], meta["rows_updated"]) == (0, 0), meta
                        assert meta["rows_unchanged"] > 0, meta
            rounds += 1
        steps = _step_pids(instance)
    elapsed = time.monotonic() - started

    # Asked before the workers collect their garbage (which would close the socket of a
    # connection that a teardown left open): the sessions still open, and what each worker
    # process holds.
    open_sessions = _sessions_after_close(db)
    left = client.run(dask_defs.left_behind)
    resource = PostgresResource()
    bound = (resource.pool_size + resource.max_overflow) * WORKERS
    print(
        f"\n{rounds} backfill rounds, steps per worker {dict(steps)}, at most {sessions.peak} "
        f"sessions at once (bound {bound}; {sessions.samples} samples), {elapsed:.0f} s"
    )

    # Every step ran in one of the two worker processes, each of which ran enough of them.
    assert client.run(os.getpid) == pids
    assert set(steps) == set(pids.values())
    assert all(steps[pid] >= STEPS_PER_WORKER for pid in pids.values()), steps
    assert sum(steps.values()) == 5 + 3 * 12 * rounds

    # A worker process holds one pool at a time, of pool_size + max_overflow connections.
    assert sessions.samples > 100
    assert 1 <= sessions.peak <= bound, sessions.at_peak
    # Each step's teardown closed everything of the package's: nothing is left open on the
    # server, and nothing in the worker (reachable or not).
    assert open_sessions == 0
    for address, found in left.items():
        assert found == {
            "pid": pids[address],
            "open connections": [],
            "pools holding connections": [],
            "event loops": [],
            "threads": [],
            "runtimes": 0,
            "engines": [],
        }

    _check_tables(db)


def _sessions_after_close(db: Database, wait: float = 2.0) -> int:
    """Sessions open on the database once those just closed have ended (a backend leaves
    pg_stat_activity a moment after its client closes the connection)."""
    deadline = time.monotonic() + wait
    while True:
        n = db.fetch(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )[0]["n"]
        if n == 0 or time.monotonic() > deadline:
            return int(n)
        time.sleep(0.05)


def _check_tables(db: Database) -> None:
    """Every table holds exactly the rows the example derives from the source data."""
    flights = nycflights13("flights")
    time_hour = pd.to_datetime(flights["time_hour"], utc=True)
    flights = flights.assign(
        time_hour=time_hour,
        sched_dep_at=time_hour + pd.to_timedelta(flights["minute"], unit="min"),
    )
    _same(db, "flights", flights, ["carrier", "flight", "origin", "sched_dep_at"])

    airlines = nycflights13("airlines")
    _same(db, "airlines", airlines, ["carrier"])
    _same(db, "airports", nycflights13("airports"), ["faa"])
    _same(db, "planes", nycflights13("planes"), ["tailnum"])
    weather = nycflights13("weather")
    weather = weather.assign(time_hour=pd.to_datetime(weather["time_hour"], utc=True))
    key = ["origin", "year", "month", "day", "hour"]
    _same(db, "weather", weather.drop_duplicates(key, keep="first"), key)
    readings = pd.concat(
        weather[["origin", "time_hour", m]]
        .dropna(subset=[m])
        .rename(columns={m: "value"})
        .assign(measure=m)
        for m in MEASURES
    )
    _same(db, "weather_readings", readings, ["origin", "time_hour", "measure"])

    # The partitions are New York months, as are the data set's year and month.
    month_start = pd.to_datetime(flights[["year", "month"]].assign(day=1)).dt.tz_localize(NEW_YORK)
    flights = flights.assign(month_start=month_start)
    delays = (
        flights.assign(late=flights["dep_delay"] > 15, cancelled=flights["dep_delay"].isna())
        .groupby(["month_start", "carrier", "origin"], as_index=False)
        .agg(
            flights=("origin", "size"),
            cancelled=("cancelled", "sum"),
            late_departures=("late", "sum"),
            mean_dep_delay=("dep_delay", "mean"),
            mean_arr_delay=("arr_delay", "mean"),
        )
        .merge(airlines.rename(columns={"name": "airline"}), on="carrier", how="left")
        .rename(columns={"month_start": "month"})
    )
    _same(db, "monthly_delays", delays, ["month", "carrier", "origin"])

    # A route's distance is the same for all of a month's flights (route_stats takes the
    # first).
    routes = flights.groupby(["month_start", "origin", "dest"], as_index=False).agg(
        flights=("origin", "size"),
        mean_air_time=("air_time", "mean"),
        distance=("distance", "first"),
    )
    _same(
        db,
        "route_stats",
        routes.rename(columns={"month_start": "month"}),
        ["month", "origin", "dest"],
    )


def _same(db: Database, table: str, expected: pd.DataFrame, key: list[str]) -> None:
    """Assert that the table holds exactly the expected rows: matched by key, every column
    equal (floats to 1e-9)."""
    stored = pd.DataFrame(db.fetch(f'SELECT * FROM nycflights."{table}"'))
    assert sorted(stored.columns) == sorted(expected.columns), table
    assert len(stored) == len(expected), table
    stored = _normal(stored, expected).sort_values(key, ignore_index=True)
    expected = _normal(expected, expected).sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(
        stored[expected.columns], expected, check_dtype=False, rtol=1e-9, obj=table
    )


def _normal(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """Comparable columns: timestamps in UTC, numbers as float64 (NaN for NULL), the rest as
    Python objects (None for NULL)."""
    out = frame.copy()
    for name in like.columns:
        column, model = out[name], like[name]
        if isinstance(model.dtype, pd.DatetimeTZDtype):
            out[name] = pd.to_datetime(column, utc=True)
        elif pd.api.types.is_numeric_dtype(model.dtype) and not pd.api.types.is_bool_dtype(
            model.dtype
        ):
            out[name] = pd.to_numeric(column).astype(np.float64)
        else:
            out[name] = column.astype(object).where(column.notna(), None)
    return out
