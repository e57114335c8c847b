"""The errors a write or a read raises, each caused on a real server: a timeout on a table
another session has locked, a backend terminated while it waits, a missing privilege. Each test
checks the error's class (and the builtin it also is), its message, its ``__cause__``, that the
table is unchanged, and that the next write or read succeeds. The translation table itself is
tested first, without a server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import asyncpg
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from resources import (
    ConnectionLostError,
    CopyUpsertError,
    DatabaseError,
    DatabaseTimeoutError,
    FrameError,
    PostgresResource,
    TableMismatchError,
    WritePlan,
    WriteResult,
    copy_upsert,
    read_table,
)
from resources.errors import Operation, translate
from resources.read import read_arrow

from .conftest import Database

TABLE = "t"
NAME = f"public.{TABLE}"
KEYED = WritePlan.from_options(conflict_target="id")
VICTIM = "copy-upsert-victim-errors"
SEEDED = [{"id": 1, "v": 1}, {"id": 2, "v": 2}]
FRAME = pd.DataFrame({"id": [1, 2], "v": [10, 20]})
WRITTEN = [{"id": 1, "v": 10}, {"id": 2, "v": 20}]
# Every asyncpg error derives from one of these; a socket error is an OSError.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def _seed(db: Database) -> tuple[int, str] | None:
    """Create public.t holding SEEDED; return its snapshot."""
    db.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, v bigint)")
    db.execute(f"INSERT INTO {TABLE} VALUES (1, 1), (2, 2)")
    return db.snapshot(NAME)


def _write(resource: PostgresResource, frame: pd.DataFrame = FRAME) -> WriteResult:
    return resource.run(
        lambda conn: copy_upsert(conn, frame, schema="public", table=TABLE, plan=KEYED)
    )


def _read(resource: PostgresResource) -> pd.DataFrame:
    return resource.run(lambda conn: read_table(conn, schema="public", table=TABLE))


class _Session:
    """Another session, driven step by step from the test on an event loop of its own."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(url))
        except BaseException:
            self.loop.close()
            raise

    def execute(self, sql: str) -> None:
        self.loop.run_until_complete(self.conn.execute(sql))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.conn.close())
        finally:
            self.loop.close()


