"""End to end: the real Dagster webserver and daemon (`dagster dev`), the GraphQL API, the
daemon's scheduler, and the UI in headless Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClient

from .conftest import Database, new_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "tests.e2e_defs"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@dataclass
class DagsterDev:
    url: str
    port: int
    home: Path
    database: Database
    log: Path

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def graphql(self, query: str) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query}, timeout=30)
        response.raise_for_status()
        return response.json()["data"]  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(1)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def dagster_dev(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    home = tmp_path_factory.mktemp("dagster_home")
    workspace = home / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_module:\n      module_name: {LOCATION}\n"
        f"      working_directory: {ROOT}\n"
    )
    port = _free_port()
    log = home / "dagster-dev.log"
    with new_database(server_url) as database_url:
        env = {**os.environ, "DAGSTER_HOME": str(home), "DATABASE_URL": database_url}
        with log.open("wb") as out:
            # Its own process group: webserver, daemon and code server are killed together.
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dagster",
                    "dev",
                    "-w",
                    str(workspace),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            dev = DagsterDev(f"http://127.0.0.1:{port}", port, home, Database(database_url), log)
            try:
                wait_for("the code location to load", lambda: _location_loaded(dev), 180, log)
                yield dev
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _location_loaded(dev: DagsterDev) -> bool:
    data = dev.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    for entry in data["workspaceOrError"]["locationEntries"]:
        if entry["name"] != LOCATION or entry["loadStatus"] != "LOADED":
            continue
        loaded = entry["locationOrLoadError"]
        if loaded["__typename"] == "PythonError":
            raise AssertionError(f"code location {LOCATION} failed to load: {loaded['message']}")
        return True
    return False


def _wait_for_run(dev: DagsterDev, run_id: str, timeout: float = 240) -> DagsterRunStatus:
    with dev.instance() as instance:

        def finished() -> DagsterRunStatus | None:
            run = instance.get_run_by_id(run_id)
            done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
            return run.status if run and run.status in done else None

        return wait_for(f"run {run_id}", finished, timeout, dev.log)  # type: ignore[no-any-return]


def test_graphql_client_launches_a_run_that_fills_the_tables(dagster_dev: DagsterDev) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev.port)
    run_id = client.submit_job_execution(
        "dimensions", repository_location_name=LOCATION, repository_name="__repository__"
    )
    assert _wait_for_run(dagster_dev, run_id) == DagsterRunStatus.SUCCESS
    assert client.get_run_status(run_id) == DagsterRunStatus.SUCCESS
    counts = dagster_dev.database.fetch(
        "SELECT (SELECT count(*) FROM nycflights.airlines) AS airlines, "
        "(SELECT count(*) FROM nycflights.weather) AS weather"
    )
    assert counts == [{"airlines": 16, "weather": 26112}]


def test_daemon_fires_the_schedule_on_its_own(dagster_dev: DagsterDev) -> None:
    with dagster_dev.instance() as instance:

        def scheduled_success() -> bool:
            runs = instance.get_runs(
                filters=RunsFilter(tags={"dagster/schedule_name": "every_minute"})
            )
            return any(run.status == DagsterRunStatus.SUCCESS for run in runs)

        # The first tick comes at the next minute boundary; the run then takes a few seconds.
        assert wait_for("a scheduled run to succeed", scheduled_success, 240, dagster_dev.log)


def test_ui_materialize_all_in_headless_chromium(dagster_dev: DagsterDev) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with dagster_dev.instance() as instance:
        before = {run.run_id for run in instance.get_runs()}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/dimensions")
            materialize_all = page.get_by_role("button", name="Materialize all")
            materialize_all.wait_for()
            # The UI may open a dialog over the page on a first visit (an announcement), also
            # while the click is on its way: close whatever overlay is open, as a person
            # would, and click again.
            backdrop = page.locator(".bp5-overlay-backdrop")
            for _ in range(10):
                if backdrop.count():
                    page.screenshot(path=str(ARTIFACTS / "ui-dialog-closed.png"))
                    page.keyboard.press("Escape")
                    page.wait_for_timeout(500)
                    continue
                try:
                    materialize_all.click(timeout=5_000)
                    break
                except PlaywrightTimeoutError:
                    continue
            else:
                # A dialog that Escape does not close: press the button itself.
                materialize_all.dispatch_event("click")

            with dagster_dev.instance() as instance:

                def launched() -> str | None:
                    runs = instance.get_runs(filters=RunsFilter(job_name="__ASSET_JOB"))
                    new = [r.run_id for r in runs if r.run_id not in before]
                    return new[0] if new else None

                run_id = wait_for("the UI to launch a run", launched, 60, dagster_dev.log)
            assert _wait_for_run(dagster_dev, run_id) == DagsterRunStatus.SUCCESS

            page.goto(f"{dagster_dev.url}/runs/{run_id}")
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "ui-materialize-all.png"), full_page=True)
        finally:
            browser.close()
    assert dagster_dev.database.fetch("SELECT count(*) AS n FROM nycflights.planes") == [
        {"n": 3322}
    ]
