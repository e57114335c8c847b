"""PostgresUpsertIOManager: stores asset DataFrames with the COPY-upsert, loads them back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    InputContext,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from .catalog import Column
from .core import WritePlan, copy_upsert, read_arrow
from .errors import CopyUpsertError, TableNotFoundError
from .handlers import frame_annotation, handler_for_input, to_arrow
from .outputs import (
    PLAN_KEYS,
    RUN_ID_COLUMN,
    SHARED_OWNER,
    check_run,
    for_one_run,
    input_label,
    no_partition,
    output_label,
    partition_slices,
    plain,
    reads_itself,
    refuse_misspelled_keys,
    run_scoped,
    table_for,
)
from .read import ArrowStream, convert
from .resource import PostgresResource
from .streaming import record_batch_reader


class PostgresUpsertIOManager(ConfigurableIOManager):
    """Stores each asset's DataFrame (pandas, polars, Arrow, or a stream of them) in a
    PostgreSQL table with binary COPY and an atomic merge, and loads tables back as the
    input's annotation asks (pandas by default; polars, Arrow, or a streaming Arrow reader).

    The table is the last asset-key component (or the ``table`` metadata); its schema is the
    ``schema`` metadata, else the asset-key prefix (its components joined by ``__``), else
    this IO manager's ``schema``, else ``public``. An op output that is not an asset is
    stored in a table named after its step and output (see the README). A table is owned by
    the output that first wrote it: another output writing it fails unless both say
    ``shared_table: true``. How rows are written comes from the asset's definition metadata:
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
            "Schema for outputs whose asset key has no prefix and whose metadata names none; "
            "unset: 'public'. An asset-key prefix that differs from it is refused."
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

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """Write the output's frame (pandas, polars, Arrow, or an iterator of frames) and
        attach what the write did as output metadata."""
        label = output_label(context)
        try:
            frame = to_arrow(obj)
            metadata = plain(context.definition_metadata)
            refuse_misspelled_keys(metadata)
            plan = WritePlan.from_options(
                **{key: metadata.get(key) for key in PLAN_KEYS},
                schema_evolution=metadata.get("schema_evolution", self.schema_evolution),
                exact_row_count=metadata.get("exact_row_count", self.exact_row_count),
            )
            schema, table = table_for(context, metadata, self.schema_)
            partition = partition_slices(context, metadata)
            owner = SHARED_OWNER if metadata.get("shared_table") else label
            if run_scoped(context, metadata) and frame.schema.names:
                # (A frame without columns is refused as it is, with nothing to tag.)
                frame = frame.with_constant(RUN_ID_COLUMN, context.run_id)
                plan = for_one_run(plan)
            result = self.postgres.run(
                lambda conn: copy_upsert(
                    conn,
                    frame,
                    schema=schema,
                    table=table,
                    plan=plan,
                    partition=partition,
                    owner=owner,
                    progress=context.log.info,
                    retries=self.retries,
                )
            )
        except CopyUpsertError as exc:
            raise exc.for_output(label) from exc

        database = self.postgres.database_url().database or "postgres"
        metadata_out: dict[str, Any] = {
            "dagster/table_name": f"{database}.{schema}.{table}",
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(name=name, type=pg_type) for name, pg_type in result.columns]
            ),
        }
        if result.row_count is not None:
            metadata_out["dagster/row_count"] = result.row_count
        # A range written in one run (a single-run backfill) records the same metadata on
        # each partition's materialization: the range's count is no partition's.
        ranged = context.has_asset_partitions and len(context.asset_partition_keys) > 1
        if result.partition_row_count is not None and not ranged:
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

    def load_input(self, context: InputContext) -> Any:
        """Read the upstream output's table (its partitions only, the ``columns`` input
        metadata only) as the input's annotation says: ``pandas.DataFrame`` (or no
        annotation), ``polars.DataFrame``, ``polars.LazyFrame`` or ``pyarrow.Table``.

        An input mapped to no partition of its upstream (the first partition of an asset
        that reads its own previous one) gets no rows: the table's columns, or no column if
        the table does not exist yet; so does an asset reading itself before its table
        exists (the first range of a single-run backfill)."""
        upstream = context.upstream_output
        label = output_label(upstream) if upstream is not None else input_label(context)
        unmapped = context.has_asset_partitions and not context.asset_partition_keys
        input_metadata = plain(context.definition_metadata)
        try:
            refuse_misspelled_keys(input_metadata, of_input=True)
            annotation = frame_annotation(context.dagster_type.typing_type)
            handler = handler_for_input(annotation)
            # A reader streams the table batch by batch, for tables larger than memory.
            streamed = annotation is pa.RecordBatchReader
        except CopyUpsertError as exc:
            raise exc.for_output(input_label(context)) from exc
        try:
            upstream_metadata = plain(upstream.definition_metadata) if upstream else {}
            refuse_misspelled_keys(upstream_metadata)
            schema, table = table_for(upstream or context, upstream_metadata, self.schema_)
            partition = (
                no_partition(upstream_metadata)
                if unmapped
                else partition_slices(context, upstream_metadata)
            )
            columns = input_metadata.get("columns")
            tagged = upstream is not None and run_scoped(upstream, upstream_metadata)
            if tagged and columns is not None:
                columns = [*([columns] if isinstance(columns, str) else columns), RUN_ID_COLUMN]
            name = f"{schema}.{table}"

            def to_frame(arrow: pa.Table, read_columns: Mapping[str, Column]) -> Any:
                if tagged and upstream is not None:
                    arrow, read_columns = check_run(arrow, read_columns, upstream.run_id, name)
                return convert(handler, arrow, read_columns, name)

            def read(conn: AsyncConnection, stream: ArrowStream | None = None) -> Any:
                return read_arrow(
                    conn,
                    schema=schema,
                    table=table,
                    columns=columns,
                    partition=partition,
                    stream=stream,
                )

            if streamed:
                return record_batch_reader(
                    self.postgres.run, read, to_frame, lambda exc: _named(exc, label)
                )
            return to_frame(*self.postgres.run(read))
        except TableNotFoundError as exc:
            if unmapped or reads_itself(context):
                if streamed:
                    return pa.RecordBatchReader.from_batches(pa.schema([]), [])
                return convert(handler, pa.table({}), {}, "")
            raise _named(exc, label) from exc
        except CopyUpsertError as exc:
            raise exc.for_output(label) from exc


def _named(exc: BaseException, label: str) -> BaseException:
    """Our errors with the asset (or op output) named; others as they are."""
    return exc.for_output(label) if isinstance(exc, CopyUpsertError) else exc
