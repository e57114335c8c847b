"""Carries out the steps :mod:`resources.plan` chose, inside the caller's transaction. It
decides nothing: each step is one small function, and what it did comes back as counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

import asyncpg

from . import checks, claims, sql, steps
from .errors import TableMismatchError
from .frame import ROW_NUMBER_COLUMN, PreparedFrame
from .options import WritePlan

# How often a COPY in progress checks that its connection is still open.
CONNECTION_CHECK_SECONDS = 0.5
# How often a long COPY reports how far it got.
PROGRESS_EVERY_SECONDS = 5.0
# Lock keys of the creators of a schema or a table (quoted), and of a table's partitions.
_CREATE_LOCK = "dagster-copy-upsert:{}"
_PARTITIONS_LOCK = "dagster-copy-upsert:partitions:{}"

# The SQLSTATE condition names a steps.Attempt may fall back on.
CONDITIONS: dict[str, type[asyncpg.PostgresError]] = {
    "unique_violation": asyncpg.UniqueViolationError,
    "cardinality_violation": asyncpg.CardinalityViolationError,
    "feature_not_supported": asyncpg.FeatureNotSupportedError,
}

# A cast the merge runs refused a staged value: find the column (see checks.diagnose).
_CAST_FAILURES = (
    asyncpg.DataError,
    asyncpg.DatatypeMismatchError,
    asyncpg.UndefinedFunctionError,
    asyncpg.CheckViolationError,  # a domain's CHECK
)


@dataclass(frozen=True)
class Counts:
    """Rows a step staged (negative: dropped from the stage), inserted, updated, deleted."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    # Whether a step created the table (in this write's transaction, so no one else sees it).
    created: bool = False

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.staged + other.staged,
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.created or other.created,
        )


@dataclass(frozen=True)
class Write:
    """One write's fixed inputs: where it goes, what it writes, and how it is planned."""

    driver: asyncpg.Connection
    schema: str
    table: str
    frame: PreparedFrame
    options: WritePlan
    planned: steps.Steps
    progress: Callable[[str], None]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def target(self) -> str:
        return sql.qualified(self.schema, self.table)

    @property
    def source(self) -> str:
        """The stage as the table's rows: a FROM item with the planned casts (and the row
        numbers, when the stage has them)."""
        casts = {column: table_type for column, _, table_type in self.planned.casts}
        columns = (*self.frame.columns, *((ROW_NUMBER_COLUMN,) if self.planned.numbered else ()))
        return sql.staged(self.planned.stage, columns, casts)


async def _create_table(write: Write, step: steps.CreateTable) -> Counts:
    """Create the schema if missing, then the table (and its partition index), unless
    another writer created it first. Parallel steps may create the same schema or table at
    once; IF NOT EXISTS alone still races in the catalog (a unique violation), so creators
    of one schema, and of one table, take turns until they commit (creators of other tables
    in an existing schema do not wait for each other)."""
    if step.create_schema:
        await _take_turns(write.driver, _CREATE_LOCK.format(sql.quote_ident(step.schema)))
    await _take_turns(write.driver, _CREATE_LOCK.format(write.target))
    if await write.driver.fetchval("SELECT to_regclass($1) IS NOT NULL", write.target):
        return Counts()
    key = () if step.primary_key_after_rows else step.primary_key
    create = sql.create_table(write.target, step.columns, key, step.partition_by)
    if step.create_schema:
        create = f"CREATE SCHEMA IF NOT EXISTS {sql.quote_ident(step.schema)}; {create}"
    if step.index is not None:
        name, columns = step.index
        create += "; " + sql.create_index(name, write.target, columns)
    await write.driver.execute(create)
    return Counts(created=True)


async def _add_primary_key(write: Write) -> None:
    """The key's index, built from the rows; a key in two rows is refused by name."""
    key = write.options.conflict_target
    try:
        async with write.driver.transaction():
            await write.driver.execute(sql.add_primary_key(write.target, key))
    except asyncpg.UniqueViolationError:
        await checks.refuse_repeated_keys(write, source=write.target)
        raise


