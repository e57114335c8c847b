"""COPY-upsert a pandas DataFrame into PostgreSQL: the core, with no Dagster in it.

A write stages the frame in a temporary table with binary COPY and merges it into the target
in key order (``MERGE`` on PostgreSQL 17 and later, ``INSERT ... ON CONFLICT`` before), all
inside one explicit transaction on the asyncpg connection behind a SQLAlchemy
``AsyncConnection``. Every row lands or none does.

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
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

import asyncpg
import pandas as pd
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from . import _sql
from ._arrow import ROW_NUMBER_COLUMN, ArrowFrame, CsvDecoder, prepare_frame
from .errors import CopyUpsertError, DatabaseError, FrameError, TableMismatchError, WritePlanError

# The server went away or ended our session: the transaction is gone with it.
_CONNECTION_LOST = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionFailureError,
    ConnectionError,
    OSError,
)

# Staged rows from which the stage is analyzed before the merge.
ANALYZE_FROM_ROWS = 10_000

# How often a COPY in progress checks that its connection is still open.
CONNECTION_CHECK_SECONDS = 0.5

# The first PostgreSQL whose MERGE has RETURNING, which counts inserted and updated rows.
MERGE_RETURNING_SINCE = 17

# How often a long COPY reports how far it got.
PROGRESS_EVERY_SECONDS = 5.0

WriteMode = Literal["upsert", "replace", "append"]
OnConflict = Literal["update", "nothing"]
Duplicates = Literal["error", "keep_last", "keep_first"]
SchemaEvolution = Literal["add_columns", "strict"]

__all__ = [
    "Duplicates",
    "KeySlice",
    "OnConflict",
    "TimeWindowSlice",
    "WriteMode",
    "WritePlan",
    "WriteResult",
    "copy_upsert",
    "read_table",
]


@dataclass(frozen=True)
class WritePlan:
    """How a frame is written. Build one with :meth:`from_options`, which checks every value."""

    write_mode: WriteMode
    conflict_target: tuple[str, ...] = ()
    on_conflict: OnConflict = "update"
    update_columns: tuple[str, ...] | None = None
    duplicates: Duplicates = "error"
    schema_evolution: SchemaEvolution = "add_columns"

    @classmethod
    def from_options(
        cls,
        conflict_target: str | Sequence[str] | None = None,
        write_mode: str | None = None,
        on_conflict: str | None = None,
        update_columns: str | Sequence[str] | None = None,
        duplicates: str | None = None,
        schema_evolution: str | None = None,
    ) -> WritePlan:
        """Check loosely typed options (as found in asset metadata) and fill in defaults.

        Args:
            conflict_target: the unique key, one column name or several.
            write_mode: ``"upsert"`` (default with a key), ``"replace"`` (default without one:
                the table, or the partition, becomes the frame) or ``"append"``.
            on_conflict: ``"update"`` (default) or ``"nothing"``, for rows whose key exists.
            update_columns: the columns overwritten on conflict; default every non-key column.
            duplicates: ``"error"`` (default), ``"keep_last"`` or ``"keep_first"``, for a key
                that appears more than once in the frame.
            schema_evolution: ``"add_columns"`` (default: a frame column the table lacks is
                added, nullable, in the same transaction) or ``"strict"`` (it is an error).

        Raises:
            WritePlanError: an option has an unknown value or the wrong type.
        """
        key = _names("conflict_target", conflict_target) or ()
        mode = _choice("write_mode", write_mode, WriteMode, "upsert" if key else "replace")
        if mode == "upsert" and not key:
            raise WritePlanError(
                "write_mode 'upsert' needs a conflict_target: set the metadata key "
                "'conflict_target' to the column(s) of the table's unique key"
            )
        updates = _names("update_columns", update_columns)
        if updates is not None:
            overlap = sorted(set(updates) & set(key))
            if overlap:
                raise WritePlanError(
                    f"update_columns {overlap} are part of the conflict_target; "
                    "list only non-key columns in update_columns"
                )
        return cls(
            write_mode=mode,
            conflict_target=key,
            on_conflict=_choice("on_conflict", on_conflict, OnConflict, "update"),
            update_columns=updates,
            duplicates=_choice("duplicates", duplicates, Duplicates, "error"),
            schema_evolution=_choice(
                "schema_evolution", schema_evolution, SchemaEvolution, "add_columns"
            ),
        )


@dataclass(frozen=True)
class TimeWindowSlice:
    """The rows whose ``column`` lies in [start, end): a time-window partition."""

    column: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class KeySlice:
    """The rows whose ``column`` is one of ``keys``: static or dynamic partitions."""

    column: str
    keys: tuple[str, ...]


PartitionSlice = TimeWindowSlice | KeySlice


@dataclass(frozen=True)
class WriteResult:
    """What a write did. ``rows_unchanged`` counts staged rows whose stored row was left
    as it was (equal already, or ``on_conflict="nothing"``)."""

    rows_staged: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_deleted: int
    row_count: int
    partition_row_count: int | None
    columns: tuple[tuple[str, str], ...] = field(default=())


async def copy_upsert(
    conn: AsyncConnection,
    frame: pd.DataFrame,
    *,
    schema: str,
    table: str,
    plan: WritePlan,
    partition: Sequence[PartitionSlice] = (),
    progress: Callable[[str], None] = lambda message: None,
    retries: int = 3,
) -> WriteResult:
    """Write ``frame`` into ``schema.table`` as ``plan`` says, atomically.

    Creates the schema and the table (typed from the frame, with a primary key on the
    conflict target) when they do not exist. When ``conn`` is already in a transaction the
    write joins it as a savepoint; otherwise it commits on its own.

    Args:
        conn: a SQLAlchemy async connection on the asyncpg driver.
        frame: the rows to write; its column labels are the column names.
        schema: the target table's schema.
        table: the target table.
        plan: how to write; see :class:`WritePlan`.
        partition: for a partitioned asset, the slice of the table the frame stands for.
            Every row must lie in it; ``replace`` replaces only that slice.
        progress: called with a line of text every few seconds while rows are copied, and
            at the start and end of the merge (the IO manager logs them to the run).
        retries: how many times a write that lost a deadlock or a serialization conflict
            is run again (after 0.2 s, 0.4 s, 0.8 s, ...) before it fails.

    Raises:
        WritePlanError, FrameError, TableMismatchError, DatabaseError: nothing was written.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(
            f"expected a pandas DataFrame, got {type(frame).__name__}: return a DataFrame "
            "from the asset"
        )
    target = _sql.qualified(schema, table)
    frame = _checked_frame(frame, plan, partition)
    encoded = prepare_frame(frame)
    driver = await _driver_connection(conn)
    for attempt in range(retries + 1):
        try:
            async with driver.transaction(), _utc_session(driver):
                writer = _Writer(driver, encoded, schema, table, target, plan, partition, progress)
                return await writer.write()
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
            if attempt == retries:
                conflict = (
                    "deadlock"
                    if isinstance(exc, asyncpg.DeadlockDetectedError)
                    else "serialization conflict"
                )
                raise DatabaseError(
                    f"writing {schema}.{table} failed {retries + 1} times on a {conflict} with "
                    f"another session ({exc}); nothing was written: find the other writer, or "
                    "raise the retries (inside a transaction of your own at REPEATABLE READ or "
                    "SERIALIZABLE, retry that whole transaction instead)"
                ) from exc
            progress(f"retrying the write to {schema}.{table} after: {exc}")
            await asyncio.sleep(0.2 * 2**attempt)
        except Exception as exc:
            raise _write_error(exc, driver, f"{schema}.{table}", plan) from exc
    raise AssertionError("unreachable")


