"""Behind a real PgBouncer in transaction pooling mode (tests/pgbouncer.py: Debian's 1.18,
which predates PgBouncer's prepared statement support), with ``pgbouncer=True``: concurrent
Dagster writers share four server connections, reads, a replace, a failing write and the
timeouts work; without the option the resource fails, and the ways it fails are shown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import pytest
from dagster import AssetIn, AssetKey, asset
from sqlalchemy import text
from sqlalchemy.engine import make_url

from resources import (
    DatabaseConnectionError,
    DatabaseError,
    PostgresResource,
    WritePlan,
    copy_upsert,
)

from .conftest import Database
from .helpers import failure_message, frame_asset, run_assets, written
from .pgbouncer import POOL_SIZE, PgBouncer, pgbouncer_binary, pgbouncer_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        pgbouncer_binary() is None,
        reason="pgbouncer is not installed (apt-get install pgbouncer; CI's .ci/run does)",
    ),
]

WRITERS = 16
ROUNDS = 3
SPAN = 2000  # keys per writer: writer w writes w*STEP .. w*STEP+SPAN-1
STEP = 250  # so each key is written by up to SPAN / STEP = 8 writers
KEYED = {"conflict_target": ["id"]}


@pytest.fixture(scope="module")
def bouncer(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    with pgbouncer_for(server_url, tmp_path_factory.mktemp("pgbouncer")) as running:
        yield running


@pytest.fixture
def bounced(bouncer: PgBouncer, database_url: str) -> Iterator[PostgresResource]:
    """The test database through PgBouncer, with the option on."""
    resource = PostgresResource(url=bouncer.url(database_url), pgbouncer=True)
    try:
        yield resource
    finally:
        resource.dispose()


def writer_frame(w: int, round_: int) -> pd.DataFrame:
    """Writer ``w``'s frame in ``round_``: its keys in a random order, each row's values
    derived from (writer, round, key), so that a mixed row shows."""
    keys = np.random.default_rng(w * 100 + round_).permutation(np.arange(w * STEP, w * STEP + SPAN))
    return pd.DataFrame(
        {
            "id": keys,
            "w": w,
            "r": round_,
            "v": [f"w{w}-r{round_}-k{k}" for k in keys],
            "x": (w * 1_000_000 + round_ * 10_000 + keys).astype("float64"),
        }
    )


class Watch:
    """Samples, every 20 ms while the writers run, the server's backends that serve the
    writers (straight to the server, not through PgBouncer) and, every 10th sample,
    PgBouncer's pool."""

    def __init__(self, database_url: str, bouncer: PgBouncer) -> None:
        self.database_url, self.bouncer = database_url, bouncer
        self.backends: list[int] = []
        self.waiting: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._sample()))

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        database = await conn.fetchval("SELECT current_database()")
        try:
            while not self.stop.is_set():
                self.backends.append(
                    # PgBouncer's server connections carry the application_name of the
                    # writer last linked to them (only writers use PgBouncer here); the
                    # test's own connections to the database are not counted.
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND application_name LIKE 'writer-%'"
                    )
                )
                if len(self.backends) % 10 == 0:
                    pool = [p for p in self.bouncer.show("POOLS") if p["database"] == database]
                    self.waiting.append(int(pool[0]["cl_waiting"]) if pool else 0)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_sixteen_dagster_writers_share_four_server_connections(
    bouncer: PgBouncer, database_url: str, db: Database
) -> None:
    # Each write holds its server connection 0.1 s at least (a statement trigger), so that
    # the writers' transactions overlap whatever Dagster's own overhead per run.
    db.execute(
        "CREATE SCHEMA shop; CREATE TABLE shop.shared "
        "(id bigint PRIMARY KEY, w bigint, r bigint, v text, x double precision);"
        "CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$;"
        "CREATE TRIGGER pause AFTER INSERT OR UPDATE ON shop.shared "
        "FOR EACH STATEMENT EXECUTE FUNCTION pause()"
    )
    url = bouncer.url(database_url)
    barrier = threading.Barrier(WRITERS)
    errors: list[tuple[int, BaseException]] = []

    def writer(w: int) -> None:
        postgres = PostgresResource(url=url, pgbouncer=True, application_name=f"writer-{w}")
        try:
            barrier.wait(60)
            for round_ in range(ROUNDS):
                the_asset = frame_asset(
                    writer_frame(w, round_), key=("shop", "shared"), metadata=KEYED
                )
                assert written(run_assets([the_asset], postgres), ("shop", "shared"))
        except BaseException as exc:  # reported below, with the writer's number
            errors.append((w, exc))
        finally:
            postgres.dispose()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    started = time.monotonic()
    with Watch(database_url, bouncer) as watch:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    elapsed = time.monotonic() - started
    assert not errors, errors

    # Every key once, each row one whole (writer, round) row, written for that key.
    rows = pd.DataFrame(db.fetch("SELECT id, w, r, v, x FROM shop.shared ORDER BY id"))
    keys = set().union(*(range(w * STEP, w * STEP + SPAN) for w in range(WRITERS)))
    assert len(rows) == len(keys) == (WRITERS - 1) * STEP + SPAN
    assert list(rows["id"]) == sorted(keys)
    for row in rows.itertuples():
        assert row.w * STEP <= row.id < row.w * STEP + SPAN, row
        assert 0 <= row.r < ROUNDS, row
        assert row.v == f"w{row.w}-r{row.r}-k{row.id}", row
        assert row.x == row.w * 1_000_000 + row.r * 10_000 + row.id, row

    # The writers went through POOL_SIZE server connections at most, and queued for them.
    database = make_url(database_url).database
    servers = [s for s in bouncer.show("SERVERS") if s["database"] == database]
    (stats,) = [s for s in bouncer.show("STATS") if s["database"] == database]
    print(
        f"\n{WRITERS} writers x {ROUNDS} runs in {elapsed:.1f} s: at most {max(watch.backends)} "
        f"server backends over {len(watch.backends)} samples, at most {max(watch.waiting)} "
        f"clients waiting; PgBouncer: {len(servers)} server connections, "
        f"{stats['total_xact_count']} transactions, {stats['total_query_count']} queries, "
        f"clients waited {int(stats['total_wait_time']) / 1e6:.2f} s in all"
    )
    assert max(watch.backends) == POOL_SIZE
    assert 0 < len(servers) <= POOL_SIZE
    assert int(stats["total_wait_time"]) > 0, "the writers never waited for a server connection"


