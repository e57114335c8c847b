"""Replaces take turns: eight Dagster runs replacing one table (or one partition) at once
leave exactly one run's frame, never the union of several (each DELETE sees only committed
rows under READ COMMITTED); other partitions are untouched. Keyed and unkeyed replaces."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pytest
from dagster import StaticPartitionsDefinition

from resources import PostgresResource

from .conftest import Database
from .helpers import frame_asset, run_assets, written

pytestmark = pytest.mark.slow

WRITERS = 8
TABLE = "shop.products"
REGIONS = StaticPartitionsDefinition(["a", "b", "c"])


def frame_of(writer: int, region: str = "b") -> pd.DataFrame:
    """Writer ``writer``'s frame: 50k to 120k rows of ids of its own, its number in ``w``."""
    rows = 50_000 + writer * 10_000
    start = writer * 1_000_000
    return pd.DataFrame(
        {
            "id": range(start, start + rows),
            "region": [region] * rows,
            "w": [writer] * rows,
            "v": [float(writer)] * rows,
        }
    )


def replace_at_once(
    database_url: str, metadata: dict[str, Any], partitioned: bool
) -> list[dict[str, Any]]:
    """Materialize the eight writers' frames at once, each in a Dagster run of its own (from
    threads, each with a resource of its own); return each run's output metadata."""
    barrier = threading.Barrier(WRITERS)
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * WRITERS

    def writer(w: int) -> None:
        postgres = PostgresResource(url=database_url)
        asset = frame_asset(
            lambda: frame_of(w),
            metadata=metadata,
            partitions_def=REGIONS if partitioned else None,
        )
        try:
            barrier.wait(60)
            result = run_assets([asset], postgres, partition_key="b" if partitioned else None)
            results[w] = written(result)
        except BaseException as exc:  # reported below, with the writer's number
            results[w] = exc
        finally:
            postgres.dispose()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    failures = [(w, r) for w, r in enumerate(results) if isinstance(r, BaseException)]
    assert not failures, failures
    return [r for r in results if not isinstance(r, BaseException)]


def assert_one_frame(db: Database, where: str = "true") -> int:
    """The rows (of ``where``) are exactly one writer's frame; return that writer."""
    writers = db.fetch(f"SELECT DISTINCT w FROM {TABLE} WHERE {where}")
    assert len(writers) == 1, f"rows of writers {sorted(r['w'] for r in writers)} remain"
    w = writers[0]["w"]
    expected = frame_of(w)
    stored = db.fetch(
        f"SELECT count(*) AS n, min(id) AS lo, max(id) AS hi, count(DISTINCT id) AS ids "
        f"FROM {TABLE} WHERE {where}"
    )[0]
    assert stored == {
        "n": len(expected),
        "lo": expected["id"].min(),
        "hi": expected["id"].max(),
        "ids": len(expected),
    }
    return int(w)


KEYS = pytest.mark.parametrize(
    "metadata",
    [
        {"conflict_target": "id", "write_mode": "replace"},
        {"write_mode": "replace"},
    ],
    ids=["keyed", "unkeyed"],
)


@KEYS
def test_eight_runs_replacing_one_table_leave_exactly_one_frame(
    database_url: str, db: Database, metadata: dict[str, Any]
) -> None:
    for _ in range(2):  # into a missing table, then into one holding a frame
        results = replace_at_once(database_url, metadata, partitioned=False)
        assert_one_frame(db)
        staged = sorted(r["rows_staged"] for r in results)
        assert staged == [len(frame_of(w)) for w in range(WRITERS)]


@KEYS
def test_eight_runs_replacing_one_partition_leave_exactly_one_frame_there(
    database_url: str, db: Database, postgres: PostgresResource, metadata: dict[str, Any]
) -> None:
    partitioned = {**metadata, "partition_expr": "region"}
    for n, region in enumerate(("a", "c")):
        others = frame_asset(
            lambda n=n, region=region: frame_of(100 + n, region).head(1_000),  # type: ignore[misc]
            metadata=partitioned,
            partitions_def=REGIONS,
        )
        assert run_assets([others], postgres, partition_key=region).success
    before = db.fetch(
        f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS sum, count(*) AS n "
        f"FROM {TABLE} AS t WHERE region <> 'b'"
    )
    for _ in range(2):  # into an empty partition, then into one holding a frame
        replace_at_once(database_url, partitioned, partitioned=True)
        assert_one_frame(db, "region = 'b'")
        after = db.fetch(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS sum, count(*) AS n "
            f"FROM {TABLE} AS t WHERE region <> 'b'"
        )
        assert after == before and before[0]["n"] == 2_000
