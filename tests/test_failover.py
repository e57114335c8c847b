"""Primary failover, for real: a PostgreSQL 15 primary and a streaming standby
(tests/standby_pair.py), the resource's URL naming both with target_session_attrs=read-write.
The primary is stopped (immediate: as a crash) and the standby promoted; the next write, with
the same resource and Definitions, lands on the new primary; a write cut by the failover
leaves nothing of itself there.

Independent of the suite's test server: each test starts a pair of its own.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    Definitions,
    ExecuteInProcessResult,
    asset,
    define_asset_job,
)
from sqlalchemy.exc import DisconnectionError

import resources.resource
from resources import (
    ConnectionLostError,
    DatabaseError,
    PostgresResource,
    PostgresUpsertIOManager,
)

from .helpers import counts, failure_message, written
from .standby_pair import StandbyPair, standby_pair

__all__ = ["standby_pair"]  # the fixture, used by name

ITEMS = "shop.items"
KEYED = {"conflict_target": "id"}


@pytest.fixture
def pair(standby_pair: StandbyPair) -> StandbyPair:
    return standby_pair


def items(ids: Any, version: int) -> pd.DataFrame:
    """Rows keyed by ``id`` whose values say which ``version`` of the data wrote them."""
    ids = np.asarray(ids, dtype=np.int64)
    return pd.DataFrame(
        {
            "id": ids,
            "version": np.full(len(ids), version, dtype=np.int64),
            "amount": ids * 0.5 + version,
            "label": [f"item {i} v{version}" for i in ids],
        }
    )


def merged(*frames: pd.DataFrame) -> pd.DataFrame:
    """What upserting ``frames`` in turn leaves in the table, in key order."""
    rows = pd.concat(frames).drop_duplicates("id", keep="last")
    return rows.sort_values("id").reset_index(drop=True)


def stored(node: Any) -> pd.DataFrame:
    """The table's rows on ``node`` (a StandbyPair node), in key order."""
    rows = node.fetch(f"SELECT id, version, amount, label FROM {ITEMS} ORDER BY id")
    frame = pd.DataFrame(rows, columns=["id", "version", "amount", "label"])
    return frame.astype({"id": "int64", "version": "int64", "amount": "float64", "label": str})


def load_counts(result: ExecuteInProcessResult) -> tuple[int, int, int, int, int]:
    return counts(written(result, ("shop", "items")))