def test_reads_replace_and_a_failed_write_through_pgbouncer(
    bounced: PostgresResource, db: Database
) -> None:
    first = pd.DataFrame({"id": range(1000), "v": [f"v{i}" for i in range(1000)], "x": 0.5})
    loaded: list[pd.DataFrame] = []

    @asset(key=AssetKey(["shop", "reader"]), ins={"products": AssetIn(["shop", "products"])})
    def reader(products: pd.DataFrame) -> pd.DataFrame:
        loaded.append(products)
        return pd.DataFrame({"n": [len(products)]})

    result = run_assets([frame_asset(first, metadata=KEYED), reader], bounced)
    assert written(result)["rows_inserted"] == 1000
    pd.testing.assert_frame_equal(loaded[0].sort_values("id").reset_index(drop=True), first)
    assert db.fetch("SELECT n FROM shop.reader") == [{"n": 1000}]

    # A replace leaves exactly the new frame.
    second = pd.DataFrame({"id": [5, 7], "v": ["five", "seven"], "x": [5.0, 7.0]})
    replace = {**KEYED, "write_mode": "replace"}
    assert (
        written(run_assets([frame_asset(second, metadata=replace)], bounced))["dagster/row_count"]
        == 2
    )
    assert db.rows("shop.products", "id") == second.to_dict("records")

    # A write that fails on bad input leaves the table as it was; the next one succeeds.
    before = db.snapshot("shop.products")
    bad = pd.DataFrame({"id": [8, 8], "v": ["a", "b"], "x": [1.0, 2.0]})  # a repeated key
    failed = run_assets([frame_asset(bad, metadata=KEYED)], bounced, raise_on_error=False)
    assert "8" in failure_message(failed)
    assert db.snapshot("shop.products") == before
    third = pd.DataFrame({"id": [9], "v": ["nine"], "x": [9.0]})
    assert (
        written(run_assets([frame_asset(third, metadata=KEYED)], bounced))["dagster/row_count"] == 3
    )