async def _create_partitions(write: Write, step: steps.CreatePartitions) -> None:
    """Create and attach each missing child table, in turn with other creators of this
    table's partitions (until the commit: a child another writer made meanwhile is then
    seen, and left as it is)."""
    driver = write.driver
    if not await _missing_partitions(write, step):
        return
    await _take_turns(driver, _PARTITIONS_LOCK.format(write.name))
    missing = await _missing_partitions(write, step)
    for child in step.children:
        if child.name not in missing:
            continue
        target = sql.qualified(write.schema, child.name)
        parent = sql.qualified(write.schema, child.parent)
        await driver.execute(sql.create_partition(target, parent, child.partition_by))
        await _execute_with_literals(
            driver, sql.attach_partition(parent, target, child.strategy), child.values
        )
        write.progress(f"created partition {write.schema}.{child.name} of {write.name}")


async def _missing_partitions(write: Write, step: steps.CreatePartitions) -> set[str]:
    """The children that do not exist; one whose name another relation has fails."""
    names = [c.name for c in step.children]
    parents = [c.parent for c in step.children]
    states = await write.driver.fetch(sql.partition_states(), write.schema, names, parents)
    for name, taken, attached in states:
        if taken and not attached:
            raise TableMismatchError(
                f"the partition of {write.name} for these rows would be table "
                f"{write.schema}.{name}, but another relation of that name exists (a table "
                "that is not its partition, or an index): rename or drop it, or write the "
                "asset to another table (metadata 'table')"
            )
    return {name for name, taken, _ in states if not taken}


async def _take_turns(driver: asyncpg.Connection, key: str) -> None:
    await driver.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


async def _execute_with_literals(
    driver: asyncpg.Connection, template: str, values: Sequence[str]
) -> None:
    stash, execute = sql.with_literals()
    await driver.execute(stash, template, list(values))
    await driver.execute(execute)


async def run(write: Write, todo: Sequence[steps.Step], before: Counts = Counts()) -> Counts:
    """Run the steps in order; return what they did (``before``: what earlier steps did)."""
    done = Counts()
    for step in todo:
        done += await _run(write, step, before + done)
    return done


async def count(
    write: Write, how: steps.RowCount | None, counts: Counts, where: bool
) -> int | None:
    """A row count after the write, known as the plan says."""
    if how == "inserted":
        return counts.inserted
    if how == "staged":
        return counts.staged
    if how == "count":
        condition = write.planned.where if where else None
        params = write.planned.params if where else ()
        return int(await write.driver.fetchval(sql.count_rows(write.target, condition), *params))
    return None


