"""SQL-injection payloads everywhere a name or value reaches SQL: each works literally
(quoted) or fails with a clear error, and a canary table in another schema is never touched."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import AssetKey, StaticPartitionsDefinition, asset

from resources import (
    CopyUpsertError,
    KeySlice,
    PostgresResource,
    WritePlan,
    copy_upsert,
    read_table,
)

from .conftest import Database
from .helpers import failure_message, run_assets, written

PAYLOADS = [
    "'; DROP TABLE canary.secrets; --",
    '"; DROP TABLE canary.secrets; --',
    'x" OR "1"="1',
    "x' OR '1'='1",
    "$$; DROP TABLE canary.secrets; $$",
    "$tag$ DELETE FROM canary.secrets $tag$",
    "-- a comment",
    "/* a comment */ x",
    "Robert'); DROP TABLE canary.secrets;--",
    "back\\slash\\'",
    "E'\\x27; DROP TABLE canary.secrets'",
    "\u02bc OR 1=1 --",  # modifier letter apostrophe, a quote look-alike
    "\uff02; DROP TABLE canary.secrets; --",  # fullwidth quotation mark
    '""',
    "%s %(name)s {0}",
    "a;b",
    "new\nline",
    "tab\there",
    "🐘 SELECT pg_sleep(5)",
    "pg_temp.x",
    "nul\x00byte",
    "x" * 64,
]
IDS = [f"payload{i}" for i in range(len(PAYLOADS))]


@pytest.fixture
def canary(db: Database) -> Database:
    db.execute(
        "CREATE SCHEMA canary; CREATE TABLE canary.secrets (id int PRIMARY KEY, s text);"
        "INSERT INTO canary.secrets VALUES (1, 'untouched')"
    )
    return db


def _canary_intact(db: Database) -> bool:
    return db.fetch("SELECT s FROM canary.secrets") == [{"s": "untouched"}]


def _names_in_catalog(db: Database, schema: str, table: str) -> list[str]:
    rows = db.fetch(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 ORDER BY a.attnum",
        schema,
        table,
    )
    return [r["attname"] for r in rows]


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_payload_as_every_name_and_value(
    payload: str, postgres: PostgresResource, canary: Database
) -> None:
    frame = pd.DataFrame({payload: ["k1", "k2"], "v": [1, 2], "part": [payload, payload]})
    plan = WritePlan.from_options(conflict_target=[payload, "part"], update_columns=["v"])
    partition = [KeySlice("part", (payload,))]

    def write() -> object:
        return postgres.run(
            lambda conn: copy_upsert(
                conn, frame, schema=payload, table=payload, plan=plan, partition=partition
            )
        )

    clear = (
        "NUL byte"
        if "\x00" in payload
        else "63 bytes"
        if len(payload.encode()) > 63
        else "reserved for system schemas"
        if payload.startswith("pg_")
        else None
    )
    if clear:
        with pytest.raises(CopyUpsertError, match=clear):
            write()
    else:
        for _ in range(2):
            write()
        assert _names_in_catalog(canary, payload, payload) == [payload, "v", "part"]
        read = postgres.run(
            lambda conn: read_table(
                conn, schema=payload, table=payload, columns=[payload], partition=partition
            )
        )
        assert read[payload].tolist() == ["k1", "k2"]
    assert _canary_intact(canary)


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_payload_through_the_io_manager_in_metadata_and_partition_keys(
    payload: str, postgres: PostgresResource, canary: Database
) -> None:
    """Dagster itself allows only [A-Za-z0-9_] in asset names, so hostile schema and table
    names reach the IO manager through the 'schema' and 'table' metadata; partition keys
    may hold anything Dagster accepts."""
    try:
        regions = StaticPartitionsDefinition([payload])
    except Exception:  # Dagster refuses some characters in partition keys
        regions = StaticPartitionsDefinition(["plain"])
    partition_key = regions.get_partition_keys()[0]

    @asset(
        key=AssetKey(["hostile"]),
        partitions_def=regions,
        metadata={
            "schema": payload,
            "table": payload,
            "conflict_target": ["id", payload],
            "partition_expr": payload,
        },
    )
    def hostile() -> pd.DataFrame:
        return pd.DataFrame({"id": [1], payload: [partition_key]})

    result = run_assets([hostile], postgres, partition_key=partition_key, raise_on_error=False)
    if result.success:
        assert written(result, ("hostile",))["dagster/partition_row_count"] == 1
        assert _names_in_catalog(canary, payload, payload) == ["id", payload]
    else:
        message = failure_message(result)
        assert "Asset hostile:" in message
        assert any(reason in message for reason in ("63 bytes", "NUL byte", "reserved"))
    assert _canary_intact(canary)
