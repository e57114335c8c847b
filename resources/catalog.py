"""Everything a write or a read needs to know about its table, in one round trip.

:func:`read_catalog` also switches the transaction's ``TimeZone`` to UTC (``SET LOCAL``), so
that converting between ``timestamp`` and ``timestamptz`` never depends on the server's or
the role's setting, and returns the setting it replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from .types import PgType

# Staging tables are named with this prefix (see plan.stage_name).
STAGE_PREFIX = "copy_upsert_stage_"


@dataclass(frozen=True)
class Column:
    """A table column: its type, whether it is NOT NULL, whether an insert that leaves it
    out fills it (a default, an identity or a generated column)."""

    name: str
    type: PgType
    not_null: bool = False
    has_default: bool = False


@dataclass(frozen=True)
class TableFacts:
    """The target relation. ``kind`` is ``pg_class.relkind`` (``"r"`` a table, ``"p"`` a
    partitioned table, ``"v"`` a view, ...); ``unique_keys`` the column sets of its unique
    indexes that ``ON CONFLICT`` can use; ``size_bytes`` its main fork's size now (a stat of
    its files, no scan); ``estimated_rows`` the planner's estimate (-1: never counted)."""

    kind: str
    columns: Mapping[str, Column]
    unique_keys: tuple[frozenset[str], ...] = ()
    has_rules: bool = False
    size_bytes: int = 0
    estimated_rows: float = -1


@dataclass(frozen=True)
class Catalog:
    """What the server says about the target: the table (None when there is none), whether
    its schema exists, the server's major version, the session's ``TimeZone`` before this
    transaction set it to UTC, and the session's staging tables, oldest first."""

    table: TableFacts | None
    schema_exists: bool
    server_version: int
    previous_time_zone: str
    stages: tuple[str, ...] = ()


# The uncorrelated subqueries run in the order of the select list: the previous TimeZone is
# read before set_config replaces it. JSON travels as text, whatever codecs the connection has.
_QUERY = r"""
WITH target AS (
    SELECT c.oid, c.relkind::text AS kind, c.relhasrules AS has_rules,
           pg_relation_size(c.oid) AS size_bytes, c.reltuples::float8 AS estimated_rows
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = $2
)
SELECT
    current_setting('TimeZone') AS previous_time_zone,
    set_config('TimeZone', 'UTC', true) AS time_zone,
    EXISTS (SELECT FROM pg_namespace WHERE nspname = $1) AS schema_exists,
    (SELECT json_build_object(
        'kind', kind, 'has_rules', has_rules, 'size_bytes', size_bytes,
        'estimated_rows', estimated_rows
     )::text FROM target) AS target,
    (SELECT json_agg(json_build_object(
        'name', a.attname,
        'display', format_type(a.atttypid, a.atttypmod),
        'not_null', a.attnotnull,
        'has_default', a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
        'base', CASE
            WHEN coalesce(e.typtype, b.typtype) = 'e' THEN 'enum'
            WHEN coalesce(e.typnamespace, b.typnamespace) <> 'pg_catalog'::regnamespace
                THEN 'other'
            ELSE coalesce(e.typname, b.typname) END,
        'array', e.oid IS NOT NULL,
        'domain', t.typtype = 'd',
        'modifier', CASE WHEN a.atttypmod <> -1 THEN a.atttypmod
                         WHEN t.typtype = 'd' THEN t.typtypmod ELSE -1 END
     ) ORDER BY a.attnum)::text
     FROM pg_attribute AS a
     JOIN pg_type AS t ON t.oid = a.atttypid
     JOIN pg_type AS b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
     LEFT JOIN pg_type AS e ON b.typcategory = 'A' AND b.typelem <> 0 AND e.oid = b.typelem
     WHERE a.attrelid = (SELECT oid FROM target) AND a.attnum > 0 AND NOT a.attisdropped
    ) AS columns,
    (SELECT json_agg(ARRAY(
        SELECT a.attname FROM unnest(i.indkey) AS k(attnum)
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum))::text
     FROM pg_index AS i
     WHERE i.indrelid = (SELECT oid FROM target) AND i.indisunique AND i.indimmediate
       AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
    ) AS unique_keys,
    (SELECT json_agg(relname ORDER BY oid)::text FROM pg_class
     WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r'
       AND starts_with(relname, $3)
    ) AS stages
"""


async def read_catalog(driver: asyncpg.Connection, schema: str, table: str) -> Catalog:
    """Read the facts about ``schema.table`` (names as stored, unquoted) and set the
    transaction's TimeZone to UTC. Run it inside the write's or read's transaction."""
    row = await driver.fetchrow(_QUERY, schema, table, STAGE_PREFIX)
    target = _json(row["target"])
    facts = None
    if target is not None:
        columns = {
            c["name"]: Column(
                name=c["name"],
                type=PgType(
                    c["base"],
                    modifier=c["modifier"],
                    array=c["array"],
                    domain=c["domain"],
                    display=c["display"],
                ),
                not_null=c["not_null"],
                has_default=c["has_default"],
            )
            for c in _json(row["columns"]) or []
        }
        facts = TableFacts(
            kind=target["kind"],
            columns=columns,
            unique_keys=tuple(frozenset(k) for k in _json(row["unique_keys"]) or []),
            has_rules=target["has_rules"],
            size_bytes=int(target["size_bytes"]),
            estimated_rows=float(target["estimated_rows"]),
        )
    return Catalog(
        table=facts,
        schema_exists=row["schema_exists"],
        server_version=driver.get_server_version().major,
        previous_time_zone=row["previous_time_zone"],
        stages=tuple(_json(row["stages"]) or ()),
    )


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)
