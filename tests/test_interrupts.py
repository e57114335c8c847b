"""Interrupted writes change nothing (issue 12).

A real process materializing a 2M-row asset gets SIGINT or SIGTERM, sent by pid, while its
write is mid-COPY and mid-merge; the resource is disposed of while another thread's write
runs; a run of the real ``dagster dev`` is terminated through GraphQL mid-write. Each test
compares the table before and after and waits (bounded) until no session of the writer is
idle in a transaction or holds a lock; the signal and GraphQL tests then write again.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from resources import PostgresResource, WriteResult, copy_upsert

from . import test_e2e
from .conftest import Database
from .data import DDL, PLAN, TABLE, frame
from .e2e_defs import INTERRUPTED_APPLICATION, INTERRUPTED_ROWS
from .test_e2e import LOCATION, DagsterDev, _wait_for_run

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = "copy-upsert-interrupted"
ROWS = 2_000_000
# The real webserver and daemon of test_e2e.py (one more instance, for this module).
dagster_dev = test_e2e.dagster_dev
# What pg_stat_activity shows while the write is in each phase.
PHASES = {"copy": ["COPY %"], "merge": ["WITH written AS (%", "MERGE %", "INSERT %"]}
LEFT_BEHIND = (
    "SELECT a.pid, a.state, left(a.query, 60) AS query, "
    "(SELECT count(*) FROM pg_locks AS l WHERE l.pid = a.pid) AS locks "
    "FROM pg_stat_activity AS a WHERE a.application_name = $1 "
    "AND (a.state LIKE 'idle in transaction%' OR EXISTS (SELECT FROM pg_locks AS l "
    "WHERE l.pid = a.pid))"
)


def seed(db: Database, schema: str, rows: int) -> tuple[int, str] | None:
    """A table of ``rows`` rows whose keys are those of ``frame(rows)``, every other value
    different: the write that follows updates every row. Returns its snapshot."""
    db.execute(
        f"CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path = {schema}; "
        f"DROP TABLE IF EXISTS {TABLE}; {DDL}; "
        f"INSERT INTO {TABLE} SELECT g, g * 7, g / 3.0, 'seed-' || g, "
        "timestamptz '2024-01-01' + g * interval '1 second', g % 2 = 0, nullif(g % 10, 0) "
        f"FROM generate_series(0, {rows - 1}) AS g"
    )
    return db.snapshot(f"{schema}.{TABLE}")


def wait_for_phase(
    db: Database, application: str, phase: str, alive: Callable[[], bool], timeout: float
) -> None:
    """Wait until a session of ``application`` runs the ``phase`` of its write."""
    query = (
        "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' "
        "AND query LIKE ANY($2::text[])"
    )
    deadline = time.monotonic() + timeout
    checked = 0.0
    while not db.fetch(query, application, PHASES[phase]):
        assert time.monotonic() < deadline, f"the {phase} was never seen running"
        if time.monotonic() - checked > 1:
            assert alive(), f"the writer ended before its {phase} was seen"
            checked = time.monotonic()
        time.sleep(0.02)


def wait_until_released(db: Database, application: str, timeout: float = 10) -> None:
    """No session of ``application`` idle in a transaction or holding a lock, within
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while left := db.fetch(LEFT_BEHIND, application):
        assert time.monotonic() < deadline, f"sessions left behind: {left}"
        time.sleep(0.1)


def assert_holds(db: Database, table: str, data: pd.DataFrame) -> None:
    """The table holds exactly ``data``'s rows: their count, the sum of a column, and
    every value of the rows with the 1,000 lowest keys."""
    row = db.fetch(f"SELECT count(*) AS n, sum(amount) AS amount FROM {table}")[0]
    assert (row["n"], int(row["amount"])) == (len(data), int(data["amount"].sum()))
    columns = ["id", "amount", "name", "active"]
    lowest = data.sort_values("id").head(1000)[columns]
    stored = db.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id LIMIT 1000")
    assert stored == lowest.to_dict("records")


