"""How the IO manager maps Dagster outputs to tables: the metadata keys it reads, the table
each kind of output writes (the README's naming rule), who owns it, and the partition slice
a step writes or reads. Dagster-facing, but free of I/O."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    DagsterInvariantViolationError,
    InputContext,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    OutputContext,
    TimeWindowPartitionsDefinition,
)

from .catalog import Column
from .errors import TableMismatchError, WritePlanError
from .options import KeySlice, PartitionSlice, TimeWindowSlice, WritePlan
from .sql import fitted_name

# Definition metadata keys that shape a write; see WritePlan.from_options.
PLAN_KEYS = (
    "conflict_target",
    "write_mode",
    "on_conflict",
    "update_columns",
    "duplicates",
    "partitioning",
)
# Every metadata key this IO manager reads, on outputs and on inputs. A key close to one of
# them is a typo: without it a write may take another mode (no conflict_target: replace the
# whole table), a read another set of columns.
OUTPUT_KEYS = (
    *PLAN_KEYS,
    "schema_evolution",
    "exact_row_count",
    "schema",
    "table",
    "shared_table",
    "partition_expr",
)
INPUT_KEYS = ("columns",)
# The owner recorded for tables that outputs share on purpose: any output that says
# shared_table may write them, and no other.
SHARED_OWNER = "outputs with shared_table: true"
# Op outputs that are not assets carry the id of the run that wrote them, so that a step
# never reads another run's rows (runs of one job at once share their op outputs' tables).
RUN_ID_COLUMN = "dagster_run_id"
# Metadata keys other tools use for what this IO manager calls conflict_target: without it
# a write would replace the whole table.
FOREIGN_KEYS = {
    key: "conflict_target"
    for key in ("primary_key", "unique_key", "upsert_key", "merge_key", "key_columns")
}


def table_for(
    context: OutputContext | InputContext, metadata: Mapping[str, Any], default_schema: str | None
) -> tuple[str, str]:
    """The ``(schema, table)`` an output is stored in (the README's naming rule).

    Raises:
        WritePlanError: the asset key's prefix and ``default_schema`` (the IO manager's) disagree.
    """
    if context.has_asset_key:
        path = context.asset_key.path
        table, prefix = fitted_name(path[-1]), fitted_name("__".join(path[:-1]))
    elif isinstance(context, OutputContext):
        table, prefix = op_table_name(context), ""
    else:
        table, prefix = context.name, ""
    if prefix and default_schema and prefix != default_schema and not metadata.get("schema"):
        raise WritePlanError(
            f"the asset key's prefix names schema {prefix!r} and the IO manager's "
            f"'schema' is {default_schema!r}: a schema is given one way, so that two assets "
            "never share a table; drop the key prefix or the IO manager's 'schema', or "
            "set the asset's 'schema' metadata"
        )
    schema = metadata.get("schema") or prefix or default_schema or "public"
    return str(schema), str(metadata.get("table") or table)


def partition_slices(
    context: OutputContext | InputContext, metadata: Mapping[str, Any]
) -> Sequence[PartitionSlice]:
    if not context.has_asset_partitions:
        if isinstance(context, OutputContext) and metadata.get("partition_expr"):
            raise WritePlanError(
                "metadata 'partition_expr' is set but the asset has no partitions_def, so the "
                "write would take the whole table: partition the asset, or drop the key"
            )
        return ()
    expr = metadata.get("partition_expr")
    partitions_def = context.asset_partitions_def
    if isinstance(partitions_def, MultiPartitionsDefinition):
        if not isinstance(expr, Mapping):
            raise WritePlanError(
                "a multi-partitioned asset needs metadata 'partition_expr' mapping each "
                f"dimension {partitions_def.partition_dimension_names} to a column"
            )
        keys = [k for k in context.asset_partition_keys if isinstance(k, MultiPartitionKey)]
        slices: list[PartitionSlice] = []
        for dimension in partitions_def.partitions_defs:
            column = expr.get(dimension.name)
            if not isinstance(column, str):
                raise WritePlanError(
                    f"partition_expr has no column for partition dimension {dimension.name!r}"
                )
            values = sorted({k.keys_by_dimension[dimension.name] for k in keys})
            sub = dimension.partitions_def
            if isinstance(sub, TimeWindowPartitionsDefinition):
                windows = [sub.time_window_for_partition_key(v) for v in values]
                slices.append(
                    TimeWindowSlice(
                        column,
                        min(w.start for w in windows),
                        max(w.end for w in windows),
                        tuple((w.start, w.end) for w in windows),
                    )
                )
            else:
                slices.append(KeySlice(column, tuple(values)))
        return slices
    if not isinstance(expr, str):
        raise WritePlanError(
            "a partitioned asset needs metadata 'partition_expr' naming the column that holds "
            f"the partition (got {expr!r})"
        )
    if isinstance(partitions_def, TimeWindowPartitionsDefinition):
        window = context.asset_partitions_time_window
        spans = tuple(
            (w.start, w.end)
            for w in map(partitions_def.time_window_for_partition_key, context.asset_partition_keys)
        )
        return (TimeWindowSlice(expr, window.start, window.end, spans),)
    return (KeySlice(expr, tuple(context.asset_partition_keys)),)


def no_partition(metadata: Mapping[str, Any]) -> Sequence[PartitionSlice]:
    """A slice that selects no row: an input mapped to no upstream partition."""
    expr = metadata.get("partition_expr")
    column = next(iter(expr.values())) if isinstance(expr, Mapping) else expr
    if not isinstance(column, str):
        raise WritePlanError(
            "a partitioned asset needs metadata 'partition_expr' naming the column that holds "
            f"the partition (got {expr!r})"
        )
    return (KeySlice(column, ()),)


def op_table_name(context: OutputContext) -> str:
    """The table of an op output that is not an asset: its job's name, its step key (graph
    and op names, and the mapping key of a mapped step), its output's name and the output's
    own mapping key, joined by ``__``, as in ``nightly__my_graph__clean__result``."""
    parts = [context.job_name.strip("_")]
    parts += [p for p in re.split(r"[.\[\]]", context.step_key) if p]
    parts.append(context.name)
    if context.mapping_key:
        parts.append(context.mapping_key)
    return fitted_name("__".join(parts))


def output_label(context: OutputContext) -> str:
    """How messages and table ownership name an output: ``asset shop/orders``, or ``op
    'my_graph.clean' output 'result' of job 'nightly'`` (with its mapping key)."""
    if context.has_asset_key:
        return f"asset {context.asset_key.to_user_string()}"
    label = f"op {context.step_key!r} output {context.name!r}"
    if context.mapping_key:
        label += f" [{context.mapping_key}]"
    return f"{label} of job {context.job_name!r}"


def input_label(context: InputContext) -> str:
    """How messages name an input: ``input 'orders' of asset shop/totals``, or ``input
    'orders' of op 'daily_totals'`` (an op's, or a multi-asset's)."""
    try:
        assets = context.step_context.get_output_asset_keys()
        if len(assets) == 1:
            (key,) = assets
            return f"input {context.name!r} of asset {key.to_user_string()}"
        return f"input {context.name!r} of op {context.op_def.name!r}"
    except DagsterInvariantViolationError:  # a context built outside a run
        return f"input {context.name!r}"


def reads_itself(context: InputContext) -> bool:
    """Whether the input is an asset its own step writes (an asset that reads its earlier
    partitions): before its first write there is nothing to read, and that is no error."""
    try:
        written = context.step_context.get_output_asset_keys()
    except DagsterInvariantViolationError:  # a context built outside a run
        return False
    return context.has_asset_key and context.asset_key in written


def run_scoped(context: OutputContext, metadata: Mapping[str, Any]) -> bool:
    """Whether the output's rows carry their run's id: an op output in a table the naming
    rule chose (a table named in metadata is the user's, and holds their columns only)."""
    return not context.has_asset_key and not metadata.get("table")


def for_one_run(plan: WritePlan) -> WritePlan:
    """The plan of a run-scoped output (:func:`run_scoped`): its table holds one run's rows,
    so every write replaces the rows of the runs before, whatever the ``write_mode`` (an
    upsert kept them, and the next step found another run's rows); a ``conflict_target``
    still resolves the frame's repeated keys."""
    return replace(plan, write_mode="replace", on_conflict="update", update_columns=None)


def check_run(
    table: pa.Table, columns: Mapping[str, Column], run_id: str, name: str
) -> tuple[pa.Table, dict[str, Column]]:
    """Refuse rows that another run wrote over the upstream's (two runs of one job at once);
    the read without its run id column."""
    run_ids = table.column(RUN_ID_COLUMN)
    others = pc.filter(run_ids, pc.not_equal(run_ids, run_id))
    if len(others):
        raise TableMismatchError(
            f"table {name} holds rows of run {others[0].as_py()} instead of run {run_id}, "
            "which wrote this input: another run of the job replaced them. Runs of one job "
            "at the same time share its op outputs' tables: run them one after another "
            "(a concurrency limit on the job), or name a table per run with the output's "
            "'table' metadata"
        )
    kept = {n: c for n, c in columns.items() if n != RUN_ID_COLUMN}
    return table.drop_columns([RUN_ID_COLUMN]), kept


def refuse_misspelled_keys(metadata: Mapping[str, Any], *, of_input: bool = False) -> None:
    """Other metadata is the user's own; a key a letter or two away from one of ours, or
    another tool's name for the key, is not. ``of_input``: the metadata is an input's."""
    known, done = (INPUT_KEYS, "read") if of_input else (OUTPUT_KEYS, "written")
    for key in metadata:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        close = [FOREIGN_KEYS[key]] if key in FOREIGN_KEYS and not of_input else close
        if close:
            raise WritePlanError(
                f"unknown {'input ' if of_input else ''}metadata key {key!r}: did you mean "
                f"{close[0]!r}? (nothing was {done}; {'input ' if of_input else ''}metadata "
                "keys this IO manager reads: " + ", ".join(known) + ")"
            )


def plain(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Definition metadata with MetadataValue wrappers removed."""
    return {
        key: value.value if isinstance(value, MetadataValue) else value
        for key, value in (metadata or {}).items()
    }