@contextmanager
def _locked(url: str) -> Iterator[None]:
    """Another session holds ACCESS EXCLUSIVE on public.t, in an open transaction, while the
    block runs: every write and read of the table waits. Released (ROLLBACK) at the end."""
    session = _Session(url)
    try:
        session.execute(f"BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        try:
            session.execute("ROLLBACK")
        finally:
            session.close()


def _waiting_for_lock(db: Database, application_name: str) -> int:
    """The backend pid of the session named ``application_name``, once it waits for a lock."""
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    while not (rows := db.fetch(waiting, application_name)):
        assert time.monotonic() < deadline, f"{application_name} never waited for the lock"
        time.sleep(0.02)
    return int(rows[0]["pid"])


def _assert_caused_by(
    err: BaseException, driver_error: type[BaseException] | tuple[type[BaseException], ...]
) -> None:
    """``err`` was raised ``from`` the driver's error: not from itself, nor from ours."""
    cause = err.__cause__
    assert cause is not None
    assert cause is not err
    assert isinstance(cause, driver_error), repr(cause)
    assert not isinstance(cause, CopyUpsertError), repr(cause)


# ---- the translation table, without a server -----------------------------------------------

WRITE = Operation("write", NAME, "upsert")


def test_a_builtin_timeout_is_a_timeout_not_a_lost_connection() -> None:
    # TimeoutError is an OSError, which maps to a lost connection: the narrower entry wins.
    assert issubclass(TimeoutError, OSError)
    err = translate(TimeoutError(), WRITE)
    assert isinstance(err, DatabaseTimeoutError)
    assert isinstance(err, TimeoutError)
    assert isinstance(err, DatabaseError)
    assert not isinstance(err, ConnectionLostError)
    assert not isinstance(err, ConnectionError)
    assert "writing public.t timed out (the resource's command_timeout)" in str(err)


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.PostgresError.new(
            {"C": "57P01", "M": "terminating connection due to administrator command"}
        ),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(32, "Broken pipe"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_a_broken_connection_is_a_connection_error(driver_error: BaseException) -> None:
    err = translate(driver_error, WRITE)
    assert isinstance(err, ConnectionLostError)
    assert isinstance(err, ConnectionError)
    assert isinstance(err, DatabaseError)
    assert not isinstance(err, TimeoutError)
    assert str(err).startswith("lost the connection to PostgreSQL while writing public.t")


def test_the_driver_refusing_a_closed_connection_is_a_lost_connection() -> None:
    closed = asyncpg.InterfaceError("the underlying connection is closed")
    lost = translate(closed, Operation("write", NAME, connection_closed=True))
    assert isinstance(lost, ConnectionLostError)
    refused = translate(closed, Operation("write", NAME, connection_closed=False))
    assert type(refused) is DatabaseError
    assert "the driver refused the write of public.t" in str(refused)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"C": "57014", "M": "canceling statement due to statement timeout"}, "statement_timeout"),
        ({"C": "55P03", "M": "canceling statement due to lock timeout"}, "lock_timeout"),
    ],
)
def test_server_side_timeouts_are_timeout_errors(fields: dict[str, str], message: str) -> None:
    err = translate(asyncpg.PostgresError.new(fields), WRITE)
    assert isinstance(err, DatabaseTimeoutError)
    assert isinstance(err, TimeoutError)
    assert not isinstance(err, ConnectionError)
    assert message in str(err)
    assert NAME in str(err)


def test_a_unique_violation_is_a_frame_error() -> None:
    violation = asyncpg.PostgresError.new(
        {
            "C": "23505",
            "M": 'duplicate key value violates unique constraint "t_pkey"',
            "n": "t_pkey",
        }
    )
    assert type(violation) is asyncpg.UniqueViolationError
    err = translate(violation, WRITE)
    assert isinstance(err, FrameError)
    assert isinstance(err, ValueError)
    assert not isinstance(err, DatabaseError)
    assert "unique constraint 't_pkey' of public.t" in str(err)


@pytest.mark.parametrize(
    "unknown", [KeyError("id"), RuntimeError("decoded 1 rows of the 2"), ZeroDivisionError()]
)
def test_an_unknown_error_stays_itself(unknown: Exception) -> None:
    assert translate(unknown, WRITE) is unknown


