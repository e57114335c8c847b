"""The example project: assets written by the COPY-upsert IO manager."""

from __future__ import annotations

import pandas as pd
from dagster import AssetIn, Definitions, asset

from resources import PostgresResource, PostgresUpsertIOManager

# url unset: DATABASE_URL when it is set, else the embedded PostgreSQL.
postgres = PostgresResource()


@asset(key_prefix=["shop"], metadata={"conflict_target": ["sku"]})
def products() -> pd.DataFrame:
    """The product catalogue, upserted on its SKU."""
    return pd.DataFrame(
        {
            "sku": ["apple-1", "pear-2", "plum-3"],
            "name": ["Apple", "Pear", "Plum"],
            "price": [0.5, 0.75, 0.3],
        }
    )


@asset(key_prefix=["shop"], metadata={"conflict_target": ["order_id"]})
def orders() -> pd.DataFrame:
    """Orders, upserted on their id."""
    return pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4],
            "sku": ["apple-1", "pear-2", "apple-1", "plum-3"],
            "quantity": [3, 1, 5, 10],
            "ordered_at": pd.to_datetime(
                ["2024-05-01 09:00", "2024-05-01 12:30", "2024-05-02 08:15", "2024-05-03 17:45"]
            ).tz_localize("UTC"),
        }
    )


@asset(
    key_prefix=["shop"],
    ins={
        "products": AssetIn(key_prefix=["shop"], metadata={"columns": ["sku", "price"]}),
        "orders": AssetIn(key_prefix=["shop"], metadata={"columns": ["sku", "quantity"]}),
    },
    metadata={"conflict_target": ["sku"]},
)
def revenue_by_product(products: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Revenue per product, read back from the two tables above."""
    joined = orders.merge(products, on="sku")
    joined["revenue"] = joined["quantity"] * joined["price"]
    return joined.groupby("sku", as_index=False)[["quantity", "revenue"]].sum()


defs = Definitions(
    assets=[products, orders, revenue_by_product],
    resources={"postgres": postgres, "io_manager": PostgresUpsertIOManager(postgres=postgres)},
)
