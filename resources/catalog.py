"""Everything a write or a read needs to know about its table, in one round trip.

:func:`read_catalog` also sets, for the transaction only (``SET LOCAL``), the settings that
values depend on, whatever the server's or the role's defaults (:data:`SESSION_SETTINGS`),
and returns those it replaced; :func:`restore_settings` puts them back.
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

# UTC: converting between timestamp and timestamptz never depends on the session. ISO: the
# only date format Arrow parses. A positive extra_float_digits: floats print exactly.
SESSION_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO", "extra_float_digits": "3"}


@dataclass(frozen=True)
class Column:
    """A table column: its type, whether it is NOT NULL, whether an insert that leaves it
    out fills it (a default, an identity or a generated column)."""

    name: str
    type: PgType
    not_null: bool = False
    has_default: bool = False
    # GENERATED ALWAYS AS (...): the table computes it, and refuses a value for it.
    generated: bool = False


@dataclass(frozen=True)
class TableFacts:
    """The target relation. ``kind`` is ``pg_class.relkind`` (``"r"`` a table, ``"p"`` a
    partitioned table, ``"v"`` a view, ...); ``unique_keys`` the column sets of its unique
    indexes that ``ON CONFLICT`` can use; ``size_bytes`` its main fork's size now (a stat of
    its files, no scan: the estimate of its size the plan uses), None for a partitioned
    table (summing its partitions' would lock every one of them, at every write and read)."""

    kind: str
    columns: Mapping[str, Column]
    unique_keys: tuple[frozenset[str], ...] = ()
    has_rules: bool = False
    size_bytes: int | None = 0
    # pg_class.oid (the replace locks' key), the table's comment (which records its owner,
    # see claims.py), and whether the role may comment on it (a member of its owner role).
    oid: int = 0
    comment: str | None = None
    may_comment: bool = True
    # A partitioned table's strategy ("r" range, "l" list, "h" hash) and key columns ("" for
    # an expression).
    partition_strategy: str | None = None
    partition_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """What the server says about the target: the table (None when there is none), whether
    its schema exists, the server's major version, the session's values of
    :data:`SESSION_SETTINGS` before this transaction set them, and the session's staging
    tables, oldest first."""

    table: TableFacts | None
    schema_exists: bool
    server_version: int
    previous_settings: Mapping[str, str]
    stages: tuple[str, ...] = ()


# The select list runs in order: each previous setting is read before set_config replaces
# it. JSON travels as text, whatever codecs the connection has.
_QUERY = r"""
WITH target AS (
    SELECT c.oid, c.relkind::text AS kind, c.relhasrules AS has_rules,
           CASE WHEN c.relkind <> 'p' THEN pg_relation_size(c.oid) END AS size_bytes,
           obj_description(c.oid, 'pg_class') AS comment,
           pg_has_role(c.relowner, 'USAGE') AS may_comment
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = $2
)
SELECT
    current_setting('TimeZone') AS "TimeZone",
    current_setting('DateStyle') AS "DateStyle",
    current_setting('extra_float_digits') AS extra_float_digits,
    set_config('TimeZone', $4, true), set_config('DateStyle', $5, true),
    set_config('extra_float_digits', $6, true),
    EXISTS (SELECT FROM pg_namespace WHERE nspname = $1) AS schema_exists,
    (SELECT json_build_object(
        'kind', kind, 'has_rules', has_rules, 'size_bytes', size_bytes, 'oid', oid,
        'comment', comment, 'may_comment', may_comment,
        'partition_strategy', (SELECT partstrat FROM pg_partitioned_table WHERE partrelid = oid),
        'partition_columns', (SELECT ARRAY(
            SELECT coalesce(a.attname, '') FROM unnest(p.partattrs) WITH ORDINALITY AS k(attnum, n)
            LEFT JOIN pg_attribute AS a ON a.attrelid = p.partrelid AND a.attnum = k.attnum
            ORDER BY k.n) FROM pg_partitioned_table AS p WHERE p.partrelid = oid)
     )::text FROM target) AS target,
    (SELECT json_agg(json_build_object(
        'name', a.attname,
        'display', format_type(a.atttypid, a.atttypmod),
        'not_null', a.attnotnull,
        'has_default', a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
        'generated', a.attgenerated <> '',
        'base', CASE
            WHEN coalesce(e.typtype, b.typtype) = 'e' THEN 'enum'
            WHEN coalesce(e.typnamespace, b.typnamespace) <> 'pg_catalog'::regnamespace
                THEN 'other'
            ELSE coalesce(e.typname, b.typname) END,
        'array', e.oid IS NOT NULL,
        'domain', t.typtype = 'd',
        'modifier', CASE WHEN a.atttypmod <> -1 THEN a.atttypmod
                         ELSE base.typmod END
     ) ORDER BY a.attnum)::text
     FROM pg_attribute AS a
     JOIN pg_type AS t ON t.oid = a.atttypid
     CROSS JOIN LATERAL (
        WITH RECURSIVE chain AS (
            SELECT t.oid, t.typtype, t.typbasetype, t.typtypmod, 0 AS depth
            UNION ALL
            SELECT d.oid, d.typtype, d.typbasetype, d.typtypmod, chain.depth + 1
            FROM chain JOIN pg_type AS d ON d.oid = chain.typbasetype
            WHERE chain.typtype = 'd'
        )
        SELECT (SELECT oid FROM chain WHERE typtype <> 'd') AS oid,
               coalesce((SELECT typtypmod FROM chain WHERE typtype = 'd' AND typtypmod <> -1
                         ORDER BY depth LIMIT 1), -1) AS typmod
     ) AS base
     JOIN pg_type AS b ON b.oid = base.oid
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
    """Read the facts about ``schema.table`` (names as stored, unquoted) and set
    :data:`SESSION_SETTINGS` for the transaction. Run it inside the write's or read's
    transaction."""
    row = await driver.fetchrow(_QUERY, schema, table, STAGE_PREFIX, *SESSION_SETTINGS.values())
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
                generated=c["generated"],
            )
            for c in _json(row["columns"]) or []
        }
        facts = TableFacts(
            kind=target["kind"],
            columns=columns,
            unique_keys=tuple(frozenset(k) for k in _json(row["unique_keys"]) or []),
            has_rules=target["has_rules"],
            size_bytes=target["size_bytes"],
            oid=int(target["oid"]),
            comment=target["comment"],
            may_comment=target["may_comment"],
            partition_strategy=target["partition_strategy"],
            partition_columns=tuple(target["partition_columns"] or ()),
        )
    return Catalog(
        table=facts,
        schema_exists=row["schema_exists"],
        server_version=driver.get_server_version().major,
        previous_settings={name: row[name] for name in SESSION_SETTINGS},
        stages=tuple(_json(row["stages"]) or ()),
    )


async def restore_settings(driver: asyncpg.Connection, catalog: Catalog) -> None:
    """Put back the settings :func:`read_catalog` changed. Needed only inside a caller's
    transaction: ours is then a savepoint, and SET LOCAL outlives a released savepoint."""
    await driver.execute(
        "SELECT " + ", ".join(f"set_config(${i * 2 + 1}, ${i * 2 + 2}, true)" for i in range(3)),
        *(value for pair in catalog.previous_settings.items() for value in pair),
    )


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)