async def _run(write: Write, step: steps.Step, so_far: Counts) -> Counts:
    driver, stage, planned = write.driver, write.planned.stage, write.planned
    match step:
        case steps.Attempt():
            try:
                async with driver.transaction():
                    return await run(write, step.steps, so_far)
            except tuple(CONDITIONS[name] for name in step.unless):
                return await run(write, step.otherwise, so_far)
        case steps.CreateTable():
            return await _create_table(write, step)
        case steps.AddPrimaryKey():
            await _add_primary_key(write)
        case steps.CreatePartitions():
            await _create_partitions(write, step)
        case steps.PrepareStage():
            script = sql.prepare_stage(
                step.name, step.columns, create=step.create, clear=step.clear, evict=step.evict
            )
            if script:
                await driver.execute(script)
        case steps.CopyFrame(into="stage"):
            rows = await _copy(
                write, None, stage, numbered=step.numbered, in_key_order=step.in_key_order
            )
            if step.analyze:
                await driver.execute(sql.analyze(stage, write.options.conflict_target))
            return Counts(staged=rows)
        case steps.CopyFrame():
            rows = await _copy(write, write.schema, write.table, in_key_order=step.in_key_order)
            return Counts(staged=rows, inserted=rows)
        case steps.KeepOnePerKey():
            status = await driver.execute(
                sql.delete_repeated_keys(
                    stage,
                    write.source,
                    write.options.conflict_target,
                    ROW_NUMBER_COLUMN,
                    keep_last=step.keep_last,
                )
            )
            return Counts(staged=-sql.affected(status))
        case steps.CheckLengths():
            await checks.check_lengths(write, step)
        case steps.CheckValuesKept():
            await checks.check_values_kept(write, step)
        case steps.CheckRowsInPartition():
            await checks.check_rows_in_partition(write, step)
        case steps.CheckKeysInPartition():
            await checks.check_keys_in_partition(write)
        case steps.RefuseRepeatedKeys():
            await checks.refuse_repeated_keys(write)
        case steps.AddColumns():
            await driver.execute(sql.add_columns(write.target, step.columns))
            write.progress(f"added columns {[c for c, _ in step.columns]} to {write.name}")
        case steps.LockForReplace():
            keys, shared = [k for k, _ in step.keys], [s for _, s in step.keys]
            await driver.execute(sql.lock_for_replace(), step.table, keys, shared)
        case steps.RecordOwner():
            await _record_owner(write, step)
        case steps.Delete():
            where = planned.where if step.partitioned else None
            key = write.options.conflict_target
            statement = (
                sql.delete_missing_from_target(write.source, write.target, key, where)
                if step.missing_only
                else sql.delete_all(write.target, where)
            )
            params = planned.params if where else ()
            if step.missing_only:
                return Counts(deleted=await _without_nested_loops(driver, statement, params))
            return Counts(deleted=sql.affected(await driver.execute(statement, *params)))
        case steps.Insert() | steps.Merge():
            return await _merge(write, step, so_far)
        case _:
            assert_never(step)
    return Counts()


async def _merge(write: Write, step: steps.Insert | steps.Merge, so_far: Counts) -> Counts:
    """Apply the stage to the table, naming the column whose cast fails, if one does."""
    write.progress(f"merging {so_far.staged:,} staged rows into {write.name}")
    started = time.monotonic()
    key = write.options.conflict_target
    columns = write.frame.columns
    compare_as = dict(write.planned.compare_as)
    where, params = write.planned.where, write.planned.params
    if (
        isinstance(step, steps.Merge)
        and step.statement == "on_conflict"
        and not sql.updates_on_conflict(step.on_conflict, step.update_columns)
    ):
        where, params = None, ()  # the statement never reads the table
    if isinstance(step, steps.Insert):
        statement = sql.insert_from_stage(
            write.source, write.target, columns, key if step.in_key_order else ()
        )
    elif step.statement == "merge":
        statement = sql.merge(
            write.source,
            write.target,
            columns,
            key,
            step.on_conflict,
            step.update_columns,
            refuse_repeated=step.refuse_repeated,
            compare_as=compare_as,
            where=where,
        )
    else:
        statement = sql.insert_on_conflict(
            write.source,
            write.target,
            columns,
            key,
            step.on_conflict,
            step.update_columns,
            compare_as=compare_as,
            counted=not step.count_changed_first,
            where=where,
        )

    async def apply() -> Counts:
        if isinstance(step, steps.Insert):
            return Counts(inserted=sql.affected(await write.driver.execute(statement)))
        if not step.count_changed_first:
            row = await write.driver.fetchrow(statement, *params)
            return Counts(inserted=int(row["inserted"]), updated=int(row["updated"]))
        changed = 0
        if sql.updates_on_conflict(step.on_conflict, step.update_columns):
            count = sql.count_changed(
                write.source, write.target, key, step.update_columns, compare_as, where
            )
            changed = int(await write.driver.fetchval(count, *params))
        written = sql.affected(await write.driver.execute(statement, *params))
        return Counts(inserted=written - changed, updated=changed)

    try:
        if not step.diagnose_casts:
            counts = await apply()
        else:
            # A savepoint, so that a failed cast can be diagnosed column by column.
            async with write.driver.transaction():
                counts = await apply()
    except _CAST_FAILURES as exc:
        diagnosed = await checks.diagnose(write) if step.diagnose_casts else None
        if diagnosed is None:
            raise
        raise diagnosed from exc
    write.progress(f"merged into {write.name} in {time.monotonic() - started:.1f} s")
    return counts


