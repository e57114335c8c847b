"""Read a table into Arrow: ``COPY (SELECT ...) TO STDOUT (FORMAT binary)``, decoded while
the server sends the rest (:mod:`binary_copy`).

How each column travels is :func:`types.read_type`'s choice; this module runs the query, and
a handler (:mod:`resources.handlers`) turns the decoded table into its library's frame
(:func:`convert`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import pyarrow as pa

from . import sql
from .binary_copy import BinaryCopyDecoder
from .catalog import Column, read_catalog, restore_settings
from .errors import TableMismatchError, TableNotFoundError
from .options import PartitionSlice
from .sql import partition_filter, qualified, quote_ident
from .types import PgType, read_type

if TYPE_CHECKING:
    from .handlers import FrameHandler

__all__ = ["convert", "read_arrow"]


async def read_arrow(
    driver: asyncpg.Connection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
    stream: ArrowStream | None = None,
) -> tuple[pa.Table, Mapping[str, Column]]:
    """Read ``schema.table`` (only ``columns``, only the ``partition`` slice) into an Arrow
    table, in a read-only transaction of its own (a savepoint inside the caller's); with it,
    the catalog's description of each column read. With ``stream``, the table is sent to
    it piece by piece as it is decoded (and the table returned is empty).

    The rows travel as ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` and are decoded with
    the table's column types (:data:`types.READ_TYPES`).

    Raises:
        TableMismatchError: the table or a requested column does not exist.
    """
    nested = driver.is_in_transaction()
    decoder: BinaryCopyDecoder | None = None
    try:
        async with driver.transaction(readonly=True):
            catalog = await read_catalog(driver, schema, table)
            if catalog.table is None:
                raise TableNotFoundError(
                    f"table {schema}.{table} does not exist: materialize the asset that writes "
                    "it first"
                )
            stored = catalog.table.columns
            asked = [columns] if isinstance(columns, str) else columns
            names = list(stored if asked is None else asked)
            if not stored:
                raise TableMismatchError(
                    f"table {schema}.{table} has no columns, and a frame of rows without "
                    "columns is not one every library can hold: add a column to the table"
                )
            if not names:
                raise TableMismatchError(
                    f"the read of table {schema}.{table} asks for no column (columns: []): leave "
                    "the input's 'columns' metadata out to read every column"
                )
            missing = [name for name in names if name not in stored]
            if missing:
                raise TableMismatchError(
                    f"columns {missing} are not in table {schema}.{table}, which has "
                    f"{list(stored)}: ask for columns it has (the input's 'columns' metadata)"
                )
            selected = {name: stored[name] for name in names}
            query, params = read_query(schema, table, selected, partition, stored)
            decoder = BinaryCopyDecoder(
                {n: read_type(c.type) for n, c in selected.items()},
                None if stream is None else stream.send,
            )
            if stream is not None:
                await stream.begin(decoder.schema, selected)
            status = await driver.copy_from_query(
                query, *params, output=decoder.feed, format="binary"
            )
            if nested:
                await restore_settings(driver, catalog)
    except BaseException as exc:
        if decoder is not None:
            await decoder.close()
        task = asyncio.current_task()
        if task is not None and task.cancelling() and not isinstance(exc, asyncio.CancelledError):
            # asyncpg may fail a COPY it is cancelling with an InternalClientError ("cannot
            # switch to state 15") and close the connection: what happened is the cancel.
            raise asyncio.CancelledError from exc
        raise
    try:
        return await decoder.table(rows=sql.affected(status)), selected
    except ValueError as exc:
        raise _unreadable(f"{schema}.{table}", exc) from exc


class ArrowStream(Protocol):
    """Where a streamed read goes: its schema and columns first, then each piece."""

    async def begin(self, schema: pa.Schema, columns: Mapping[str, Column]) -> None:
        """The decoded pieces' schema, and the catalog's description of each column."""

    async def send(self, piece: pa.Table) -> None:
        """The next piece of rows; the COPY waits until this returns."""


def convert(
    handler: FrameHandler, table: pa.Table, columns: Mapping[str, Column], name: str
) -> Any:
    """The handler's frame of a read's ``table`` of ``columns``, from table ``name``.

    Raises:
        TableMismatchError: a value the library cannot hold.
    """
    try:
        return handler.from_arrow(table, columns)
    except ValueError as exc:
        raise _unreadable(name, exc) from exc


def _unreadable(name: str, exc: ValueError) -> TableMismatchError:
    # A value PostgreSQL stores but Arrow or the frame's library cannot hold (a date after
    # 9999, a NaN in a numeric(p, s) read as Arrow's decimal).
    return TableMismatchError(
        f"table {name} holds a value that cannot be read as its column's type says ({exc}): "
        "read the other columns (the input's 'columns' metadata), or convert the values in "
        "the table"
    )


def read_query(
    schema: str,
    table: str,
    selected: Mapping[str, Column],
    partition: Sequence[PartitionSlice],
    stored: Mapping[str, Column],
) -> tuple[str, list[Any]]:
    """The ``SELECT`` a read copies out, and its parameters: the ``selected`` columns as they
    travel in COPY, the rows of the ``partition`` slice (its columns among ``stored``)."""
    where, params = partition_filter(partition, {n: c.type for n, c in stored.items()})
    select = read_select([(name, column.type) for name, column in selected.items()])
    query = f"SELECT {select} FROM {qualified(schema, table)} AS t"
    if where:
        query += f" WHERE {where}"
    return query, params


def read_select(columns: Sequence[tuple[str, PgType]]) -> str:
    """The select list of a read: each column as ``types.read_type`` says it travels in
    ``COPY (SELECT ...) TO STDOUT``, named as the column."""
    parts = []
    for name, pg_type in columns:
        col = f"t.{quote_ident(name)}"
        select = read_type(pg_type).select
        parts.append(
            col if select == "{}" else f"{select.replace('{}', col)} AS {quote_ident(name)}"
        )
    return ", ".join(parts)
