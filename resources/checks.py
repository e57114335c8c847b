"""The checks of a staged frame that PostgreSQL would not make itself (values its types
would round or trim, rows outside the partition, repeated keys), and the search for the
column a failed cast belongs to. Each refuses with an error naming the column or key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from . import sql, steps
from .errors import FrameError, TableMismatchError

if TYPE_CHECKING:
    from .write import Write


async def check_lengths(write: Write, step: steps.CheckLengths) -> None:
    """varchar(n) trims trailing spaces beyond n without a word: refuse longer text."""
    for column, limit in step.limits:
        value = await write.driver.fetchval(sql.too_long(write.planned.stage, column), limit)
        if value is not None:
            raise TableMismatchError(
                f"column {column!r} of table {write.name} holds at most {limit} characters, "
                f"but the frame has {value[:40]!r}...: shorten the value, or widen the column"
            )


async def check_values_kept(write: Write, step: steps.CheckValuesKept) -> None:
    """numeric(p,s), timestamp(p) and interval(p) round without a word: refuse a value
    they would change, naming the column."""
    raw = write.planned.stage
    for column, pg_type, unmodified in step.columns:
        query = sql.changed_by_cast(sql.quote_ident(raw), column, pg_type, unmodified)
        try:
            async with write.driver.transaction():  # an overflow fails the check alone
                value = await write.driver.fetchval(query)
        except asyncpg.DataError as failure:
            raise TableMismatchError(
                f"column {column!r} of table {write.name} is {pg_type}, which cannot hold "
                f"every value of the frame ({failure}): fit the values to it, or alter the "
                "table"
            ) from failure
        if value is not None:
            raise TableMismatchError(
                f"column {column!r} of table {write.name} is {pg_type}, which would round "
                f"the frame's value {value}: round the values in the frame to fit, or alter "
                "the table"
            )


async def check_rows_in_partition(write: Write, step: steps.CheckRowsInPartition) -> None:
    where = write.planned.where or "true"
    outside = await write.driver.fetchrow(
        sql.outside_partition(write.source, step.columns, where), *write.planned.params
    )
    if outside is not None:
        raise FrameError(
            f"the frame has rows outside the partition being written ({step.bounds}), e.g. "
            f"{dict(outside)}; return only the partition's rows (partition_expr "
            f"{list(step.columns)})"
        )


async def check_keys_in_partition(write: Write) -> None:
    """A key stored in another partition would be moved by the merge, changing a partition
    this write does not own."""
    where = write.planned.where or "true"
    key = write.options.conflict_target
    elsewhere = await write.driver.fetchrow(
        sql.stored_in_other_partition(write.source, write.target, key, where),
        *write.planned.params,
    )
    if elsewhere is not None:
        raise FrameError(
            f"key {dict(elsewhere)} is already stored in another partition of {write.name}; "
            "a partition's write cannot move rows between partitions: add the partition_expr "
            "column to conflict_target"
        )


async def refuse_repeated_keys(write: Write, source: str | None = None) -> None:
    """Refuse a key staged (or in ``source``) more than once, naming one. Checked on the
    server: an index of the keys held in the client would grow with the frame."""
    key = write.options.conflict_target
    source = write.source if source is None else source
    example = await write.driver.fetchrow(sql.repeated_key(source, key))
    if example is None:
        return
    keys, rows = await write.driver.fetchrow(sql.repeated_key_totals(source, key))
    raise FrameError(
        f"{keys} conflict_target key(s) on {list(key)} appear more than once ({rows} rows) in "
        f"the frame for table {write.name}, e.g. {dict(example)}; drop the duplicates or set "
        "the metadata key 'duplicates' to 'keep_last' or 'keep_first'"
    )


async def diagnose(write: Write) -> TableMismatchError | None:
    """Find the column whose staged values the table's type cannot take, by casting each
    such column alone in a savepoint that is rolled back."""
    for column, staged_type, table_type in write.planned.casts:
        probe = write.driver.transaction()
        await probe.start()
        try:
            await write.driver.execute(sql.cast_probe(write.planned.stage, column, table_type))
        except asyncpg.PostgresError as failure:
            return TableMismatchError(
                f"column {column!r}: table {write.name} stores {table_type}, but the frame's "
                f"values are {staged_type} and cannot be stored there ({failure}); convert "
                "the column in the frame, or alter the table"
            )
        finally:
            await probe.rollback()
    return None