async def _copy(
    write: Write,
    schema: str | None,
    table: str,
    *,
    numbered: bool = False,
    in_key_order: bool = False,
) -> int:
    """Stream the frame into a table with binary COPY, reporting progress every few
    seconds. asyncpg quotes the names itself."""
    total = "" if write.frame.rows is None else f" of {write.frame.rows:,}"
    announce = _every(PROGRESS_EVERY_SECONDS)

    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        encoded = write.frame.binary_copy_chunks(numbered=numbered, in_key_order=in_key_order)

        async def next_chunk() -> tuple[int, bytes] | None:
            if write.frame.rows is None:
                # A stream's chunks are made in a worker thread: a stream may wait on this
                # very loop (a reader input of the same resource, a generator calling
                # postgres.run). A frame in memory never waits; a small write would pay
                # for the thread hops.
                return await asyncio.to_thread(next, encoded, None)
            return next(encoded, None)

        while (item := await next_chunk()) is not None:
            rows, chunk = item
            sent += rows
            if announce():
                write.progress(f"copied {sent:,}{total} rows for {write.name}")
            yield chunk

    columns = [*write.frame.columns, ROW_NUMBER_COLUMN] if numbered else list(write.frame.columns)
    copying = asyncio.ensure_future(
        write.driver.copy_to_table(
            table, schema_name=schema, source=chunks(), columns=columns, format="binary"
        )
    )
    # asyncpg's copy_to_table, fed by an async iterator, may never return once the server
    # has closed the connection mid-COPY: watch the connection while it runs.
    try:
        while True:
            done, _ = await asyncio.wait({copying}, timeout=CONNECTION_CHECK_SECONDS)
            if done:
                return sql.affected(copying.result())
            if write.driver.is_closed():
                raise asyncpg.ConnectionDoesNotExistError("the connection closed during COPY")
    finally:
        if not copying.done():
            copying.cancel()
            # Let asyncpg end the COPY before the rollback needs the connection; bounded, as
            # a COPY on a connection the server closed may never end.
            await asyncio.wait({copying}, timeout=CONNECTION_CHECK_SECONDS)
        if copying.done() and not copying.cancelled():
            copying.exception()  # retrieved: the error that matters is raised above


async def _without_nested_loops(
    driver: asyncpg.Connection, statement: str, params: Sequence[Any]
) -> int:
    """Run the replace's anti-join with the stage (rows of the table the frame lacks)
    without a nested loop: the table's statistics may predate a write just committed
    (autovacuum analyzes later), and a nested loop planned for the few rows they promise
    scans the unindexed stage once per row of the table."""
    # The select list runs in order: the setting is read before it is switched off.
    previous = await driver.fetchval(
        "SELECT current_setting('enable_nestloop'), set_config('enable_nestloop', 'off', true)"
    )
    deleted = sql.affected(await driver.execute(statement, *params))
    await driver.execute("SELECT set_config('enable_nestloop', $1, true)", previous)
    return deleted


async def _record_owner(write: Write, step: steps.RecordOwner) -> None:
    """Record the owner in the table's comment, unless another writer recorded one since the
    plan read it: the same owner is kept, another fails the write."""
    driver = write.driver
    await driver.execute(sql.lock_for_comment(write.target))
    comment = await driver.fetchval(sql.table_comment(), write.target)
    recorded = claims.recorded_owner(comment)
    if recorded == step.owner:
        return
    if recorded is not None:
        raise claims.owner_error(write.name, recorded, step.owner)
    await _execute_with_literals(
        driver,
        sql.comment_on_table(write.target),
        [claims.comment_with_owner(comment, step.owner)],
    )
    write.progress(f"recorded {step.owner} as the owner of {write.name} in its comment")


def _every(seconds: float) -> Callable[[], bool]:
    """A check that is true at most once per ``seconds``."""
    last = time.monotonic()

    def due() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < seconds:
            return False
        last = now
        return True

    return due
