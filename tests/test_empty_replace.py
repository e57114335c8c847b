"""A replace with an empty frame empties the table (or only the partition written) and
reports the rows it deleted; an upsert or append of an empty frame changes nothing. Through
Dagster runs, the table looked at before and after."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from dagster import StaticPartitionsDefinition

from resources import PostgresResource

from .conftest import Database
from .helpers import counts, frame_asset, run_assets, written

TABLE = "shop.products"
REGIONS = StaticPartitionsDefinition(["a", "b"])
EMPTY = pd.DataFrame(
    {
        "sku": pd.Series([], dtype="str"),
        "region": pd.Series([], dtype="str"),
        "price": pd.Series([], dtype="float64"),
    }
)


def rows(region: str, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {"sku": [f"{region}-{i}" for i in range(n)], "region": [region] * n, "price": [1.5] * n}
    )


@pytest.mark.parametrize("key", [None, "sku"], ids=["unkeyed", "keyed"])
def test_an_empty_replace_empties_the_table(
    postgres: PostgresResource, db: Database, key: str | None
) -> None:
    meta: dict[str, Any] = {"write_mode": "replace", "conflict_target": key}
    meta = {k: v for k, v in meta.items() if v is not None}
    first = written(run_assets([frame_asset(rows("a"), metadata=meta)], postgres))
    assert first["dagster/row_count"] == 3
    assert [r["sku"] for r in db.rows(TABLE, "sku")] == ["a-0", "a-1", "a-2"]
    emptied = written(run_assets([frame_asset(EMPTY, metadata=meta)], postgres))
    assert counts(emptied) == (0, 0, 0, 0, 3)
    assert emptied["dagster/row_count"] == 0
    assert db.rows(TABLE, "sku") == []


@pytest.mark.parametrize("mode", ["upsert", "append"])
def test_an_empty_upsert_or_append_changes_nothing(
    postgres: PostgresResource, db: Database, mode: str
) -> None:
    meta = {"write_mode": mode, "conflict_target": "sku"}
    run_assets([frame_asset(rows("a"), metadata=meta)], postgres)
    before = db.snapshot(TABLE)
    result = written(run_assets([frame_asset(EMPTY, metadata=meta)], postgres))
    assert counts(result) == (0, 0, 0, 0, 0)
    assert db.snapshot(TABLE) == before and before is not None and before[0] == 3


@pytest.mark.parametrize("key", [None, "sku"], ids=["unkeyed", "keyed"])
def test_an_empty_replace_of_a_partition_empties_only_that_partition(
    postgres: PostgresResource, db: Database, key: str | None
) -> None:
    meta: dict[str, Any] = {"write_mode": "replace", "partition_expr": "region"}
    if key:
        meta["conflict_target"] = key
    for region in ("a", "b"):
        asset = frame_asset(rows(region), metadata=meta, partitions_def=REGIONS)
        assert run_assets([asset], postgres, partition_key=region).success
    kept = db.fetch(f"SELECT * FROM {TABLE} WHERE region = 'a' ORDER BY sku")
    assert len(kept) == 3 and db.snapshot(TABLE) is not None
    asset = frame_asset(EMPTY, metadata=meta, partitions_def=REGIONS)
    result = written(run_assets([asset], postgres, partition_key="b"))
    assert counts(result) == (0, 0, 0, 0, 3)
    assert result["dagster/partition_row_count"] == 0
    assert result["dagster/row_count"] == 3
    assert db.fetch(f"SELECT * FROM {TABLE} ORDER BY sku") == kept


def test_an_empty_replace_of_a_missing_table_creates_it_empty(
    postgres: PostgresResource, db: Database
) -> None:
    result = written(run_assets([frame_asset(EMPTY, metadata={"write_mode": "replace"})], postgres))
    assert counts(result) == (0, 0, 0, 0, 0) and result["dagster/row_count"] == 0
    assert db.snapshot(TABLE) == (0, db.snapshot(TABLE)[1])  # type: ignore[index]
    columns = db.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'shop' AND table_name = 'products' ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns] == ["sku", "region", "price"]