def _write_error(
    exc: Exception, driver: asyncpg.Connection, name: str, plan: WritePlan
) -> Exception:
    """The error a failed write raises: ours as it is, the driver's translated."""
    if isinstance(exc, CopyUpsertError):
        return exc
    if isinstance(exc, asyncpg.InterfaceError) and not driver.is_closed():
        return DatabaseError(f"the driver refused the write to {name}: {exc}")
    if isinstance(exc, (*_CONNECTION_LOST, asyncpg.InterfaceError)):
        return DatabaseError(
            f"lost the connection to PostgreSQL while writing {name} ({exc}); "
            "nothing was written: check that the server is up, then run again"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return _database_error(exc, name, plan)
    if isinstance(exc, TimeoutError):
        return DatabaseError(
            f"writing {name} timed out (the resource's command_timeout); nothing was "
            "written: look for locks or a slow server, or raise the timeout"
        )
    return exc


async def read_table(
    conn: AsyncConnection,
    *,
    schema: str,
    table: str,
    columns: Sequence[str] | None = None,
    partition: Sequence[PartitionSlice] = (),
) -> pd.DataFrame:
    """Read ``schema.table`` (only ``columns``, only the ``partition`` slice) into a DataFrame.

    The rows travel as ``COPY (SELECT ...) TO STDOUT`` and are decoded by Arrow with the
    table's column types, so integers stay integers (nullable ones as ``Int64``) and
    ``timestamptz`` comes back tz-aware in UTC.

    Raises:
        TableMismatchError: the table or a requested column does not exist.
    """
    driver = await _driver_connection(conn)
    async with driver.transaction(readonly=True), _utc_session(driver):
        stored = await _table_columns(driver, _sql.qualified(schema, table))
        if not stored:
            raise TableMismatchError(
                f"table {schema}.{table} does not exist: materialize the asset that writes it first"
            )
        names = [columns] if isinstance(columns, str) else list(columns or stored)
        missing = [name for name in names if name not in stored]
        if missing:
            raise TableMismatchError(
                f"columns {missing} are not in table {schema}.{table}, which has {list(stored)}"
            )
        where, params = _partition_filter(partition, {n: c.pg_type for n, c in stored.items()})
        selected = ", ".join(_sql.read_expression(n, stored[n].pg_type) for n in names)
        query = f"SELECT {selected} FROM {_sql.qualified(schema, table)} AS t"
        if where:
            query += f" WHERE {where}"
        decoder = CsvDecoder({n: (stored[n].pg_type, stored[n].not_null) for n in names})
        try:
            status = await driver.copy_from_query(query, *params, output=decoder.feed, format="csv")
        except BaseException:
            await decoder.close()
            raise
    return await decoder.frame(rows=_affected(status))


# ---- checks that need no database ---------------------------------------------------------------


def _checked_frame(
    frame: pd.DataFrame, plan: WritePlan, partition: Sequence[PartitionSlice]
) -> pd.DataFrame:
    """Validate the frame against the plan; return it with string labels. Duplicate keys are
    found on the server (see ``_Writer._refuse_repeated_keys``), so that no index of the keys
    is held in memory."""
    names = [str(label) for label in frame.columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameError(f"column names {repeated} appear more than once: rename them")
    for name in names:
        _sql.quote_ident(name)
    if names != list(frame.columns):
        frame = frame.set_axis(names, axis="columns")

    _require_columns(names, "conflict_target", plan.conflict_target)
    _require_columns(names, "update_columns", plan.update_columns or ())
    _require_columns(names, "partition_expr", [s.column for s in partition])

    key = list(plan.conflict_target)
    for column in key:
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise FrameError(
                f"conflict_target column {column!r} has {nulls} NULL value(s); a key cannot be "
                "NULL: fill or drop those rows"
            )
    if plan.conflict_target and plan.duplicates != "error" and ROW_NUMBER_COLUMN in names:
        raise FrameError(
            f"column name {ROW_NUMBER_COLUMN!r} is reserved for resolving duplicate keys: "
            "rename the column"
        )
    return frame


def _require_columns(names: Sequence[str], option: str, wanted: Iterable[str]) -> None:
    missing = [column for column in wanted if column not in names]
    if missing:
        raise WritePlanError(
            f"{option} names column(s) {missing} that the frame does not have; "
            f"the frame's columns are {list(names)}"
        )


def _names(option: str, value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise WritePlanError(
        f"{option} must be a column name or a non-empty list of column names, got {value!r}"
    )


def _choice(option: str, value: str | None, allowed: Any, default: str) -> Any:
    choices = get_args(allowed)
    if value is None:
        return default
    if value not in choices:
        raise WritePlanError(
            f"unknown {option} {value!r}: use one of {', '.join(repr(c) for c in choices)}"
        )
    return value


# ---- the write ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    pg_type: str
    not_null: bool


# (frame type, table type) pairs stored without changing any value: the table's type holds
# every value of the frame's, or (integers, text into varchar) a value that does not fit
# fails loudly, naming its column, instead of changing.
_SAFE_CASTS = {
    ("bigint", "integer"),
    ("bigint", "smallint"),
    ("integer", "smallint"),
    ("smallint", "integer"),
    ("smallint", "bigint"),
    ("integer", "bigint"),
    ("smallint", "numeric"),
    ("integer", "numeric"),
    ("bigint", "numeric"),
    ("smallint", "real"),
    ("smallint", "double precision"),
    ("integer", "double precision"),
    ("real", "double precision"),
    ("text", "character varying"),
}

_INTEGERS = {"smallint", "integer", "bigint"}

_RELATION_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "p": "a partitioned table (native partitioning is not supported yet)",
    "i": "an index",
    "S": "a sequence",
    "c": "a composite type",
}


class _Writer:
    """One write, inside the transaction that ``copy_upsert`` opened."""

    def __init__(
        self,
        driver: asyncpg.Connection,
        encoded: ArrowFrame,
        schema: str,
        table: str,
        target: str,
        plan: WritePlan,
        partition: Sequence[PartitionSlice],
        progress: Callable[[str], None],
    ) -> None:
        self.driver = driver
        self.encoded = encoded
        self.schema = schema
        self.table = table
        self.progress = progress
        self.name = f"{schema}.{table}"
        self.target = target
        self.plan = plan
        self.partition = partition
        self.columns = list(encoded.pg_types)
        self.stage = ""  # named by _stage, after the shape of what it holds
        self.length_limited: dict[str, int] = {}  # set by write, from _check_types

    async def write(self) -> WriteResult:
        stored = await self._ensure_table()
        stored = await self._add_missing_columns(stored)
        self.length_limited = await self._check_types(stored)
        await self._check_key_is_unique()
        where, params = _partition_filter(self.partition, {c: stored[c].pg_type for c in stored})
        total = len(self.encoded.frame)
        deleted = inserted = updated = 0
        # An empty frame changes nothing, whatever the mode: an upstream that returned no
        # rows must not empty the table.
        if total:
            empty = not await self.driver.fetchval(f"SELECT EXISTS (SELECT FROM {self.target})")
            direct = await self._copy_into_target(stored, empty)
            if direct is not None:
                deleted, inserted = direct
            else:
                total, deleted, inserted, updated = await self._write_staged(
                    stored, empty, where, params
                )

        row_count = int(await self.driver.fetchval(f"SELECT count(*) FROM {self.target}"))
        partition_row_count = None
        if where:
            partition_row_count = int(
                await self.driver.fetchval(
                    f"SELECT count(*) FROM {self.target} AS t WHERE {where}", *params
                )
            )
        final = await _table_columns(self.driver, self.target)
        return WriteResult(
            rows_staged=total,
            rows_inserted=inserted,
            rows_updated=updated,
            rows_unchanged=total - inserted - updated,
            rows_deleted=deleted,
            row_count=row_count,
            partition_row_count=partition_row_count,
            columns=tuple((name, column.pg_type) for name, column in final.items()),
        )

    async def _write_staged(
        self, stored: Mapping[str, _Column], empty: bool, where: str | None, params: list[Any]
    ) -> tuple[int, int, int, int]:
        """Stage the frame, check it, and apply it; return (staged rows after duplicates
        were resolved, deleted, inserted, updated)."""
        total = await self._stage(stored)
        # Resolve repeated keys before checking rows, so that the copies dropped are not
        # checked. Refusing them can wait for the merge, which fails on them anyway.
        if self._numbered:
            total = await self._keep_one_per_key(total)
        await self._check_lengths()
        await self._check_rows_in_partition(where, params)
        await self._check_keys_in_partition(where, params)
        self.progress(f"merging {total:,} staged rows into {self.name}")
        started = time.monotonic()
        deleted = updated = 0
        try:
            inserted = await self._insert_into_empty(empty)
            if inserted is None:
                # A savepoint, so that a failure can be diagnosed column by column.
                async with self.driver.transaction():
                    deleted, inserted, updated = await self._merge(where, params)
        except (
            asyncpg.DataError,
            asyncpg.DatatypeMismatchError,
            asyncpg.UndefinedFunctionError,
        ) as exc:
            raise await self._diagnose(stored, exc) from exc
        self.progress(f"merged into {self.name} in {time.monotonic() - started:.1f} s")
        return total, deleted, inserted, updated

    async def _copy_into_target(
        self, stored: Mapping[str, _Column], empty: bool
    ) -> tuple[int, int] | None:
        """COPY straight into the target when no row can conflict and no order helps: the
        plan has no key (an append, or a replace of the whole table), or the table is empty
        and the frame already in key order. As fast as PostgreSQL loads a file. Returns
        (deleted, inserted), or None to take the staged path.

        Partitioned writes always stage: their rows are checked against the partition
        before anything reaches the table."""
        if self.partition:
            return None
        key = self.plan.conflict_target
        keyless = not key
        # A keyed append may have no unique index to refuse a repeated key: it stages.
        in_order = empty and self.plan.write_mode != "append" and self._in_key_order()
        if not (keyless or in_order):
            return None
        if not await self._types_match(stored):
            return None
        deleted = 0
        if self.plan.write_mode == "replace" and not empty:
            deleted = _affected(await self.driver.execute(_sql.delete_all(self.target, None)))
        try:
            async with self.driver.transaction():
                inserted = await self._copy(self.schema, self.table)
        except asyncpg.UniqueViolationError:
            if keyless:
                raise
            # A repeated key in the frame, or another writer filled the table since we
            # looked: stage and merge instead.
            return None
        return deleted, inserted

    def _in_key_order(self) -> bool:
        """Whether the frame's rows are already ordered by a one-column key (a scan, no
        copy)."""
        key = self.plan.conflict_target
        return len(key) == 1 and bool(self.encoded.frame[key[0]].is_monotonic_increasing)

    async def _insert_into_empty(self, empty: bool) -> int | None:
        """Fill an empty keyed table from the stage in key order, with a plain INSERT: the
        key's B-tree then grows at its right edge, about twice as fast as a COPY in the
        frame's order or an INSERT ... ON CONFLICT (measured at 1M and 5M rows). Returns the
        rows inserted, or None when the table is not empty, or a key collides (a repeated
        key in the frame, or another writer's row): the merge then decides."""
        key = self.plan.conflict_target
        if not (empty and key) or self.plan.write_mode == "append":
            return None
        try:
            async with self.driver.transaction():
                status = await self.driver.execute(
                    _sql.insert_in_key_order(self.stage, self.target, self.columns, key)
                )
        except asyncpg.UniqueViolationError:
            return None
        return _affected(status)

    async def _types_match(self, stored: Mapping[str, _Column]) -> bool:
        """Binary COPY data must be of exactly the column's type; NULL-only columns fit
        any."""
        typed = [c for c in self.columns if c not in self.encoded.null_columns]
        mismatched = await self.driver.fetchval(
            """
            SELECT count(*) FROM unnest($1::text[], $2::text[]) AS u(frame_type, table_type)
            WHERE to_regtype(frame_type) IS DISTINCT FROM to_regtype(table_type)
            """,
            [self.encoded.pg_types[c] for c in typed],
            [stored[c].pg_type for c in typed],
        )
        return int(mismatched) == 0

    async def _copy(self, schema: str | None, table: str, *, numbered: bool = False) -> int:
        """Stream the frame into a table with binary COPY, reporting progress every few
        seconds. asyncpg quotes the names itself."""
        total = len(self.encoded.frame)
        announce = _Throttle(PROGRESS_EVERY_SECONDS)

        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            for rows, chunk in self.encoded.binary_copy_chunks(numbered=numbered):
                sent += rows
                if announce():
                    self.progress(f"copied {sent:,} of {total:,} rows for {self.name}")
                yield chunk

        copying = asyncio.ensure_future(
            self.driver.copy_to_table(
                table,
                schema_name=schema,
                source=chunks(),
                columns=[*self.columns, ROW_NUMBER_COLUMN] if numbered else self.columns,
                format="binary",
            )
        )
        # asyncpg's copy_to_table, fed by an async iterator, may never return once the server
        # has closed the connection mid-COPY: watch the connection while it runs.
        while True:
            done, _ = await asyncio.wait({copying}, timeout=CONNECTION_CHECK_SECONDS)
            if done:
                return _affected(copying.result())
            if self.driver.is_closed():
                copying.cancel()
                raise asyncpg.ConnectionDoesNotExistError("the connection closed during COPY")

    async def _merge(self, where: str | None, params: Sequence[Any]) -> tuple[int, int, int]:
        """Apply the staged rows; return (deleted, inserted, updated)."""
        key = self.plan.conflict_target
        deleted = 0
        if self.plan.write_mode == "replace":
            sql = (
                _sql.delete_missing_from_target(self.stage, self.target, key, where)
                if key
                else _sql.delete_all(self.target, where)
            )
            deleted = _affected(await self.driver.execute(sql, *params))
        if key and self.plan.write_mode != "append":
            inserted, updated = await self._upsert()
        else:
            if key and self.plan.duplicates == "error":
                # A keyed append may have no unique index to refuse a repeated key.
                await self._refuse_repeated_keys()
            inserted, updated = await self._written(
                _sql.insert_on_conflict(self.stage, self.target, self.columns, (), None, ())
            )
        return deleted, inserted, updated

    async def _upsert(self) -> tuple[int, int]:
        """Insert or update the staged rows by key; return (inserted, updated). Refuses a
        key staged more than once when the plan says so."""
        refuse = self.plan.duplicates == "error"
        # What both statements are built from.
        upsert = (
            self.stage,
            self.target,
            self.columns,
            self.plan.conflict_target,
            self.plan.on_conflict,
            self._update_columns(),
        )
        if self.driver.get_server_version().major >= MERGE_RETURNING_SINCE:
            try:
                async with self.driver.transaction():
                    return await self._written(_sql.merge(*upsert, refuse_repeated=refuse))
            except (
                asyncpg.CardinalityViolationError,
                asyncpg.UniqueViolationError,
                asyncpg.FeatureNotSupportedError,
            ):
                # A key staged twice (refused below); a new key that another writer inserted
                # since the MERGE began, which INSERT ... ON CONFLICT waits for and updates;
                # or a table with rules, which MERGE does not support.
                pass
        if refuse:
            await self._refuse_repeated_keys()
        return await self._written(_sql.insert_on_conflict(*upsert))

    async def _written(self, sql: str) -> tuple[int, int]:
        """Run a statement built by ``_sql.merge`` or ``_sql.insert_on_conflict``; return
        (inserted, updated)."""
        row = await self.driver.fetchrow(sql)
        return int(row["inserted"]), int(row["updated"])

    def _update_columns(self) -> tuple[str, ...]:
        if self.plan.update_columns is not None:
            return self.plan.update_columns
        return tuple(c for c in self.columns if c not in self.plan.conflict_target)

    async def _ensure_table(self) -> dict[str, _Column]:
        stored = await self._existing_table()
        if stored:
            return stored
        # Parallel steps may create the same schema or tables in it at once; IF NOT EXISTS
        # alone still races in the catalog (unique violation), so creators take turns.
        await self.driver.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"dagster-copy-upsert:{self.schema}",
        )
        if not await self.driver.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", self.schema
        ):
            await self.driver.execute(f"CREATE SCHEMA {_sql.quote_ident(self.schema)}")
        await self.driver.execute(
            _sql.create_table(
                self.target, list(self.encoded.pg_types.items()), self.plan.conflict_target
            )
        )
        return await self._existing_table()

    async def _existing_table(self) -> dict[str, _Column]:
        kind = await self.driver.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", self.target
        )
        if kind is not None and kind != "r":
            description = _RELATION_KINDS.get(kind, f"a relation of kind {kind!r}")
            raise TableMismatchError(
                f"{self.name} is {description}, not a table: write to a plain table, or "
                "set the metadata key 'table' to another name"
            )
        return await _table_columns(self.driver, self.target)

    async def _add_missing_columns(self, stored: dict[str, _Column]) -> dict[str, _Column]:
        missing = [c for c in self.columns if c not in stored]
        if not missing:
            return stored
        if self.plan.schema_evolution == "strict":
            raise TableMismatchError(
                f"columns {missing} of the frame are not in table {self.name} "
                f"(which has {list(stored)}) and schema_evolution is 'strict': add them to "
                "the table, drop them from the frame, or set schema_evolution to 'add_columns'"
            )
        # ALTER TABLE locks the table; a second writer adding the same column waits, then
        # finds it there (IF NOT EXISTS).
        for column in missing:
            await self.driver.execute(
                f"ALTER TABLE {self.target} ADD COLUMN IF NOT EXISTS "
                f"{_sql.quote_ident(column)} {self.encoded.pg_types[column]}"
            )
        self.progress(f"added columns {missing} to {self.name}")
        return await _table_columns(self.driver, self.target)

    async def _check_types(self, stored: Mapping[str, _Column]) -> dict[str, int]:
        """Refuse a frame column whose values the table's column would change (a float into
        an integer, a zoned timestamp into a naive one, a decimal into numeric(10,2), text
        into char(4)): no value changes silently. Returns the varchar(n) columns written
        from text, with their n, whose lengths are checked once staged."""
        typed = [c for c in self.columns if c not in self.encoded.null_columns]
        rows = await self.driver.fetch(
            """
            SELECT format_type(to_regtype(frame_type), NULL) AS frame_type,
                   format_type(coalesce(nullif(b.typbasetype, 0), b.oid), NULL) AS table_type,
                   -- numeric(10,2), timestamp(0), varchar(3), or a domain over one of them
                   u.table_type LIKE '%(%' OR b.typtypmod <> -1 AS modified,
                   b.typtype = 'd' AS domain
            FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(frame_type, table_type, i)
            JOIN pg_type AS b ON b.oid = to_regtype(u.table_type)
            ORDER BY u.i
            """,
            [self.encoded.pg_types[c] for c in typed],
            [stored[c].pg_type for c in typed],
        )
        length_limited: dict[str, int] = {}
        for column, row in zip(typed, rows, strict=True):
            frame_type, table_type = row["frame_type"], row["table_type"]
            fits = frame_type == table_type or (frame_type, table_type) in _SAFE_CASTS
            if fits and row["modified"]:
                # A type modifier rounds (numeric(10,2), timestamp(0)) or trims; only whole
                # numbers into numeric(p,s), and text into varchar(n) checked for length
                # before the merge, keep every value as it is.
                varchar = table_type == "character varying" and not row["domain"]
                fits = (table_type == "numeric" and frame_type in _INTEGERS) or varchar
                if varchar:
                    length_limited[column] = int(stored[column].pg_type.split("(")[1][:-1])
            if not fits:
                raise TableMismatchError(
                    f"column {column!r} of table {self.name} is {stored[column].pg_type}, but "
                    f"the frame's values are {frame_type}, which it would not store unchanged: "
                    "convert the column in the frame, or alter the table"
                )
        return length_limited

    async def _check_lengths(self) -> None:
        """varchar(n) trims trailing spaces beyond n without a word: refuse longer text."""
        for column, limit in self.length_limited.items():
            too_long = await self.driver.fetchval(
                f"SELECT {_sql.quote_ident(column)} FROM {_sql.quote_ident(self.stage)} "
                f"WHERE char_length({_sql.quote_ident(column)}) > $1 LIMIT 1",
                limit,
            )
            if too_long is not None:
                raise TableMismatchError(
                    f"column {column!r} of table {self.name} holds at most {limit} characters, "
                    f"but the frame has {too_long[:40]!r}...: shorten the value, or widen the "
                    "column"
                )

    async def _check_key_is_unique(self) -> None:
        key = set(self.plan.conflict_target)
        if not key or self.plan.write_mode == "append":
            return
        indexes = await self.driver.fetch(
            """
            SELECT ARRAY(
                SELECT a.attname FROM unnest(i.indkey) AS k(attnum)
                JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            ) AS columns
            FROM pg_index AS i
            WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate
              AND i.indpred IS NULL AND i.indexprs IS NULL
            """,
            self.target,
        )
        if not any(set(row["columns"]) == key for row in indexes):
            columns = _sql.column_list(sorted(key))
            raise TableMismatchError(
                f"table {self.name} has no unique index or constraint on exactly "
                f"{sorted(key)}, which ON CONFLICT needs: add one (ALTER TABLE {self.target} "
                f"ADD UNIQUE ({columns})) or change conflict_target"
            )

    async def _stage(self, stored: Mapping[str, _Column]) -> int:
        """COPY the frame into the session's staging table for its shape; return the row
        count."""
        # A column that is NULL in every row carries no type of its own; its NULLs go into
        # the table's column as they are.
        types = {
            column: stored[column].pg_type if column in self.encoded.null_columns else pg_type
            for column, pg_type in self.encoded.pg_types.items()
        }
        # One staging table per table and shape, kept for the session (ON COMMIT DELETE ROWS):
        # creating one per write would leave dead rows in pg_class and pg_attribute at every
        # write, faster than autovacuum clears them in a busy process.
        columns = list(types.items())
        if self._numbered:
            columns.append((ROW_NUMBER_COLUMN, "bigint"))
        shape = repr((self.name, sorted(columns)))
        self.stage = f"copy_upsert_stage_{hashlib.sha256(shape.encode()).hexdigest()[:16]}"
        stage = _sql.quote_ident(self.stage)
        await self.driver.execute(_sql.create_stage(self.stage, columns))
        # Rows are left only by an earlier write in the same, still open, outer transaction.
        await self.driver.execute(f"DELETE FROM {stage}")
        rows = await self._copy(None, self.stage, numbered=self._numbered)
        if rows >= ANALYZE_FROM_ROWS:
            # Without fresh statistics the planner probes the target's index row by row
            # for a large stage; with them it hashes.
            await self.driver.execute(f"ANALYZE {stage}")
        return rows

    @property
    def _numbered(self) -> bool:
        """Whether staged rows carry their position in the frame, to keep the first or last
        of a repeated key."""
        return bool(self.plan.conflict_target) and self.plan.duplicates != "error"

    async def _refuse_repeated_keys(self) -> None:
        """Refuse a key staged more than once, naming one. Checked on the server: an index
        of the keys held in the client would grow with the frame."""
        key = self.plan.conflict_target
        example = await self.driver.fetchrow(_sql.repeated_key(self.stage, key))
        if example is None:
            return
        keys, rows = await self.driver.fetchrow(_sql.repeated_key_totals(self.stage, key))
        raise FrameError(
            f"{keys} conflict_target key(s) on {list(key)} appear more than once "
            f"({rows} rows), e.g. {dict(example)}; drop the duplicates or set the "
            "metadata key 'duplicates' to 'keep_last' or 'keep_first'"
        )

    async def _keep_one_per_key(self, staged: int) -> int:
        """Delete every staged copy of a key but the first or last, as the plan says; return
        the staged row count that remains."""
        deleted = await self.driver.execute(
            _sql.delete_repeated_keys(
                self.stage,
                self.plan.conflict_target,
                ROW_NUMBER_COLUMN,
                keep_last=self.plan.duplicates == "keep_last",
            )
        )
        return staged - _affected(deleted)

    async def _diagnose(
        self, stored: Mapping[str, _Column], exc: asyncpg.PostgresError
    ) -> CopyUpsertError:
        """Find the column whose staged values the table's type cannot take, by storing
        each such column alone into a scratch column of the table's type."""
        staged = await _table_columns(self.driver, _sql.quote_ident(self.stage))
        for column in self.columns:
            frame_type, table_type = staged[column].pg_type, stored[column].pg_type
            if frame_type == table_type:
                continue
            probe = self.driver.transaction()
            await probe.start()
            try:
                await self.driver.execute(
                    f"CREATE TEMP TABLE copy_upsert_probe (value {table_type}) ON COMMIT DROP"
                )
                await self.driver.execute(
                    f"INSERT INTO copy_upsert_probe (value) SELECT {_sql.quote_ident(column)} "
                    f"FROM {_sql.quote_ident(self.stage)}"
                )
            except asyncpg.PostgresError as failure:
                return TableMismatchError(
                    f"column {column!r}: table {self.name} stores {table_type}, but the frame's "
                    f"values are {frame_type} and cannot be stored there ({failure}); convert "
                    "the column in the frame, or alter the table"
                )
            finally:
                await probe.rollback()
        return _database_error(exc, self.name, self.plan)

    async def _check_rows_in_partition(self, where: str | None, params: Sequence[Any]) -> None:
        if not where:
            return
        columns = [s.column for s in self.partition]
        outside = await self.driver.fetchrow(
            f"SELECT {_sql.column_list(columns, 't.')} FROM {_sql.quote_ident(self.stage)} AS t "
            f"WHERE ({where}) IS NOT TRUE LIMIT 1",
            *params,
        )
        if outside is not None:
            raise FrameError(
                f"the frame has rows outside the partition being written, e.g. "
                f"{dict(outside)}; return only the partition's rows (partition_expr "
                f"{columns})"
            )

    async def _check_keys_in_partition(self, where: str | None, params: Sequence[Any]) -> None:
        """A key stored in another partition would be moved by the merge, changing a
        partition this write does not own."""
        key = self.plan.conflict_target
        if not where or not key or self.plan.write_mode == "append":
            return
        elsewhere = await self.driver.fetchrow(
            f"SELECT {_sql.column_list(key, 's.')} FROM {_sql.quote_ident(self.stage)} AS s "
            f"JOIN {self.target} AS t ON {_sql.key_match(key, 's', 't')} "
            f"WHERE ({where}) IS NOT TRUE LIMIT 1",
            *params,
        )
        if elsewhere is not None:
            raise FrameError(
                f"key {dict(elsewhere)} is already stored in another partition of {self.name}; "
                "a partition's write cannot move rows between partitions: add the "
                "partition_expr column to conflict_target"
            )


