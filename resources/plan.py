"""The write planner: a pure function from (options, catalog facts, frame facts) to the steps
of a write. No I/O: every decision a write makes is taken here, as data a test can read, and
:mod:`resources.write` only carries the steps out.

A write with rows takes one of two paths:

- **direct:** binary COPY straight into the table, when no row can conflict and nothing needs
  checking first (no partition, every column of exactly the table's type, no column to add):
  a write without a key, or the first write of an empty keyed table from a frame already in
  key order (a repeated key, refused by the key's index, falls back to the staged path);
- **staged:** COPY into a session-local staging table, resolve repeated keys, check lengths
  and partitions, add missing columns (only now, so that the exclusive lock covers only the
  merge), delete for ``replace``, then merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

from . import native, sql
from .catalog import STAGE_PREFIX, Catalog, Column, TableFacts
from .claims import owner_steps, replace_lock
from .counts import COUNT_ROWS_UP_TO_BYTES as COUNT_ROWS_UP_TO_BYTES
from .counts import row_counts
from .errors import TableMismatchError, WritePlanError
from .frame import ROW_NUMBER_COLUMN, PreparedFrame
from .options import PartitionSlice, TimeWindowSlice, WritePlan
from .steps import (
    AddColumns,
    AddPrimaryKey,
    Attempt,
    CheckKeysInPartition,
    CheckLengths,
    CheckRowsInPartition,
    CheckValuesKept,
    CopyFrame,
    CreatePartitions,
    CreateTable,
    Delete,
    Insert,
    KeepOnePerKey,
    Merge,
    PrepareStage,
    RefuseRepeatedKeys,
    Step,
    Steps,
)
from .types import Fit, fit

# The first PostgreSQL whose MERGE has RETURNING, which counts inserted and updated rows.
MERGE_RETURNING_SINCE = 17
# Staged rows from which the stage's key is analyzed before the merge: without fresh
# statistics the planner probes the target's index row by row for a large stage; with them
# it hashes or merges. Only the key's statistics steer the join.
ANALYZE_FROM_ROWS = 10_000
# A table this small is probed for emptiness (an empty keyed table is filled with a plain
# INSERT in key order); a larger one may hold only dead rows, which the probe would walk.
PROBE_EMPTY_UP_TO_BYTES = 1 << 20
# Staging tables a session keeps. PostgreSQL empties every ON COMMIT DELETE ROWS table of
# the session at each commit, so a session that wrote hundreds of tables would pay for all
# of them; beyond this many the oldest is dropped.
MAX_STAGES = 8

RELATION_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "i": "an index",
    "S": "a sequence",
    "c": "a composite type",
}


# ---- planning -----------------------------------------------------------------------------------


def table_to_create(
    options: WritePlan,
    frame: PreparedFrame,
    schema: str,
    table_name: str,
    catalog: Catalog,
    partition: Sequence[PartitionSlice] = (),
) -> CreateTable:
    """The table a first write creates: the frame's columns and types, the key as primary
    key; and its schema, unless the catalog has it. A partitioned asset's table is natively
    partitioned on its first partition column when ``options.partitioning`` says so, and
    otherwise indexed on its partition columns (unless the key's index starts with them)."""
    key = options.conflict_target
    columns = tuple(part.column for part in partition)
    partition_by = index = None
    if options.partitioning == "native":
        lacking = [c for c in columns if c not in key]
        if key and lacking:
            raise WritePlanError(
                f"partitioning 'native' makes {schema}.{table_name} a partitioned table, "
                f"whose unique keys must hold every partition column, but conflict_target "
                f"{list(key)} lacks {lacking}: add {lacking} to conflict_target, or set "
                "partitioning to 'plain'"
            )
        partition_by = native.partition_by(partition)
    elif columns and tuple(key[: len(columns)]) != columns:
        index = (sql.fitted_name(f"{table_name}_partition_idx"), columns)
    return CreateTable(
        schema=schema,
        columns=tuple((name, str(t)) for name, t in frame.types.items()),
        primary_key=key,
        create_schema=not catalog.schema_exists,
        partition_by=partition_by,
        index=index,
        primary_key_after_rows=key_index_after_rows(options, frame, partition),
    )


def key_index_after_rows(
    options: WritePlan, frame: PreparedFrame, partition: Sequence[PartitionSlice] = ()
) -> bool:
    """Whether a keyed table this write creates takes the rows first, straight from the
    COPY, and its primary key after them: the key's index is then built from every row at
    once (a sort of the keys alone), where rows inserted into it one by one, or sorted
    whole first, cost more per row the larger the write. Only when nothing needs the stage
    (a partition's checks, a column sent as another type) and no repeated key needs
    resolving: the client found none, or a repeat is an error anyway."""
    if not options.conflict_target or partition or frame.wire_types or frame.rows == 0:
        return False
    return frame.key_repeats is False or (
        frame.key_repeats is None and options.duplicates == "error"
    )


def needs_empty_probe(options: WritePlan, table: TableFacts, frame: PreparedFrame) -> bool:
    """Whether knowing that the table is empty would change the plan, and the probe is
    cheap: only a keyed upsert or replace of a small table takes a faster path when empty."""
    keyed = bool(options.conflict_target) and options.write_mode != "append"
    small = table.size_bytes is not None and table.size_bytes <= PROBE_EMPTY_UP_TO_BYTES
    return keyed and frame.rows != 0 and small


def plan_write(
    options: WritePlan,
    catalog: Catalog,
    frame: PreparedFrame,
    *,
    schema: str,
    table_name: str,
    partition: Sequence[PartitionSlice] = (),
    empty: bool = False,
    nested: bool = False,
    owner: str | None = None,
    created: bool = False,
) -> Steps:
    """The steps that write ``frame`` into ``schema.table_name``, which ``catalog``
    describes, as ``options`` say. ``empty``: the table is known to hold no row; ``nested``:
    the write runs inside a caller's transaction; ``owner``: the output writing it, checked
    against and recorded in the table's comment (see :mod:`resources.claims`). A missing
    table is created by the steps, and the write planned again once it exists
    (``Steps.replan``), with ``created`` True if this write created it.

    Raises:
        TableOwnerError: the table records another owner.
        TableMismatchError, WritePlanError: the table cannot take the frame as planned.
    """
    name = f"{schema}.{table_name}"
    if options.partitioning == "native" and not partition:
        raise WritePlanError(
            f"partitioning 'native' is set for {name}, but the write is of no partition: "
            "give the asset a partitions_def and partition_expr, or drop 'partitioning'"
        )
    table = catalog.table
    if table is None:
        create = table_to_create(options, frame, schema, table_name, catalog, partition)
        return Steps((create,), replan=True)
    _check_relation(table, name)
    children = _children_to_create(options, table, table_name, partition, name)
    claims = owner_steps(owner, table, name)  # recorded last, once the rows are written
    stored = table.columns
    key = options.conflict_target
    keyed_merge = bool(key) and options.write_mode != "append"
    # Created without its primary key by this write (key_index_after_rows): no one else
    # sees the table until the commit.
    key_index_later = created and bool(key) and frozenset(key) not in table.unique_keys
    if keyed_merge and not key_index_later:
        _check_unique_key(table, key, name)
    missing = tuple(c for c in frame.columns if c not in stored)
    if missing and options.schema_evolution == "strict":
        raise TableMismatchError(
            f"columns {list(missing)} of the frame are not in table {name} "
            f"(which has {list(stored)}) and schema_evolution is 'strict': add them to "
            "the table, drop them from the frame, or set schema_evolution to 'add_columns'"
        )
    fits = _fits(frame, stored, name)
    added = tuple((c, str(frame.types[c])) for c in missing)
    types = {c: col.type for c, col in stored.items()} | {c: frame.types[c] for c in missing}
    where, params = sql.partition_filter(partition, types)
    table_columns = tuple((c, col.type.display) for c, col in stored.items()) + added
    counts = row_counts(options, table, partition, empty)

    planned = Steps(
        (),
        where=where,
        params=tuple(params),
        row_count=counts[0],
        partition_row_count=counts[1],
        table_columns=table_columns,
    )
    replacing = options.write_mode == "replace"
    if key_index_later:
        return replace(planned, steps=(CopyFrame("target"), AddPrimaryKey(), *claims))
    if frame.rows == 0:
        # Upserting or appending no rows changes nothing; replacing with none empties the
        # table (or the partition), in turn with other replaces.
        lock = replace_lock(table.oid, partition)
        empties = (lock, Delete(partitioned=bool(partition))) if replacing else ()
        return replace(planned, steps=(*empties, *claims))

    # A domain's CHECK may refuse a value: its columns are cast from the stage, so that the
    # column a refused value belongs to can be named.
    checked = {c for c in fits if stored[c].type.domain and c not in frame.null_columns}
    casts = tuple(
        (c, _staged_type(frame, c), str(types[c]) if c in missing else stored[c].type.display)
        for c in frame.columns
        if fits.get(c) in (Fit.CAST, Fit.CHECKED) or c in checked or c in frame.wire_types
    )
    # Keys the client found distinct are distinct in the table too when they are stored as
    # sent; a cast (text to uuid, a timestamp to a date) may make two of them one.
    unique_key = frame.key_repeats is False and not {c for c, *_ in casts} & set(key)
    # json has no equality operator: whether a row changed is asked of its jsonb.
    compare_as = tuple(
        (c, "jsonb")
        for c in frame.columns
        if c in stored and stored[c].type.name == "json" and not stored[c].type.array
    )
    # COPY ignores rules, and a cast or a new column needs the stage.
    direct_ok = not (partition or missing or casts or table.has_rules)
    direct_ok = direct_ok and all(f is Fit.EXACT for f in fits.values())
    stage_columns = _stage_columns(frame, stored, options, unique_key)
    stage = stage_name(stage_columns)
    staged = _staged_steps(
        options,
        frame,
        catalog,
        stage,
        stage_columns,
        fits,
        added,
        partition,
        empty,
        nested,
        children,
        diagnose_casts=bool(casts),
        unique_key=unique_key,
    )
    # A replace straight into the table deletes first, in turn (its COPY so waits too); into
    # a table found empty as well: another writer may fill it meanwhile.
    first = (replace_lock(table.oid, ()), Delete(partitioned=False)) if replacing else ()
    if direct_ok and not key:
        return replace(planned, steps=(*first, CopyFrame("target"), *claims))
    in_order = frame.in_key_order or frame.sortable
    if direct_ok and keyed_merge and empty and in_order and not frame.key_repeats:
        # The key's index refuses a repeated key (one the client did not find: a text key);
        # the staged path then resolves or names it.
        copy = CopyFrame("target", in_key_order=not frame.in_key_order)
        staged = (*first, Attempt((copy,), ("unique_violation",), staged))
    return replace(
        planned,
        steps=(*staged, *claims),
        stage=stage,
        casts=casts,
        compare_as=compare_as,
        numbered=_numbered(options, unique_key),
    )


def _worth_analyzing(rows: int | None) -> bool:
    """Whether the stage is worth its statistics (a stream's rows are not counted yet)."""
    return rows is None or rows >= ANALYZE_FROM_ROWS


def _staged_steps(
    options: WritePlan,
    frame: PreparedFrame,
    catalog: Catalog,
    stage: str,
    stage_columns: tuple[tuple[str, str], ...],
    fits: Mapping[str, Fit],
    added: tuple[tuple[str, str], ...],
    partition: Sequence[PartitionSlice],
    empty: bool,
    nested: bool,
    children: tuple[native.ChildTable, ...],
    *,
    diagnose_casts: bool,
    unique_key: bool,
) -> tuple[Step, ...]:
    key = options.conflict_target
    keyed_merge = bool(key) and options.write_mode != "append"
    numbered = _numbered(options, unique_key)
    exists = stage in catalog.stages
    kept = [s for s in catalog.stages if s != stage]
    evict = tuple(kept[: max(0, len(kept) - MAX_STAGES + 1)]) if not exists else ()
    steps: list[Step] = [
        PrepareStage(stage, stage_columns, create=not exists, clear=nested, evict=evict),
        CopyFrame(
            "stage",
            numbered=numbered,
            analyze=bool(key) and _worth_analyzing(frame.rows),
            # A numbered stage keeps the frame's order, which says which copy of a key is first.
            in_key_order=frame.sortable and not frame.in_key_order and not numbered,
        ),
    ]
    if numbered:
        steps.append(KeepOnePerKey(keep_last=options.duplicates == "keep_last"))
    limits = tuple(
        (c, catalog.table.columns[c].type.varchar_length or 0)  # type: ignore[union-attr]
        for c, f in fits.items()
        if f is Fit.LENGTH
    )
    if limits:
        steps.append(CheckLengths(limits))
    rounding = tuple(
        (c, catalog.table.columns[c].type.display, catalog.table.columns[c].type.unmodified)  # type: ignore[union-attr]
        for c, f in fits.items()
        if f is Fit.CHECKED
    )
    if rounding:
        steps.append(CheckValuesKept(rounding))
    if partition:
        columns = tuple(s.column for s in partition)
        steps.append(CheckRowsInPartition(columns, describe_partition(partition)))
        # A key that holds the partition columns is stored, if at all, in the partition its
        # staged row lies in (checked just above): only another key needs the check, which
        # probes every other partition.
        if keyed_merge and not set(columns) <= set(key):
            steps.append(CheckKeysInPartition())
    if key and not keyed_merge and options.duplicates == "error" and not unique_key:
        # A keyed append may have no unique index to refuse a repeated key.
        steps.append(RefuseRepeatedKeys())
    if children:
        # Once the rows are known to fit: attaching takes turns with other attachers of
        # the table until the commit (not with its readers or writers).
        steps.append(CreatePartitions(children))
    replacing = options.write_mode == "replace"
    if replacing:
        # After the COPY and the checks (replaces copy side by side), before ADD COLUMN:
        # a writer waiting for its turn holds no lock the holder's ALTER would wait for
        # but the catalog read's ACCESS SHARE (a deadlock, which reruns one of them).
        steps.append(replace_lock(catalog.table.oid, partition))  # type: ignore[union-attr]
    if added:
        steps.append(AddColumns(added))
    if replacing:
        # Even into a table found empty, which another writer may fill meanwhile.
        steps.append(Delete(partitioned=bool(partition), missing_only=bool(key)))
    if not keyed_merge:
        steps.append(Insert(diagnose_casts=diagnose_casts))
        return tuple(steps)
    merge = _merge_steps(options, catalog, frame, diagnose_casts, unique_key)
    if empty and not frame.key_repeats:
        # A plain INSERT in key order grows the key's B-tree at its right edge, about twice
        # as fast as a merge; a collision (a repeated key, another writer's row) falls back.
        insert = Insert(in_key_order=True, diagnose_casts=diagnose_casts)
        steps.append(Attempt((insert,), ("unique_violation",), merge))
    else:
        steps.extend(merge)
    return tuple(steps)


def _merge_steps(
    options: WritePlan,
    catalog: Catalog,
    frame: PreparedFrame,
    diagnose_casts: bool,
    unique_key: bool,
) -> tuple[Step, ...]:
    """MERGE where the server has MERGE ... RETURNING and the table no rules (which MERGE
    refuses); else INSERT ... ON CONFLICT, which also takes over when a MERGE meets a key
    another writer inserted meanwhile (it waits for that row, then resolves it) or a key
    staged twice (refused, naming it)."""
    refuse = options.duplicates == "error" and not unique_key
    updates = options.update_columns or tuple(
        c for c in frame.columns if c not in options.conflict_target
    )
    on_conflict: list[Step] = []
    if refuse:
        on_conflict.append(RefuseRepeatedKeys())
    table = catalog.table
    partitioned = table is not None and table.kind == "p"
    on_conflict.append(
        Merge("on_conflict", options.on_conflict, updates, False, diagnose_casts, partitioned)
    )
    if catalog.server_version < MERGE_RETURNING_SINCE or (table is not None and table.has_rules):
        return tuple(on_conflict)
    merge = Merge("merge", options.on_conflict, updates, refuse, diagnose_casts)
    unless = ("cardinality_violation", "unique_violation", "feature_not_supported")
    return (Attempt((merge,), unless, tuple(on_conflict)),)


def describe_partition(partition: Sequence[PartitionSlice]) -> str:
    """The rows a partition (or a range of them) holds, as a message shows them:
    ``day in [2024-01-01 00:00:00+00:00, 2024-01-04 00:00:00+00:00)``, ``region in ['north']``."""
    parts = []
    for part in partition:
        if isinstance(part, TimeWindowSlice):
            parts.append(f"{part.column} in [{part.start}, {part.end})")
        else:
            keys = list(part.keys[:5]) + (["..."] if len(part.keys) > 5 else [])
            parts.append(f"{part.column} in {keys}")
    return " and ".join(parts)


def stage_name(columns: Sequence[tuple[str, str]]) -> str:
    """A staging table per frame shape, shared by every table written with that shape."""
    digest = hashlib.sha256(repr(sorted(columns)).encode()).hexdigest()[:16]
    return STAGE_PREFIX + digest


def _stage_columns(
    frame: PreparedFrame, stored: Mapping[str, Column], options: WritePlan, unique_key: bool
) -> tuple[tuple[str, str], ...]:
    # A column NULL in every row carries no type of its own: stage it as the table's type.
    columns = [
        (
            c,
            stored[c].type.display
            if c in frame.null_columns and c in stored
            else _staged_type(frame, c),
        )
        for c in frame.types
    ]
    if _numbered(options, unique_key):
        columns.append((ROW_NUMBER_COLUMN, "bigint"))
    return tuple(columns)


def _staged_type(frame: PreparedFrame, column: str) -> str:
    """The type a frame column has in the stage: its own, or the one it travels as."""
    return frame.wire_types.get(column, str(frame.types[column]))


def _numbered(options: WritePlan, unique_key: bool) -> bool:
    """Staged rows carry their position in the frame, to keep the first or last of a key
    (unless no key repeats)."""
    return bool(options.conflict_target) and options.duplicates != "error" and not unique_key


def _fits(frame: PreparedFrame, stored: Mapping[str, Column], name: str) -> dict[str, Fit]:
    """How each frame column the table has goes into it; refuses one whose values the
    table's column would change."""
    fits: dict[str, Fit] = {}
    for column, frame_type in frame.types.items():
        if column not in stored:
            continue
        if stored[column].generated:
            raise TableMismatchError(
                f"column {column!r} of table {name} is generated (GENERATED ALWAYS AS ...): "
                "the table computes it and takes no value for it; drop it from the frame"
            )
        if column in frame.null_columns:
            fits[column] = Fit.EXACT  # NULLs carry no type
            continue
        table_type = stored[column].type
        how = fit(frame_type, table_type)
        if how is None:
            raise TableMismatchError(
                f"column {column!r} of table {name} is {table_type}, but the frame's values "
                f"are {frame_type}, which it would not store unchanged: convert the column "
                "in the frame, or alter the table"
            )
        fits[column] = how
    return fits


def _check_relation(table: TableFacts, name: str) -> None:
    if table.kind not in ("r", "p"):
        description = RELATION_KINDS.get(table.kind, f"a relation of kind {table.kind!r}")
        raise TableMismatchError(
            f"{name} is {description}, not a table: write to a plain table, or set the "
            "metadata key 'table' to another name"
        )


def _children_to_create(
    options: WritePlan,
    table: TableFacts,
    table_name: str,
    partition: Sequence[PartitionSlice],
    name: str,
) -> tuple[native.ChildTable, ...]:
    """The partitions a write with ``partitioning: native`` needs (those that exist already
    are found so by the write, without listing the table's every partition)."""
    if options.partitioning != "native":
        return ()
    if table.kind != "p":
        raise TableMismatchError(
            f"partitioning 'native' is set, but {name} exists as a plain table, which is "
            "never converted behind your back: migrate it to a partitioned table yourself "
            "(see the README's 'At scale'), or drop 'partitioning'"
        )
    wanted = native.partition_by(partition)
    found = (native.STRATEGY_CODES.get(table.partition_strategy or ""), *table.partition_columns)
    if found != wanted:
        raise TableMismatchError(
            f"partitioning 'native' needs {name} partitioned by {wanted[0]} on "
            f"{wanted[1]!r}, but it is partitioned by {table.partition_strategy!r} on "
            f"{list(table.partition_columns)}: create its partitions yourself and drop "
            "'partitioning', or write another table"
        )
    return native.children(table_name, partition)


def _check_unique_key(table: TableFacts, key: Sequence[str], name: str) -> None:
    if frozenset(key) in table.unique_keys:
        return
    lacking = [c for c in table.partition_columns if c not in key]
    if lacking:
        raise TableMismatchError(
            f"table {name} is partitioned by {list(table.partition_columns)}, and PostgreSQL's "
            f"unique keys on a partitioned table must hold every partition column, but "
            f"conflict_target {list(key)} lacks {lacking}: add {lacking} to conflict_target "
            "and to the table's unique key"
        )
    columns = sql.column_list(sorted(key))
    raise TableMismatchError(
        f"table {name} has no unique index or constraint on exactly {sorted(key)}, which "
        f"ON CONFLICT needs: add one (ALTER TABLE {name} ADD UNIQUE ({columns})) or "
        "change conflict_target"
    )


def plan_summary(steps: Steps) -> list[str]:
    """The step names, nested attempts as ``Attempt[...|...]``: what a test asserts on."""
    return [_summary(step) for step in steps.steps]


def _summary(step: Step) -> str:
    if isinstance(step, Attempt):
        first = ",".join(_summary(s) for s in step.steps)
        other = ",".join(_summary(s) for s in step.otherwise)
        return f"Attempt[{first}|{other}]"
    if isinstance(step, CopyFrame):
        return f"CopyFrame({step.into})"
    if isinstance(step, Merge):
        return f"Merge({step.statement})"
    return type(step).__name__
