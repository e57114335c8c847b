"""Building and materializing small assets against the test database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetsDefinition,
    ExecuteInProcessResult,
    PartitionsDefinition,
    asset,
    materialize,
)

from resources import PostgresResource, PostgresUpsertIOManager


def frame_asset(
    frame: pd.DataFrame | Callable[[], Any],
    *,
    key: Sequence[str] = ("shop", "products"),
    metadata: Mapping[str, Any] | None = None,
    partitions_def: PartitionsDefinition | None = None,
) -> AssetsDefinition:
    """An asset that returns ``frame`` (or what ``frame()`` returns)."""

    @asset(key=AssetKey(list(key)), metadata=dict(metadata or {}), partitions_def=partitions_def)
    def the_asset() -> Any:
        return frame() if callable(frame) else frame

    return the_asset


def resources_for(postgres: PostgresResource, **io_config: Any) -> dict[str, Any]:
    return {
        "postgres": postgres,
        "io_manager": PostgresUpsertIOManager(postgres=postgres, **io_config),
    }


def run_assets(
    assets: Sequence[Any],
    postgres: PostgresResource,
    *,
    io_config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ExecuteInProcessResult:
    return materialize(assets, resources=resources_for(postgres, **(io_config or {})), **kwargs)


def written(
    result: ExecuteInProcessResult, key: Sequence[str] = ("shop", "products")
) -> dict[str, Any]:
    """The output metadata of the last materialization of ``key`` in ``result``."""
    assert result.success
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(list(key))
    ]
    assert events, f"no materialization of {key}"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def counts(metadata: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    """(staged, inserted, updated, unchanged, deleted)."""
    return (
        metadata["rows_staged"],
        metadata["rows_inserted"],
        metadata["rows_updated"],
        metadata["rows_unchanged"],
        metadata["rows_deleted"],
    )


def failure_message(result: ExecuteInProcessResult) -> str:
    """Every message in the cause chain of the run's first step failure."""
    assert not result.success
    failures = result.get_step_failure_events()
    assert failures, "the run failed without a step failure"
    error = failures[0].step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)