def test_timeouts_apply_in_every_transaction_and_stay_in_it(
    bouncer: PgBouncer, database_url: str, db: Database
) -> None:
    db.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, v bigint);"
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;"
        "CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()"
    )
    url = bouncer.url(database_url)
    impatient = PostgresResource(
        url=url, pgbouncer=True, statement_timeout=0.5, lock_timeout=0.25, application_name="imp"
    )
    frame = pd.DataFrame({"id": [1], "v": [1]})
    plan = WritePlan.from_options(conflict_target="id")
    show = text(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
        "current_setting('idle_in_transaction_session_timeout'), "
        "current_setting('application_name')"
    )
    try:
        for _ in range(3):  # each a transaction of its own, on any server connection
            started = time.monotonic()
            with pytest.raises(
                DatabaseError, match=r"writing public\.t ran longer than statement_timeout"
            ):
                impatient.run(
                    lambda c: copy_upsert(c, frame, schema="public", table="t", plan=plan)
                )
            assert time.monotonic() - started < 2.5
        # SQLAlchemy's own transactions get them too, on the pool and on connect().
        settings = impatient.run(lambda c: c.execute(show))
        assert tuple(settings.one()) == ("500ms", "250ms", "5min", "imp")

        async def on_connect() -> tuple[Any, ...]:
            async with impatient.connect() as conn:
                return tuple((await conn.execute(show)).one())

        assert asyncio.run(on_connect()) == ("500ms", "250ms", "5min", "imp")
    finally:
        impatient.dispose()
    assert db.fetch("SELECT count(*) AS n FROM t") == [{"n": 0}]

    # SET LOCAL: another client of the same server connections sees the server's defaults.
    async def plain() -> list[str]:
        conn = await asyncpg.connect(url, statement_cache_size=0)
        try:
            return [await conn.fetchval("SHOW statement_timeout") for _ in range(2 * POOL_SIZE)]
        finally:
            await conn.close()

    assert set(asyncio.run(plain())) == {"0"}


def test_without_the_option_pgbouncer_refuses_the_connection(
    bouncer: PgBouncer, database_url: str, db: Database
) -> None:
    postgres = PostgresResource(url=bouncer.url(database_url))
    try:
        result = run_assets(
            [frame_asset(pd.DataFrame({"id": [1]}), metadata=KEYED)],
            postgres,
            raise_on_error=False,
        )
        message = failure_message(result)
        assert "the server refused a connection parameter" in message
        assert "unsupported startup parameter: temp_buffers" in message
        assert "the URL reaches PgBouncer, set the resource's pgbouncer=True" in message
        with pytest.raises(DatabaseConnectionError, match="set the resource's pgbouncer=True"):
            postgres.run(lambda c: c.execute(text("SELECT 1")))
    finally:
        postgres.dispose()
    assert db.snapshot("shop.products") is None


def test_without_the_option_a_lenient_pgbouncer_loses_timeouts_and_statements(
    server_url: str, database_url: str, tmp_path: Path, db: Database
) -> None:
    """PgBouncer told to ignore the settings (``ignore_startup_parameters``, a common
    workaround) admits the resource without the option: its timeouts are silently lost, and
    asyncpg's cached statements fail as soon as a transaction gets another server
    connection."""
    ignored = "temp_buffers,idle_in_transaction_session_timeout,statement_timeout,lock_timeout"
    extra = {"ignore_startup_parameters": ignored}
    frame = pd.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    plan = WritePlan.from_options(conflict_target="id")
    with pgbouncer_for(server_url, tmp_path / "lenient", extra=extra) as lenient:
        url = lenient.url(database_url)
        postgres = PostgresResource(url=url, statement_timeout=0.5)
        try:
            postgres.run(lambda c: copy_upsert(c, frame, schema="public", table="t", plan=plan))
            timeout = postgres.run(lambda c: c.execute(text("SHOW statement_timeout")))
            assert timeout.scalar_one() == "0"  # not 500ms
            # Another client holds the server connection the resource used: its next
            # transaction gets another one, which lacks the statements asyncpg prepared.
            with pytest.raises(DatabaseError, match=r"prepared statement .* does not exist"):
                asyncio.run(_while_held(url, lambda: write(postgres, frame, plan)))
        finally:
            postgres.dispose()
        # The same with the option: both work.
        fixed = PostgresResource(url=url, pgbouncer=True, statement_timeout=0.5)
        try:
            write(fixed, frame, plan)
            asyncio.run(_while_held(url, lambda: write(fixed, frame, plan)))
            timeout = fixed.run(lambda c: c.execute(text("SHOW statement_timeout")))
            assert timeout.scalar_one() == "500ms"
        finally:
            fixed.dispose()
    assert db.fetch("SELECT count(*) AS n FROM t") == [{"n": 2}]


def write(postgres: PostgresResource, frame: pd.DataFrame, plan: WritePlan) -> Any:
    return postgres.run(lambda c: copy_upsert(c, frame, schema="public", table="t", plan=plan))


async def _while_held(url: str, work: Callable[[], Any]) -> Any:
    """Run ``work`` (in a thread: it blocks) while another client of PgBouncer holds a
    server connection in a transaction."""
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1")
            return await asyncio.to_thread(work)
    finally:
        await conn.close()