_TIME_TYPES = {"date", "timestamp without time zone", "timestamp with time zone"}


def _partition_filter(
    partition: Sequence[PartitionSlice], types: Mapping[str, str]
) -> tuple[str | None, list[Any]]:
    """SQL (on alias ``t``) selecting the partition's rows, and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for part in partition:
        if part.column not in types:
            raise TableMismatchError(f"partition_expr column {part.column!r} is not in the table")
        pg_type = types[part.column]
        if isinstance(part, TimeWindowSlice):
            if pg_type not in _TIME_TYPES:
                raise WritePlanError(
                    f"partition_expr column {part.column!r} is {pg_type}; a time-window "
                    "partition needs a date or timestamp column"
                )
            clauses.append(_sql.time_window(part.column, pg_type, len(params) + 1))
            params += [part.start.isoformat(), part.end.isoformat()]
        else:
            clauses.append(_sql.key_set(part.column, pg_type, len(params) + 1))
            params.append(list(part.keys))
    return (" AND ".join(f"({c})" for c in clauses) or None), params


async def _table_columns(driver: asyncpg.Connection, relation: str) -> dict[str, _Column]:
    """Columns of a relation (a quoted, possibly qualified name); empty if there is none."""
    rows = await driver.fetch(
        """
        SELECT attname AS name, format_type(atttypid, atttypmod) AS pg_type,
               attnotnull AS not_null
        FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
        ORDER BY attnum
        """,
        relation,
    )
    return {row["name"]: _Column(row["pg_type"], row["not_null"]) for row in rows}


@asynccontextmanager
async def _utc_session(driver: asyncpg.Connection) -> AsyncIterator[None]:
    """Run in UTC, so that converting between timestamp and timestamptz never depends on
    the server's or the role's TimeZone; restore the caller's setting afterwards."""
    previous = await driver.fetchval("SELECT current_setting('TimeZone')")
    await driver.execute("SET LOCAL TimeZone = 'UTC'")
    yield
    await driver.execute("SELECT set_config('TimeZone', $1, true)", previous)