def assert_holds(node: Any, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(stored(node), expected.astype({"label": str}))


class Batches:
    """The frame the ``items`` asset returns next: set by the test between runs."""

    def __init__(self) -> None:
        self.frame = items([], 0)


def items_asset(batches: Batches, before_return: Callable[[], None] | None = None) -> Any:
    @asset(key=AssetKey(["shop", "items"]), metadata=KEYED)
    def shop_items() -> pd.DataFrame:
        if before_return is not None:
            before_return()
        return batches.frame

    return shop_items


def definitions(postgres: PostgresResource, *assets: AssetsDefinition) -> Definitions:
    return Definitions(
        assets=list(assets),
        jobs=[define_asset_job("load", selection="*")],
        resources={"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)},
    )


def load(defs: Definitions, **kwargs: Any) -> ExecuteInProcessResult:
    return defs.resolve_job_def("load").execute_in_process(**kwargs)


def failover(pair: StandbyPair, stop_mode: str = "immediate") -> float:
    """The standby has replayed everything the primary committed; the primary then stops
    (``immediate``: as a crash; ``fast``: a clean shutdown) and the standby is promoted.
    Returns the seconds the promotion took."""
    pair.wait_replayed()
    pair.stop_primary(stop_mode)
    return pair.promote_standby()


@pytest.mark.parametrize("first", ["primary", "standby"])
def test_writes_go_to_the_primary_and_replay_on_the_standby(pair: StandbyPair, first: str) -> None:
    # The standby accepts connections too (hot standby): read-write must pass it over when it
    # is named first.
    postgres = PostgresResource(url=pair.url(first=first))
    batches = Batches()
    defs = definitions(postgres, items_asset(batches))
    batches.frame = items(range(1_000), version=1)
    assert counts(written(load(defs), ("shop", "items"))) == (1_000, 1_000, 0, 0, 0)
    batches.frame = items(range(500, 1_500), version=2)
    assert counts(written(load(defs), ("shop", "items"))) == (1_000, 500, 500, 0, 0)

    expected = merged(items(range(1_000), 1), items(range(500, 1_500), 2))
    assert_holds(pair.primary, expected)
    pair.wait_replayed()
    assert pair.standby.value("SELECT pg_is_in_recovery()")
    assert_holds(pair.standby, expected)
    assert pair.standby.snapshot(ITEMS) == pair.primary.snapshot(ITEMS)


@pytest.mark.parametrize("stop_mode", ["immediate", "fast"])
def test_next_materialization_after_failover_finds_the_new_primary(
    pair: StandbyPair, stop_mode: str
) -> None:
    postgres = PostgresResource(url=pair.url())
    batches = Batches()
    defs = definitions(postgres, items_asset(batches))

    def timed_load(frame: pd.DataFrame) -> tuple[ExecuteInProcessResult, float]:
        batches.frame = frame
        started = time.monotonic()
        result = load(defs)
        return result, time.monotonic() - started

    first, second, third = (items(range(k * 500, k * 500 + 1_000), k + 1) for k in range(3))
    assert load_counts(timed_load(first)[0]) == (1_000, 1_000, 0, 0, 0)
    result, before_failover = timed_load(second)
    assert load_counts(result) == (1_000, 500, 500, 0, 0)
    assert_holds(pair.primary, merged(first, second))

    failover(pair, stop_mode)

    # The same resource object and Definitions, in the same process; no configuration change.
    result, after_failover = timed_load(third)
    assert load_counts(result) == (1_000, 500, 500, 0, 0)
    assert not pair.standby.value("SELECT pg_is_in_recovery()")
    assert_holds(pair.standby, merged(first, second, third))
    print(
        f"\n1,000-row upsert: {before_failover:.3f} s on the primary, {after_failover:.3f} s "
        "right after the failover (the first host refused, the second is the new primary)"
    )


def test_a_pooled_connection_to_the_dead_primary_is_replaced_mid_run(
    pair: StandbyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failover happens inside one run, between two assets' writes: the pool still holds
    the connection the first write used, to the primary that is now gone."""
    replaced: list[int] = []
    original = resources.resource._replace_closed_connection

    def counting(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        try:
            original(dbapi_connection, record, proxy)
        except DisconnectionError:
            replaced.append(dbapi_connection.driver_connection.get_server_pid())
            raise

    monkeypatch.setattr(resources.resource, "_replace_closed_connection", counting)
    postgres = PostgresResource(url=pair.url())
    batches = Batches()
    batches.frame = items(range(100), version=1)
    primary_pids: list[int] = []

    def fail_over_first() -> None:
        primary_pids.extend(
            row["pid"]
            for row in pair.primary.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'dagster-copy-upsert'"
            )
        )
        failover(pair)

    @asset(key=AssetKey(["shop", "orders"]), metadata=KEYED, deps=[AssetKey(["shop", "items"])])
    def orders() -> pd.DataFrame:
        fail_over_first()
        return items(range(50), version=7)

    result = load(definitions(postgres, items_asset(batches), orders))
    assert counts(written(result, ("shop", "orders"))) == (50, 50, 0, 0, 0)
    # The items' write left one idle connection in the pool; the checkout for the orders'
    # write found it closed and the pool opened a new one, on the promoted standby.
    assert len(primary_pids) == 1
    assert replaced == primary_pids
    assert_holds(pair.standby, items(range(100), version=1))
    assert pair.standby.value("SELECT count(*) FROM shop.orders") == 50


class Holder:
    """A session of its own on the primary, driven from the test, holding a row lock."""

    def __init__(self, pair: StandbyPair) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(
            pair.primary.admin_connect("warehouse")
        )

    def execute(self, sql: str) -> None:
        self.loop.run_until_complete(self.conn.execute(sql))

    def close(self) -> None:
        self.conn.terminate()  # its server may be gone
        self.loop.run_until_complete(asyncio.sleep(0))  # lets the transport finish closing
        self.loop.close()


def _writer(pair: StandbyPair, application_name: str) -> Iterator[dict[str, Any]]:
    """The writer's session on the primary, as pg_stat_activity shows it now."""
    yield from pair.primary.fetch(
        "SELECT pid, state, wait_event_type, backend_xid::text AS xid, "
        "left(query, 40) AS query FROM pg_stat_activity WHERE application_name = $1",
        application_name,
    )


def _step_error_classes(result: ExecuteInProcessResult) -> list[str | None]:
    """The class names along the cause chain of the run's first step failure."""
    error = result.get_step_failure_events()[0].step_failure_data.error
    classes: list[str | None] = []
    while error is not None:
        classes.append(error.cls_name)
        error = error.cause
    return classes


@pytest.mark.parametrize(
    ("stop_mode", "raise_on_error"),
    [("immediate", True), ("fast", False)],
    ids=["crash-raised", "fast-shutdown-reported"],
)
def test_a_write_cut_by_the_failover_leaves_nothing_partial(
    pair: StandbyPair, stop_mode: str, raise_on_error: bool
) -> None:
    """The write is held mid-merge by a real row lock that another session holds on the
    last key: by then its transaction has updated every other stored row (and inserted the
    new keys below it), and the standby has replayed those changes. The primary stops (a
    crash: immediate; a clean shutdown: fast, which ends the sessions first), the standby is
    promoted: the run fails with the package's connection error (raised, or reported as the
    step's failure), the new primary holds exactly the rows from before, and the retry
    writes them all."""
    n = 20_000
    name = "failover-writer"
    postgres = PostgresResource(url=pair.url(), application_name=name)
    batches = Batches()
    defs = definitions(postgres, items_asset(batches))
    before_rows = items(range(0, 2 * n, 2), version=1)  # the even keys
    batches.frame = before_rows
    assert load(defs).success
    before = pair.primary.snapshot(ITEMS)

    # Every stored row changes and the odd keys are new; the merge goes in key order.
    cut = items(range(2 * n), version=2)
    batches.frame = cut
    last_key = 2 * n - 2
    holder = Holder(pair)
    outcome: dict[str, Any] = {}

    def run_the_write() -> None:
        try:
            outcome["result"] = load(defs, raise_on_error=raise_on_error)
        except BaseException as exc:  # raise_on_error: the step's error itself
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run_the_write)
    try:
        holder.execute(f"BEGIN; SELECT FROM {ITEMS} WHERE id = {last_key} FOR UPDATE")
        thread.start()
        deadline = time.monotonic() + 30
        while not [s for s in _writer(pair, name) if s["wait_event_type"] == "Lock"]:
            assert thread.is_alive(), f"the write ended without waiting: {outcome}"
            assert time.monotonic() < deadline, f"the write never waited: {[*_writer(pair, name)]}"
            time.sleep(0.02)
        (session,) = _writer(pair, name)
        assert session["query"].startswith("WITH written AS (INSERT INTO")
        # Inside its transaction the write has updated every stored row but the locked one.
        in_flight = f"SELECT count(*) FROM {ITEMS} WHERE xmax::text = $1"
        assert pair.primary.value(in_flight, session["xid"]) == n - 1
        # The standby has received and replayed those changes of the open transaction.
        pair.wait_replayed()
        assert pair.standby.value(in_flight, session["xid"]) == n - 1

        stopping = time.monotonic()
        pair.stop_primary(stop_mode)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the run did not notice that its primary is gone"
        failed_after = outcome["ended"] - stopping
        promotion = pair.promote_standby()
    finally:
        holder.close()
        thread.join(timeout=30)

    if raise_on_error:
        error = outcome.get("error")
        assert isinstance(error, DatabaseError) and isinstance(error, ConnectionError), outcome
        assert isinstance(error, ConnectionLostError)
        message = str(error)
    else:
        result = outcome["result"]
        assert "ConnectionLostError" in _step_error_classes(result)
        message = failure_message(result)
    assert "Asset shop/items: lost the connection to PostgreSQL while writing shop.items" in (
        message
    )
    assert "nothing was written" in message
    assert pair.standby.snapshot(ITEMS) == before
    assert_holds(pair.standby, before_rows)

    # The retry, same Definitions, writes every row on the new primary.
    started = time.monotonic()
    retry = load(defs)
    retry_took = time.monotonic() - started
    assert counts(written(retry, ("shop", "items"))) == (2 * n, n, n, 0, 0)
    assert_holds(pair.standby, cut)
    print(
        f"\n{stop_mode} stop: the run failed {failed_after:.3f} s after the stop began; promotion "
        f"took {promotion:.3f} s; the retry {retry_took:.3f} s"
    )


def test_a_hung_old_primary_does_not_block_the_failover(pair: StandbyPair) -> None:
    """The old primary's address still accepts connections but nothing answers (a hung
    server, a proxy in front of a dead one): the next write must still reach the new
    primary."""
    failover(pair)
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", pair.primary.port))
        silent.listen(8)  # the kernel accepts; no one ever answers
        postgres = PostgresResource(url=pair.url(), connect_timeout=2)
        batches = Batches()
        batches.frame = items(range(10), version=1)
        result = load(definitions(postgres, items_asset(batches)), raise_on_error=False)
    assert result.success, failure_message(result)
    assert_holds(pair.standby, items(range(10), version=1))
