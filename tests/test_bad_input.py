"""Every bad input fails the step with a message naming the asset and what is wrong, and
leaves the target table exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from resources import PostgresResource

from .conftest import Database
from .helpers import failure_message, frame_asset, run_assets

TABLE = 'shop."products"'
GOOD = pd.DataFrame({"sku": ["a", "b", "c"], "price": [1.0, 2.0, 3.0], "qty": [1, 2, 3]})
KEYED = {"conflict_target": "sku"}


@dataclass
class Case:
    id: str
    output: Callable[[], Any]
    metadata: dict[str, Any]
    expected: list[str]
    # How the table exists before the bad write: written by the IO manager with this
    # metadata, or created by this SQL.
    seed_metadata: dict[str, Any] = field(default_factory=lambda: dict(KEYED))
    seed_sql: str | None = None


def with_column(name: str, values: list[Any]) -> Callable[[], pd.DataFrame]:
    return lambda: GOOD.assign(**{name: values})


CASES = [
    Case(
        "not-a-dataframe",
        lambda: [1, 2, 3],
        KEYED,
        ["returned list", "return a pandas or polars DataFrame"],
    ),
    Case("none-returned", lambda: None, KEYED, ["returned None, which", "annotate"]),
    Case(
        "conflict-target-missing",
        lambda: GOOD,
        {"conflict_target": "code"},
        ["conflict_target", "'code'", "frame's columns"],
    ),
    Case(
        "update-columns-missing",
        lambda: GOOD,
        {**KEYED, "update_columns": ["colour"]},
        ["update_columns", "'colour'"],
    ),
    Case("null-key", with_column("sku", ["a", None, "c"]), KEYED, ["'sku'", "1 NULL value"]),
    Case(
        "duplicate-keys",
        with_column("sku", ["a", "a", "c"]),
        KEYED,
        ["1 conflict_target key(s) on ['sku']", "'sku': 'a'", "keep_last"],
    ),
    Case(
        "unknown-write-mode",
        lambda: GOOD,
        {**KEYED, "write_mode": "merge"},
        ["unknown write_mode 'merge'", "'upsert'"],
    ),
    Case(
        "unknown-on-conflict",
        lambda: GOOD,
        {**KEYED, "on_conflict": "ignore"},
        ["unknown on_conflict 'ignore'"],
    ),
    Case(
        "unknown-duplicates",
        lambda: GOOD,
        {**KEYED, "duplicates": "drop"},
        ["unknown duplicates 'drop'"],
    ),
    Case("upsert-without-key", lambda: GOOD, {"write_mode": "upsert"}, ["needs a conflict_target"]),
    Case(
        "text-into-double-column",
        with_column("price", ["1", "x", "3"]),
        KEYED,
        ["'price'", "double precision", "text"],
    ),
    Case(
        "float-into-integer-column",
        with_column("qty", [1.0, 2.5, 3.0]),
        KEYED,
        ["'qty'", "is bigint", "double precision", "would not store unchanged"],
    ),
    Case(
        "value-out-of-range",
        with_column("qty", [1, 100_000, 3]),
        KEYED,
        ["'qty'", "smallint", "cannot be stored"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, qty smallint);"
        "INSERT INTO shop.products VALUES ('a', 1, 1)",
    ),
    Case(
        "no-unique-index-on-key",
        lambda: GOOD,
        KEYED,
        ["no unique index", "['sku']", "ADD UNIQUE"],
        seed_metadata={},
    ),
    Case(
        "unique-index-on-other-columns",
        lambda: GOOD,
        {"conflict_target": ["sku", "qty"]},
        ["no unique index", "['qty', 'sku']"],
    ),
    Case(
        "column-not-in-table-strict",
        with_column("colour", ["r", "g", "b"]),
        {**KEYED, "schema_evolution": "strict"},
        ["['colour']", "not in table shop.products", "'strict'"],
    ),
    Case(
        "unknown-schema-evolution",
        lambda: GOOD,
        {**KEYED, "schema_evolution": "loose"},
        ["unknown schema_evolution 'loose'"],
    ),
    Case("column-name-too-long", with_column("x" * 64, [1, 2, 3]), KEYED, ["64 bytes", "63"]),
    Case(
        "duplicate-column-names",
        lambda: pd.DataFrame([[1, 2]], columns=["sku", "sku"]),
        KEYED,
        ["['sku']", "more than once"],
    ),
    Case("unsupported-dtype", with_column("z", [1 + 2j, 3j, 1j]), KEYED, ["'z'", "complex"]),
    Case(
        "not-null-column-left-null",
        with_column("qty", pd.array([1, None, 3], dtype="Int64")),
        KEYED,
        ["'qty'", "NOT NULL", "fill the column's NULLs in the frame"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, "
        "qty int8 NOT NULL DEFAULT 0); INSERT INTO shop.products VALUES ('a', 1, 1)",
    ),
    Case(
        "generated-column-in-frame",
        with_column("total", [1.0, 4.0, 9.0]),  # a table read, then written back
        KEYED,
        ["column 'total' of table shop.products is generated", "drop it from the frame"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, qty int8, "
        "total float8 GENERATED ALWAYS AS (price * qty) STORED);"
        "INSERT INTO shop.products VALUES ('a', 1, 1)",
    ),
    Case(
        "nul-byte-in-text", with_column("name", ["a", "b\x00c", "d"]), KEYED, ["'name'", "NUL byte"]
    ),
    Case("mixed-object-column", with_column("z", [1, "x", 2.5]), KEYED, ["'z'", "dtype object"]),
    Case(
        "zoned-into-naive-column",
        with_column("at", pd.to_datetime(["2024-01-01"] * 3).tz_localize("UTC")),
        KEYED,
        ["'at'", "timestamp without time zone", "would not store unchanged"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, qty int8, "
        "at timestamp); INSERT INTO shop.products VALUES ('a', 1, 1, NULL)",
    ),
    Case(
        "text-too-long-for-varchar",
        with_column("code", ["ab", "toolong", "cd"]),
        KEYED,
        ["'code'", "at most 3 characters"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, qty int8, "
        "code varchar(3)); INSERT INTO shop.products VALUES ('a', 1, 1, 'x')",
    ),
    Case(
        "check-constraint-violated",
        with_column("price", [1.0, -5.0, 3.0]),
        KEYED,
        ["price_positive", "refused the frame's values"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, "
        "price float8 CONSTRAINT price_positive CHECK (price >= 0), qty int8);"
        "INSERT INTO shop.products VALUES ('a', 1, 1)",
    ),
    Case(
        "invalid-json-refused-by-the-copy",
        lambda: pa.table(
            {
                "sku": ["a", "b", "c"],
                "doc": pa.array(['{"ok": 1}', "{bad", "[]"], pa.json_(pa.string())),
            }
        ),
        KEYED,
        ["column 'doc'", "invalid input syntax for type json", "convert the column"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, doc jsonb);"
        "INSERT INTO shop.products VALUES ('z', '{}')",
    ),
    Case(
        "second-unique-constraint",
        with_column("qty", [7, 7, 7]),
        KEYED,
        ["unique constraint 'qty_unique'"],
        seed_sql="CREATE TABLE shop.products (sku text PRIMARY KEY, price float8, "
        "qty int8 CONSTRAINT qty_unique UNIQUE); INSERT INTO shop.products VALUES ('z', 1, 1)",
    ),
    Case(
        "target-is-a-view",
        lambda: GOOD,
        KEYED,
        ["shop.products is a view"],
        seed_sql="CREATE TABLE shop.base (sku text PRIMARY KEY);"
        "CREATE VIEW shop.products AS SELECT sku FROM shop.base",
    ),
    Case(
        "update-columns-with-key",
        lambda: GOOD,
        {**KEYED, "update_columns": ["sku"]},
        ["part of the conflict_target"],
    ),
    Case(
        "conflict-target-not-a-name",
        lambda: GOOD,
        {"conflict_target": 42},
        ["conflict_target must be a column name"],
    ),
    Case(
        "schema-name-too-long",
        lambda: GOOD,
        {**KEYED, "schema": "s" * 70},
        ["70 bytes"],
        seed_metadata={**KEYED},
    ),
    Case("empty-column-name", lambda: GOOD.rename(columns={"qty": ""}), KEYED, ["empty name"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(
    case: Case, postgres: PostgresResource, db: Database
) -> None:
    if case.seed_sql:
        db.execute(f"CREATE SCHEMA shop; {case.seed_sql}")
    else:
        assert run_assets([frame_asset(GOOD, metadata=case.seed_metadata)], postgres).success
    before = db.snapshot(TABLE)
    assert before is not None

    for _ in range(2):
        result = run_assets(
            [frame_asset(case.output, metadata=case.metadata)], postgres, raise_on_error=False
        )
        message = failure_message(result)
        assert "Asset shop/products" in message
        for fragment in case.expected:
            assert fragment in message
        assert db.snapshot(TABLE) == before


def test_a_failed_first_write_leaves_no_table_behind(
    postgres: PostgresResource, db: Database
) -> None:
    frame = GOOD.assign(qty=pd.array([1, 2, np.iinfo(np.int64).max], dtype="Int64"))
    bad = frame.assign(sku=["a", "a", "c"])
    result = run_assets([frame_asset(bad, metadata=KEYED)], postgres, raise_on_error=False)
    assert "appear more than once" in failure_message(result)
    assert db.snapshot(TABLE) is None