@pytest.mark.parametrize(
    "ours",
    [
        FrameError("conflict_target column 'id' has 1 NULL value(s)"),
        TableMismatchError("table public.t does not exist"),
        DatabaseTimeoutError("reading public.t timed out"),
        ConnectionLostError("lost the connection"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_our_own_error_passes_through_as_the_same_object(ours: CopyUpsertError) -> None:
    # Ours derive from TimeoutError, ConnectionError, ...: they must not be translated again.
    assert translate(ours, WRITE) is ours


# ---- command_timeout: the client gives up --------------------------------------------------


def test_command_timeout_on_a_locked_table_fails_a_write(database_url: str, db: Database) -> None:
    before = _seed(db)
    victim = PostgresResource(url=database_url, command_timeout=1)
    try:
        with _locked(database_url):
            started = time.monotonic()
            with pytest.raises(TimeoutError) as raised:
                _write(victim)
            assert time.monotonic() - started < 5
        err = raised.value
        assert isinstance(err, DatabaseTimeoutError)
        assert "writing public.t timed out (the resource's command_timeout)" in str(err)
        _assert_caused_by(err, TimeoutError)
        assert db.snapshot(NAME) == before

        assert _write(victim).rows_updated == 2
        assert db.rows(NAME, "id") == WRITTEN
    finally:
        victim.dispose()


def test_command_timeout_on_a_locked_table_fails_a_read(database_url: str, db: Database) -> None:
    before = _seed(db)
    victim = PostgresResource(url=database_url, command_timeout=1)
    try:
        with _locked(database_url):
            started = time.monotonic()
            with pytest.raises(TimeoutError) as raised:
                _read(victim)
            assert time.monotonic() - started < 5
        err = raised.value
        assert isinstance(err, DatabaseTimeoutError)
        assert "reading public.t timed out (the resource's command_timeout)" in str(err)
        assert "nothing was read" in str(err)
        _assert_caused_by(err, TimeoutError)
        assert db.snapshot(NAME) == before

        assert _read(victim).to_dict("records") == SEEDED
    finally:
        victim.dispose()


# ---- statement_timeout and lock_timeout: the server gives up -------------------------------


@pytest.mark.parametrize(
    ("setting", "message", "driver_error"),
    [
        (
            "statement_timeout",
            "a statement writing public.t ran longer than statement_timeout",
            asyncpg.QueryCanceledError,
        ),
        (
            "lock_timeout",
            "waited longer than lock_timeout for a lock on public.t",
            asyncpg.LockNotAvailableError,
        ),
    ],
)
def test_a_server_timeout_on_a_locked_table_fails_a_write(
    setting: str,
    message: str,
    driver_error: type[BaseException],
    database_url: str,
    db: Database,
) -> None:
    before = _seed(db)
    timeout: dict[str, Any] = {setting: 0.5}
    victim = PostgresResource(url=database_url, **timeout)
    try:
        with _locked(database_url):
            started = time.monotonic()
            with pytest.raises(TimeoutError) as raised:
                _write(victim)
            assert time.monotonic() - started < 5
        err = raised.value
        assert isinstance(err, DatabaseTimeoutError)
        assert message in str(err)
        _assert_caused_by(err, driver_error)
        assert db.snapshot(NAME) == before

        assert _write(victim).rows_updated == 2
        assert db.rows(NAME, "id") == WRITTEN
    finally:
        victim.dispose()


# ---- a backend terminated while it waits ---------------------------------------------------


def test_a_backend_terminated_while_writing_is_a_lost_connection(
    database_url: str, db: Database
) -> None:
    before = _seed(db)
    victim = PostgresResource(url=database_url, application_name=VICTIM)
    try:
        # The pool outside the lock: if the test fails while the write waits, releasing the
        # lock lets the write end, and the pool's shutdown does not wait forever.
        with ThreadPoolExecutor(max_workers=1) as pool, _locked(database_url):
            writing = pool.submit(_write, victim)
            pid = _waiting_for_lock(db, VICTIM)
            assert db.fetch("SELECT pg_terminate_backend($1) AS done", pid) == [{"done": True}]
            err = writing.exception(timeout=10)
        assert isinstance(err, ConnectionLostError), repr(err)
        assert isinstance(err, ConnectionError)
        assert str(err).startswith("lost the connection to PostgreSQL while writing public.t")
        assert "nothing was written" in str(err)
        _assert_caused_by(err, DRIVER_ERRORS)
        assert db.snapshot(NAME) == before

        # The pool replaces the dead connection: the next write through the resource succeeds.
        assert _write(victim).rows_updated == 2
        assert db.rows(NAME, "id") == WRITTEN
    finally:
        victim.dispose()


def test_a_backend_terminated_while_reading_is_a_lost_connection(
    database_url: str, db: Database
) -> None:
    before = _seed(db)
    victim = PostgresResource(url=database_url, application_name=VICTIM)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, _locked(database_url):
            reading = pool.submit(_read, victim)
            pid = _waiting_for_lock(db, VICTIM)
            assert db.fetch("SELECT pg_terminate_backend($1) AS done", pid) == [{"done": True}]
            err = reading.exception(timeout=10)
        assert isinstance(err, ConnectionLostError), repr(err)
        assert str(err).startswith("lost the connection to PostgreSQL while reading public.t")
        _assert_caused_by(err, DRIVER_ERRORS)
        assert db.snapshot(NAME) == before

        assert _read(victim).to_dict("records") == SEEDED
    finally:
        victim.dispose()


# ---- a missing privilege -------------------------------------------------------------------


def test_a_read_without_select_privilege_says_what_to_grant(
    database_url: str, db: Database
) -> None:
    before = _seed(db)
    role = f"reader_{os.getpid()}"
    db.execute(f"CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA public TO {role}")
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    reader = PostgresResource(url=url)
    try:
        with pytest.raises(DatabaseError) as raised:
            _read(reader)
        err = raised.value
        assert not isinstance(err, TimeoutError | ConnectionError)
        assert "may not read public.t" in str(err)
        assert "permission denied for table t" in str(err)
        assert "GRANT SELECT" in str(err)
        _assert_caused_by(err, asyncpg.InsufficientPrivilegeError)
        assert db.snapshot(NAME) == before

        # Doing what the message says is enough.
        db.execute(f"GRANT SELECT ON {TABLE} TO {role}")
        assert _read(reader).to_dict("records") == SEEDED
    finally:
        reader.dispose()
        db.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


# ---- our own errors are raised as they are -------------------------------------------------


@pytest.mark.parametrize(
    ("table", "frame", "error", "message"),
    [
        # Found in the frame, before the write begins.
        (
            "id bigint PRIMARY KEY, v bigint",
            pd.DataFrame({"id": [1.0, None], "v": [10, 20]}),
            FrameError,
            "conflict_target column 'id' has 1 NULL value",
        ),
        # Found on the server, inside the write's transaction (so passed through translate).
        (
            "id bigint PRIMARY KEY, v bigint",
            pd.DataFrame({"id": [1, 1], "v": [10, 20]}),
            FrameError,
            "appear more than once",
        ),
        (
            "id bigint, v bigint",
            FRAME,
            TableMismatchError,
            "has no unique index or constraint on exactly ['id']",
        ),
    ],
    ids=["null-key", "repeated-key", "no-unique-index"],
)
def test_our_own_errors_are_not_raised_from_themselves(
    table: str,
    frame: pd.DataFrame,
    error: type[CopyUpsertError],
    message: str,
    postgres: PostgresResource,
    db: Database,
) -> None:
    db.execute(f"CREATE TABLE {TABLE} ({table}); INSERT INTO {TABLE} VALUES (1, 1), (2, 2)")
    before = db.snapshot(NAME)
    with pytest.raises(error) as raised:
        _write(postgres, frame)
    err = raised.value
    assert message in str(err)
    assert err.__cause__ is None
    assert db.snapshot(NAME) == before


# ---- a read cancelled in the middle of its COPY ---------------------------------------------


def test_a_read_cancelled_mid_copy_raises_cancelled_error(database_url: str, db: Database) -> None:
    """Cancelling a read while the COPY runs is a cancel, whatever state asyncpg leaves the
    connection in (it may fail the COPY with an InternalClientError and close it)."""
    db.execute(
        "CREATE TABLE big AS"
        " SELECT g AS a, repeat('x', 100) AS b FROM generate_series(1, 1500000) g"
    )

    async def cancel_reads() -> list[str]:
        outcomes = []
        conn = await asyncpg.connect(database_url)
        try:
            for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4):
                task = asyncio.ensure_future(read_arrow(conn, schema="public", table="big"))
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                    outcomes.append("finished")
                except asyncio.CancelledError:
                    outcomes.append("cancelled")
                except Exception as exc:
                    outcomes.append(type(exc).__name__)
                if conn.is_closed():
                    conn = await asyncpg.connect(database_url)
        finally:
            await conn.close()
        return outcomes

    outcomes = asyncio.run(cancel_reads())
    assert set(outcomes) <= {"cancelled", "finished"} and "cancelled" in outcomes, outcomes
