"""PostgresUpsertIOManager: stores asset DataFrames with the COPY-upsert, loads them back."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    OutputContext,
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
)
from pydantic import Field

from .core import (
    KeySlice,
    PartitionSlice,
    TimeWindowSlice,
    WritePlan,
    copy_upsert,
    read_table,
)
from .errors import CopyUpsertError, FrameError, WritePlanError
from .resource import PostgresResource

# Definition metadata keys that shape a write; see WritePlan.from_options.
PLAN_KEYS = ("conflict_target", "write_mode", "on_conflict", "update_columns", "duplicates")
# Every metadata key this IO manager reads. A key close to one of them is a typo: without
# it a write may take another mode (no conflict_target: replace the whole table).
KNOWN_KEYS = (
    *PLAN_KEYS,
    "schema_evolution",
    "exact_row_count",
    "schema",
    "table",
    "partition_expr",
    "columns",
)


class PostgresUpsertIOManager(ConfigurableIOManager):
    """Stores each asset's DataFrame in a PostgreSQL table with binary COPY and an atomic
    ``INSERT ... ON CONFLICT`` merge, and loads tables back as DataFrames.

    The table is the last asset-key component (or the ``table`` metadata); its schema is the
    ``schema`` metadata, else this IO manager's ``schema``, else the asset-key prefix, else
    ``public``. How rows are written comes from the asset's definition metadata:
    ``conflict_target``, ``write_mode``, ``on_conflict``, ``update_columns``, ``duplicates``
    and, for partitioned assets, ``partition_expr`` (see the README).

    Examples:
        .. code-block:: python

            import pandas as pd
            from dagster import Definitions, EnvVar, asset
            from resources import PostgresResource, PostgresUpsertIOManager

            @asset(key_prefix=["shop"], metadata={"conflict_target": ["sku"]})
            def products() -> pd.DataFrame:
                return pd.DataFrame({"sku": ["a-1", "b-2"], "price": [9.5, 12.0]})

            postgres = PostgresResource(url=EnvVar("DATABASE_URL"))
            defs = Definitions(
                assets=[products],
                resources={
                    "postgres": postgres,
                    "io_manager": PostgresUpsertIOManager(postgres=postgres),
                },
            )
    """

    postgres: PostgresResource = Field(description="The database the tables live in.")
    schema_: str | None = Field(
        default=None,
        alias="schema",
        description=(
            "Schema for assets whose metadata names none; unset: the asset-key prefix, "
            "else 'public'."
        ),
    )

    schema_evolution: str = Field(
        default="add_columns",
        description=(
            "What a frame column the table lacks does: 'add_columns' adds it (nullable), "
            "'strict' fails the step. An asset's 'schema_evolution' metadata overrides it."
        ),
    )

    exact_row_count: bool = Field(
        default=False,
        description=(
            "Count the table's rows after every write for dagster/row_count, even when that "
            "scans a large table. Off: the count is reported when it is free (a first write, "
            "a full replace) or cheap (a table of at most 8 MB), and left out otherwise. An "
            "asset's 'exact_row_count' metadata overrides it."
        ),
    )

    retries: int = Field(
        default=3,
        ge=0,
        description=(
            "How many times a write that lost a deadlock or serialization conflict with "
            "another session is run again, with backoff, before the step fails."
        ),
    )

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        """Write the asset's DataFrame and attach what the write did as output metadata."""
        asset = _label(context)
        try:
            if not isinstance(obj, pd.DataFrame):
                raise FrameError(
                    f"the asset returned {type(obj).__name__}, but this IO manager stores "
                    "pandas DataFrames: return a DataFrame, or give the asset another IO manager"
                )
            metadata = _plain(context.definition_metadata)
            _refuse_misspelled_keys(metadata)
            plan = WritePlan.from_options(
                **{key: metadata.get(key) for key in PLAN_KEYS},
                schema_evolution=metadata.get("schema_evolution", self.schema_evolution),
                exact_row_count=metadata.get("exact_row_count", self.exact_row_count),
            )
            schema, table = self._table(context, metadata)
            partition = _partition_slices(context, metadata)
            result = self.postgres.run(
                lambda conn: copy_upsert(
                    conn,
                    obj,
                    schema=schema,
                    table=table,
                    plan=plan,
                    partition=partition,
                    progress=context.log.info,
                    retries=self.retries,
                )
            )
        except CopyUpsertError as exc:
            raise exc.for_asset(asset) from exc

        database = self.postgres.database_url().database or "postgres"
        metadata_out: dict[str, Any] = {
            "dagster/table_name": f"{database}.{schema}.{table}",
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(name=name, type=pg_type) for name, pg_type in result.columns]
            ),
        }
        if result.row_count is not None:
            metadata_out["dagster/row_count"] = result.row_count
        if result.partition_row_count is not None:
            metadata_out["dagster/partition_row_count"] = result.partition_row_count
        context.add_output_metadata(
            {
                **metadata_out,
                "rows_staged": result.rows_staged,
                "rows_inserted": result.rows_inserted,
                "rows_updated": result.rows_updated,
                "rows_unchanged": result.rows_unchanged,
                "rows_deleted": result.rows_deleted,
            }
        )

    def load_input(self, context: InputContext) -> pd.DataFrame:
        """Read the upstream asset's table (its partitions only, the ``columns`` input
        metadata only) as a DataFrame."""
        upstream = context.upstream_output
        asset = _label(upstream) if upstream is not None else context.name
        try:
            upstream_metadata = _plain(upstream.definition_metadata) if upstream else {}
            schema, table = self._table(upstream or context, upstream_metadata)
            partition = _partition_slices(context, upstream_metadata)
            columns = _plain(context.definition_metadata).get("columns")
            return self.postgres.run(
                lambda conn: read_table(
                    conn, schema=schema, table=table, columns=columns, partition=partition
                )
            )
        except CopyUpsertError as exc:
            raise exc.for_asset(asset) from exc

    def _table(
        self, context: OutputContext | InputContext, metadata: Mapping[str, Any]
    ) -> tuple[str, str]:
        path = context.asset_key.path if context.has_asset_key else [context.name]
        table = metadata.get("table") or path[-1]
        schema = metadata.get("schema") or self.schema_ or (path[-2] if len(path) > 1 else "public")
        return str(schema), str(table)


def _partition_slices(
    context: OutputContext | InputContext, metadata: Mapping[str, Any]
) -> Sequence[PartitionSlice]:
    if not context.has_asset_partitions:
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
                        column, min(w.start for w in windows), max(w.end for w in windows)
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
        return (TimeWindowSlice(expr, window.start, window.end),)
    return (KeySlice(expr, tuple(context.asset_partition_keys)),)


def _refuse_misspelled_keys(metadata: Mapping[str, Any]) -> None:
    """Other metadata is the user's own; a key a letter or two away from one of ours is not."""
    for key in metadata:
        if key in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.8)
        if close:
            raise WritePlanError(
                f"unknown metadata key {key!r}: did you mean {close[0]!r}? (nothing was "
                "written; metadata keys this IO manager reads: " + ", ".join(KNOWN_KEYS) + ")"
            )


def _plain(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Definition metadata with MetadataValue wrappers removed."""
    return {
        key: value.value if isinstance(value, MetadataValue) else value
        for key, value in (metadata or {}).items()
    }


def _label(context: OutputContext | InputContext) -> str:
    return context.asset_key.to_user_string() if context.has_asset_key else context.name
