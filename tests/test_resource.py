"""PostgresResource: URLs, the embedded default, secrets, executors and event loops."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import text

from resources import ConfigurationError, PostgresResource

from . import multiprocess_defs
from .conftest import Database
from .helpers import counts, failure_message, frame_asset, run_assets, written


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@db.example:5433/shop",
        "postgres://u:pw@db.example:5433/shop",
        "postgresql+asyncpg://u:pw@db.example:5433/shop",
    ],
)
def test_postgres_urls_are_driven_by_asyncpg(url: str) -> None:
    resolved = PostgresResource(url=url).database_url()
    assert resolved.drivername == "postgresql+asyncpg"
    assert (resolved.host, resolved.port, resolved.database) == ("db.example", 5433, "shop")


def test_unix_socket_urls_work(database_url: str) -> None:
    # The test server listens on a unix socket when it is the embedded one; say so explicitly.
    resource = PostgresResource(url=database_url)
    try:
        version = resource.run(lambda conn: _scalar(conn, "SELECT current_database()"))
    finally:
        resource.dispose()
    assert version == database_url.rsplit("/", 1)[1].split("?")[0]


def test_other_databases_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not PostgreSQL"):
        PostgresResource(url="mysql://u:pw@h/db").database_url()


def test_repr_hides_the_password() -> None:
    resource = PostgresResource(url="postgresql://writer:Sup3r-s3cret@db.example/shop")
    assert "Sup3r-s3cret" not in repr(resource)
    assert "Sup3r-s3cret" not in str(resource)
    assert "writer:***@db.example" in repr(resource)


async def _scalar(conn, sql: str):  # type: ignore[no-untyped-def]
    return (await conn.execute(text(sql))).scalar_one()


def test_timeouts_and_application_name_reach_the_session(database_url: str) -> None:
    resource = PostgresResource(
        url=database_url, statement_timeout=12.5, lock_timeout=3, application_name="nightly-load"
    )
    try:
        settings = resource.run(
            lambda conn: _scalar(
                conn,
                "SELECT current_setting('statement_timeout') || ',' || "
                "current_setting('lock_timeout') || ',' || current_setting('application_name')",
            )
        )
    finally:
        resource.dispose()
    assert settings == "12500ms,3s,nightly-load"


def test_password_never_reaches_the_event_log(
    server_url: str, database_url: str, db: Database
) -> None:
    password = "Pw-that-must-not-leak-9f3b"
    role = f"secret_keeper_{os.getpid()}"
    db.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(username=role, password=password)
    resource = PostgresResource(url=url.render_as_string(hide_password=False))
    good = frame_asset(pd.DataFrame({"id": [1]}), metadata={"conflict_target": "id"})
    bad = frame_asset(pd.DataFrame({"id": [None]}), metadata={"conflict_target": "id"})
    with DagsterInstance.ephemeral() as instance:
        ok = run_assets([good], resource, instance=instance)
        failed = run_assets([bad], resource, instance=instance, raise_on_error=False)
        assert ok.success and "NULL" in failure_message(failed)
        for run in (ok, failed):
            for entry in instance.all_logs(run.run_id):
                assert password not in str(entry)
                assert password not in repr(entry)
    assert password not in repr(resource)
    resource.dispose()
    db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_embedded_server_is_the_default_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "pgdata"
    asset_def = frame_asset(pd.DataFrame({"id": [1, 2]}), metadata={"conflict_target": "id"})
    first = PostgresResource(embedded_data_dir=str(data_dir))
    try:
        assert counts(written(run_assets([asset_def], first))) == (2, 2, 0, 0, 0)
    finally:
        first.dispose()
    assert (data_dir / "PG_VERSION").exists()
    # A new resource (as on the next run) finds the same server and the same data.
    second = PostgresResource(embedded_data_dir=str(data_dir))
    try:
        assert counts(written(run_assets([asset_def], second))) == (2, 0, 0, 2, 0)
    finally:
        second.dispose()
    assert "using the embedded PostgreSQL" in caplog.text


def test_database_url_variable_is_used_when_url_is_unset(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert (
        PostgresResource().database_url().database == database_url.rsplit("/", 1)[1].split("?")[0]
    )


def test_multiprocess_executor_runs_each_step_on_its_own_loop(
    database_url: str, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        for _ in range(2):
            with execute_job(
                reconstructable(multiprocess_defs.everything), instance=instance
            ) as result:
                assert result.success
    assert db.rows('mp."joined"', "id") == [
        {"id": 1, "a": "x", "b": True},
        {"id": 2, "a": "y", "b": True},
        {"id": 3, "a": "z", "b": True},
    ]


def test_direct_invocation_of_an_async_asset_on_its_own_loops(database_url: str) -> None:
    import asyncio

    resource = PostgresResource(url=database_url)
    try:
        # Each asyncio.run is a new event loop; connections never outlive theirs.
        for _ in range(2):
            frame = asyncio.run(multiprocess_defs.right(postgres=resource))
            assert list(frame["b"]) == [True, True, True]
        # Sync work on the same resource, between and after.
        assert resource.run(lambda conn: _scalar(conn, "SELECT 1")) == 1
    finally:
        resource.dispose()


def test_a_run_holds_one_pool_whatever_the_wiring(database_url: str) -> None:
    """The README's wiring: the IO manager's nested resource and the top-level one are two
    copies in Dagster; a downstream asset's own query finds the IO manager's pooled
    connection, not a second pool's."""
    from dagster import asset, materialize

    from resources import PostgresUpsertIOManager

    postgres = PostgresResource(url=database_url, application_name="one-pool-test")
    seen: list[int] = []

    @asset
    def upstream() -> pd.DataFrame:
        return pd.DataFrame({"v": [1, 2]})

    @asset
    def downstream(upstream: pd.DataFrame, postgres: PostgresResource) -> pd.DataFrame:
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'one-pool-test'"
        seen.append(postgres.run(lambda conn: _scalar(conn, count)))
        return upstream

    resources = {"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)}
    assert materialize([upstream, downstream], resources=resources).success
    # The IO manager read `upstream` and returned its connection to the pool; the asset's
    # query then ran on that same connection.
    assert seen == [1]


def test_dispose_lets_go_of_the_engine_of_async_connections(database_url: str) -> None:
    """connect()'s engine pools nothing, but a resource kept for the whole process (one at
    module level, used outside runs) would keep it alive after dispose()."""
    resource = PostgresResource(url=database_url)

    async def select_one() -> object:
        async with resource.connect() as conn:
            return await conn.scalar(text("SELECT 1"))

    assert asyncio.run(select_one()) == 1
    engine = weakref.ref(resource._async_engine)  # type: ignore[arg-type]
    resource.dispose()
    gc.collect()
    assert engine() is None