async def _driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection behind a SQLAlchemy async connection (SQLAlchemy's documented
    way: ``(await conn.get_raw_connection()).driver_connection``)."""
    if conn.in_transaction():
        # SQLAlchemy begins the driver's transaction at its first statement, not at begin():
        # run one, so that our transaction nests in the caller's as a savepoint.
        await conn.execute(text("SELECT 1"))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise WritePlanError(
            f"copy_upsert needs the asyncpg driver, got {type(driver).__name__}: "
            "use a postgresql+asyncpg:// URL"
        )
    return driver


class _Throttle:
    """True at most once per ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def _affected(status: str) -> int:
    """Row count of a command tag such as ``INSERT 0 5``, ``DELETE 3`` or ``COPY 10``."""
    return int(status.rsplit(" ", 1)[-1])


def _database_error(exc: asyncpg.PostgresError, name: str, plan: WritePlan) -> CopyUpsertError:
    detail = str(exc)
    column = getattr(exc, "column_name", None)
    if isinstance(exc, asyncpg.UniqueViolationError):
        constraint = getattr(exc, "constraint_name", None)
        hint = (
            "use write_mode 'upsert' with a conflict_target to update existing rows"
            if plan.write_mode == "append"
            else "the frame's rows collide on another unique constraint than conflict_target"
        )
        return FrameError(
            f"unique constraint {constraint!r} of {name} refused a row ({detail}); {hint}"
        )
    if isinstance(exc, asyncpg.NotNullViolationError):
        return TableMismatchError(
            f"column {column!r} of table {name} is NOT NULL but would be NULL ({detail}); "
            "include it in the frame with values, or give it a default"
        )
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return DatabaseError(
            f"the database role may not write {name} ({detail}): grant it that privilege, or "
            "create the schema and table up front (see the README's 'Privileges')"
        )
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return DatabaseError(
            f"waited longer than lock_timeout for a lock on {name} held by another session "
            f"({detail}); nothing was written: find that session (pg_locks), or raise "
            "the resource's lock_timeout"
        )
    if isinstance(exc, asyncpg.QueryCanceledError):
        return DatabaseError(
            f"a statement writing {name} ran longer than statement_timeout ({detail}); nothing "
            "was written: raise the resource's statement_timeout, or look for locks"
        )
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        where = f"column {column!r}: " if column else ""
        return TableMismatchError(f"{where}table {name} refused the frame's values: {detail}")
    return DatabaseError(f"PostgreSQL refused the write to {name}: {detail}")
