"""COPY-upsert a DataFrame (pandas, polars, Arrow, or a stream of them) into PostgreSQL, and
read tables back: the entry points of the core, which has no Dagster in it.

A write reads the catalog once, plans its steps (:mod:`resources.plan`, pure), and carries
them out (:mod:`resources.write`) inside one explicit transaction on the asyncpg connection
behind a SQLAlchemy ``AsyncConnection``. Every row lands or none does.

The transaction has to be explicit: the driver connection behind SQLAlchemy runs in autocommit
until SQLAlchemy itself begins, so ``CREATE TEMP TABLE ... ON COMMIT DROP`` followed by a COPY
would drop the staging table before the COPY reaches it.

Example::

    async with engine.connect() as conn:
        result = await copy_upsert(
            conn, frame, schema="shop", table="products",
            plan=WritePlan.from_options(conflict_target="sku"),
        )
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

import asyncpg
import pandas as pd
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from . import plan as planner
from . import read, sql, write
from .catalog import Column, read_catalog, restore_settings
from .errors import ConfigurationError, Operation, translate
from .frame import ArrowFrame, PreparedFrame, prepare_frame
from .handlers import handler_for_input, to_arrow
from .options import (
    Duplicates,
    KeySlice,
    OnConflict,
    PartitionSlice,
    TimeWindowSlice,
    WriteMode,
    WritePlan,
    WriteResult,
)

__all__ = [
    "ArrowFrame",
    "Duplicates",
    "KeySlice",
    "OnConflict",
    "PartitionSlice",
    "TimeWindowSlice",
    "WriteMode",
    "WritePlan",
    "WriteResult",
    "copy_upsert",
    "read_arrow",
    "read_table",
]

# Errors after which the whole write runs again: another session won a lock race, or added
# a column this write was adding (the next plan sees its type).
_RETRIED = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.DuplicateColumnError,
)


async def copy_upsert(
    conn: AsyncConnection,
    frame: object,
    *,
    schema: str,
    table: str,
    plan: WritePlan,
    partition: Sequence[PartitionSlice] = (),
    progress: Callable[[str], None] = lambda message: None,
    retries: int = 3,
    owner: str | None = None,
) -> WriteResult:
    """Write ``frame`` into ``schema.table`` as ``plan`` says, atomically.

    Creates the schema and the table (typed from the frame, with a primary key on the
    conflict target) when they do not exist. When ``conn`` is already in a transaction the
    write joins it as a savepoint; otherwise it commits on its own.

    Args:
        conn: a SQLAlchemy async connection on the asyncpg driver.
        frame: the rows to write: a pandas or polars DataFrame, a polars LazyFrame, a
            pyarrow Table or RecordBatchReader, an object with ``__arrow_c_stream__``, an
            iterator of these (one frame in chunks), or an :class:`ArrowFrame`. Its column
            labels are the column names.
        schema: the target table's schema.
        table: the target table.
        plan: how to write; see :class:`WritePlan`.
        partition: for a partitioned asset, the slice of the table the frame stands for.
            Every row must lie in it; ``replace`` replaces only that slice.
        progress: called with a line of text every few seconds while rows are copied, and
            at the start and end of the merge (the IO manager logs them to the run).
        retries: how many times a write that lost a deadlock or a serialization conflict
            is run again (after 0.2 s, 0.4 s, 0.8 s, ...) before it fails. A stream that
            can be read only once (an iterator, a reader) is not run again.
        owner: the one writer of the table (the IO manager passes the asset key, or
            ``op X output Y``); None (default): no check, no record. The table's comment
            records it as a last line ``dagster-copy-upsert owner: <owner>`` (the user's
            lines kept), set in the write's transaction when the write creates the table or
            first writes one without that line, provided the role may comment on the table
            (is a member of its owner role; otherwise the write goes on unrecorded).

    Raises:
        TableOwnerError: the table's comment records another owner; nothing was written.
        WritePlanError, FrameError, TableMismatchError, DatabaseError: nothing was written.
    """
    sql.qualified(schema, table)
    prepared = prepare_frame(
        frame if isinstance(frame, ArrowFrame) else to_arrow(frame), plan, partition
    )
    driver = await driver_connection(conn)
    replayable = prepared.source.replayable
    operation = Operation("write", f"{schema}.{table}", plan.write_mode, retries, replayable)
    nested = driver.is_in_transaction()
    for attempt in range(retries + 1):
        try:
            async with driver.transaction():
                return await _write(
                    driver, prepared, schema, table, plan, partition, progress, nested, owner
                )
        except Exception as exc:
            if isinstance(exc, _RETRIED) and attempt < retries and replayable:
                progress(f"retrying the write to {schema}.{table} after: {exc}")
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            _raise_translated(exc, operation, driver)
    raise AssertionError("unreachable")


async def _write(
    driver: asyncpg.Connection,
    frame: PreparedFrame,
    schema: str,
    table: str,
    options: WritePlan,
    partition: Sequence[PartitionSlice],
    progress: Callable[[str], None],
    nested: bool,
    owner: str | None,
) -> WriteResult:
    catalog = await read_catalog(driver, schema, table)
    settings = catalog.previous_settings
    created = False
    while True:
        probe = catalog.table is not None and planner.needs_empty_probe(
            options, catalog.table, frame
        )
        empty = created or (
            probe and bool(await driver.fetchval(sql.is_empty(sql.qualified(schema, table))))
        )
        steps = planner.plan_write(
            options,
            catalog,
            frame,
            schema=schema,
            table_name=table,
            partition=partition,
            empty=empty,
            nested=nested,
            owner=owner,
            created=created,
        )
        job = write.Write(driver, schema, table, frame, options, steps, progress)
        counts = await write.run(job, steps.steps)
        created = counts.created
        if not steps.replan:
            break
        # The steps created the table: plan again with what the catalog now says (another
        # writer may have created it first, with other columns).
        catalog = replace(await read_catalog(driver, schema, table), previous_settings=settings)
    row_count = await write.count(job, steps.row_count, counts, where=False)
    partition_row_count = await write.count(job, steps.partition_row_count, counts, where=True)
    if nested:
        await restore_settings(driver, catalog)
    return WriteResult(
        rows_staged=counts.staged,
        rows_inserted=counts.inserted,
        rows_updated=counts.updated,
        rows_unchanged=counts.staged - counts.inserted - counts.updated,
        rows_deleted=counts.deleted,
        row_count=row_count,
        partition_row_count=partition_row_count,
        columns=steps.table_columns,
    )


async def read_table(
    conn: AsyncConnection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
    as_type: Any = pd.DataFrame,
) -> Any:
    """Read ``schema.table`` (only ``columns``, only the ``partition`` slice) as ``as_type``:
    ``pandas.DataFrame`` (default), ``polars.DataFrame``, ``polars.LazyFrame`` or
    ``pyarrow.Table``.

    The rows travel as ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` and are decoded into
    Arrow with the table's column types (see the README's type table), in one read-only
    transaction; polars and Arrow reads never pass through pandas.

    Raises:
        ConfigurationError: ``as_type`` is none of those, or its library is missing.
        TableMismatchError: the table or a requested column does not exist.
        DatabaseError: the server refused the read (a missing privilege, a timeout) or the
            connection was lost.
    """
    handler = handler_for_input(as_type)
    arrow, read_columns = await read_arrow(
        conn, schema=schema, table=table, columns=columns, partition=partition
    )
    return read.convert(handler, arrow, read_columns, f"{schema}.{table}")


async def read_arrow(
    conn: AsyncConnection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
    stream: read.ArrowStream | None = None,
) -> tuple[pa.Table, Mapping[str, Column]]:
    """:func:`read_table`'s Arrow table, before a handler turns it into a frame, with the
    catalog's description of each column read; with ``stream``, sent to it piece by piece
    (see :func:`resources.streaming.record_batch_reader`)."""
    driver = await driver_connection(conn)
    try:
        return await read.read_arrow(
            driver,
            schema=schema,
            table=table,
            columns=columns,
            partition=partition,
            stream=stream,
        )
    except Exception as exc:
        _raise_translated(exc, Operation("read", f"{schema}.{table}"), driver)


def _raise_translated(exc: Exception, operation: Operation, driver: asyncpg.Connection) -> NoReturn:
    """Raise what :func:`errors.translate` makes of ``exc``, from the driver's error."""
    closed = driver.is_closed()
    context = exc.__context__
    if closed and isinstance(exc, asyncpg.InterfaceError) and isinstance(context, Exception):
        # asyncpg's Transaction.__aexit__ raised its own "the underlying connection is
        # closed" in place of the error that closed it.
        exc = context
    translated = translate(exc, replace(operation, connection_closed=closed))
    if translated is exc:
        raise exc
    raise translated from exc


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection behind a SQLAlchemy async connection (SQLAlchemy's documented
    way: ``(await conn.get_raw_connection()).driver_connection``).

    Raises:
        ConfigurationError: the engine does not use the asyncpg driver.
    """
    if conn.in_transaction():
        # SQLAlchemy begins the driver's transaction at its first statement, not at begin():
        # run one, so that our transaction nests in the caller's as a savepoint.
        await conn.execute(text("SELECT 1"))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise ConfigurationError(
            f"copy_upsert and read_table need the asyncpg driver, got {type(driver).__name__}: "
            "use a postgresql+asyncpg:// URL"
        )
    return driver
