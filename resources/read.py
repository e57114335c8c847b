"""Read a table into a pandas DataFrame: ``COPY (SELECT ...) TO STDOUT (FORMAT binary)``,
decoded into Arrow while the server sends the rest (:mod:`binary_copy`).

How each column travels and what it comes back as is :func:`types.read_type`'s choice; this
module runs the query and turns the decoded table into the frame (:func:`to_pandas`).
"""

from __future__ import annotations

import asyncio
import decimal
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import asyncpg
import pandas as pd
import pyarrow as pa

from . import sql
from .binary_copy import BinaryCopyDecoder
from .catalog import Column, read_catalog, restore_settings
from .errors import TableMismatchError, TableNotFoundError
from .options import PartitionSlice
from .sql import partition_filter, qualified, quote_ident
from .types import PgType, read_type

__all__ = ["read_frame", "to_pandas"]


async def read_frame(
    driver: asyncpg.Connection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
) -> pd.DataFrame:
    """Read ``schema.table`` (only ``columns``, only the ``partition`` slice) into a DataFrame,
    in a read-only transaction of its own (a savepoint inside the caller's).

    The rows travel as ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` and are decoded with
    the table's column types, so integers stay integers (nullable ones as ``Int64``) and
    ``timestamptz`` comes back tz-aware in UTC.

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
            decoder = BinaryCopyDecoder({n: read_type(c.type) for n, c in selected.items()})
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
        return to_pandas(await decoder.table(rows=sql.affected(status)), selected)
    except ValueError as exc:
        # A value PostgreSQL stores but Arrow or pandas cannot hold (a date after 9999).
        raise TableMismatchError(
            f"table {schema}.{table} holds a value that cannot be read as its column's type "
            f"says ({exc}): read the other columns (the input's 'columns' metadata), or "
            "convert the values in the table"
        ) from exc


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


# ---- to pandas ----------------------------------------------------------------------------------

_NULLABLE_PANDAS: Mapping[pa.DataType, Any] = {
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

# Types whose text or bytes become one Python object per value.
_TO_PYTHON: Mapping[str, Callable[[Any], Any]] = {
    "decimal": decimal.Decimal,
    "uuid": lambda value: uuid.UUID(bytes=value),
    "json": json.loads,
    # numeric[] travels as JSON numbers: parsed as Decimals, every digit kept.
    "json_decimal": partial(json.loads, parse_float=decimal.Decimal, parse_int=decimal.Decimal),
}


def to_pandas(table: pa.Table, columns: Mapping[str, Column]) -> pd.DataFrame:
    """The DataFrame a read returns for the decoded ``table`` of the catalog's ``columns``.

    Nullable integer and boolean columns come back as pandas' nullable dtypes, so that NULL
    does not turn them into floats or objects; NOT NULL ones as plain numpy dtypes.
    """
    frame = {}
    for name, column in columns.items():
        try:
            frame[name] = _to_pandas(table.column(name), column)
        except ValueError as exc:  # pyarrow's ArrowInvalid included
            raise ValueError(f"column {name!r}: {exc}") from exc
        # Drop each Arrow column once converted, so the table and the frame never both hold
        # every column.
        table = table.drop_columns([name])
    return pd.DataFrame(frame, index=pd.RangeIndex(table.num_rows))


def _to_pandas(column: pa.ChunkedArray, stored: Column) -> pd.Series:
    decode = read_type(stored.type).decode
    if decode == "nullable" and not stored.not_null:
        mapper = {column.type: _NULLABLE_PANDAS[column.type]}.get
        return pd.Series(column.to_pandas(types_mapper=mapper))
    if decode == "time":
        return pd.Series(column.to_pandas(), dtype=object)
    parse = _TO_PYTHON.get(decode)
    if parse is not None:
        values = [None if v is None else parse(v) for c in column.chunks for v in c.to_pylist()]
        return pd.Series(values, dtype=object)
    return pd.Series(column.to_pandas())