class Writer:
    """``python -m tests.interrupted_run``: materializes the asset, reports, and waits to be
    told to run again (or to end)."""

    def __init__(self, url: str, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.interrupted_run", url, APPLICATION, str(ROWS), "2"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self.reader.start()

    def _read(self, stdout: IO[str]) -> None:
        with stdout:
            for line in stdout:
                self.reports.put(json.loads(line))

    def report(self, timeout: float) -> dict[str, Any]:
        try:
            return self.reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no report from the writer within {timeout:.0f} s (exit code "
                f"{self.process.poll()}):\n{self.log.read_text()[-4000:]}"
            ) from None

    def again(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("again\n")
        self.process.stdin.flush()

    def close(self) -> int:
        """End the process: politely, then by SIGKILL after a bounded wait."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)
            self.reader.join(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["copy", "merge"])
def test_signal_mid_write_changes_nothing_and_leaves_no_lock(
    phase: str, signum: signal.Signals, db: Database, database_url: str, tmp_path: Path
) -> None:
    before = seed(db, "public", ROWS)
    writer = Writer(database_url, tmp_path / "writer.log")
    try:
        wait_for_phase(db, APPLICATION, phase, lambda: writer.process.poll() is None, 180)
        writer.process.send_signal(signum)

        # Dagster's materialize() handles SIGTERM as SIGINT (dagster._utils.interrupts maps
        # one to the other while it runs): the step fails as interrupted, the process lives on.
        assert writer.report(timeout=60) == {
            "success": False,
            "error": "DagsterExecutionInterruptedError",
        }
        assert writer.process.poll() is None
        # Looked at while the writer still runs: its process ending would release anything.
        wait_until_released(db, APPLICATION)
        assert db.snapshot(TABLE) == before

        # The same process writes the asset again, and every row lands.
        writer.again()
        assert writer.report(timeout=180) == {"success": True, "error": None}
        assert_holds(db, TABLE, frame(ROWS, seed=2))
        wait_until_released(db, APPLICATION)
    finally:
        exit_code = writer.close()
    assert exit_code == 0


@pytest.mark.parametrize("phase", ["copy", "merge"])
def test_dispose_mid_write_cancels_it_and_leaves_no_lock(
    phase: str, db: Database, database_url: str
) -> None:
    """The resource's teardown while another thread's run() is still writing: the write is
    cancelled and rolled back before the engine goes, not left behind on a stopped loop."""
    rows = 1_000_000
    before = seed(db, "public", rows)
    postgres = PostgresResource(url=database_url, application_name=APPLICATION)
    changed = frame(rows, seed=2)
    outcome: list[BaseException | WriteResult] = []

    def write() -> None:
        try:
            outcome.append(
                postgres.run(
                    lambda conn: copy_upsert(conn, changed, schema="public", table=TABLE, plan=PLAN)
                )
            )
        except BaseException as exc:  # what run() raises when dispose() cancels its work
            outcome.append(exc)

    writing = threading.Thread(target=write)
    writing.start()
    try:
        wait_for_phase(db, APPLICATION, phase, writing.is_alive, 120)
        postgres.dispose()
        writing.join(timeout=30)
        assert not writing.is_alive()
    finally:
        postgres.dispose()
    assert len(outcome) == 1 and not isinstance(outcome[0], WriteResult), outcome
    wait_until_released(db, APPLICATION)
    assert db.snapshot(TABLE) == before


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["copy", "merge"])
def test_run_terminated_through_graphql_mid_write_changes_nothing(
    phase: str, dagster_dev: DagsterDev
) -> None:
    db = dagster_dev.database
    table = f"interrupts.{TABLE}"
    before = seed(db, "interrupts", INTERRUPTED_ROWS)
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev.port)

    def launch() -> str:
        return client.submit_job_execution(
            "interrupted_bench_job",
            repository_location_name=LOCATION,
            repository_name="__repository__",
        )

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    run_id = launch()
    wait_for_phase(
        db,
        INTERRUPTED_APPLICATION,
        phase,
        lambda: client.get_run_status(run_id) not in finished,
        240,
    )
    client.terminate_run(run_id)
    assert _wait_for_run(dagster_dev, run_id, timeout=120) in {
        DagsterRunStatus.CANCELED,
        DagsterRunStatus.FAILURE,
    }
    # The step process was interrupted (Dagster sends it SIGINT), not killed.
    with dagster_dev.instance() as instance:
        failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    assert [f.dagster_event.step_failure_data.error.cls_name for f in failures] == [
        "DagsterExecutionInterruptedError"
    ]
    wait_until_released(db, INTERRUPTED_APPLICATION)
    assert db.snapshot(table) == before

    run_id = launch()
    assert _wait_for_run(dagster_dev, run_id) == DagsterRunStatus.SUCCESS
    assert_holds(db, table, frame(INTERRUPTED_ROWS, seed=2))
    wait_until_released(db, INTERRUPTED_APPLICATION)
