"""SQL text for the COPY-upsert, built in small functions from quoted identifiers.

Nothing here pastes a value into SQL: values travel as bind parameters ($1, $2, ...).
Type names come from PostgreSQL's own format_type() or from the encoder's fixed list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from .errors import TableMismatchError, WritePlanError
from .options import PartitionSlice, TimeWindowSlice
from .types import PgType, time_window_type

# NAMEDATALEN - 1: PostgreSQL silently truncates longer identifiers, which would make two
# long column names collide or point a write at the wrong table.
MAX_IDENTIFIER_BYTES = 63


def quote_ident(name: str) -> str:
    """Quote an identifier, keeping its case; reject what PostgreSQL would mangle."""
    if not name:
        raise WritePlanError("an empty name cannot be used as a PostgreSQL identifier")
    if "\x00" in name:
        raise WritePlanError(f"name {name!r} contains a NUL byte, which PostgreSQL cannot store")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise WritePlanError(
            f"name {name!r} is {len(name.encode())} bytes long; PostgreSQL names hold at most "
            f"{MAX_IDENTIFIER_BYTES} bytes: choose a shorter one"
        )
    return '"' + name.replace('"', '""') + '"'


def fitted_name(name: str) -> str:
    """A derived name as it is, or, beyond PostgreSQL's 63 bytes, its first 50 bytes and a
    digest of the whole, so that two long names never meet in one table."""
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name.encode()[: MAX_IDENTIFIER_BYTES - 13].decode(errors='ignore')}_{digest}"


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def column_list(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote_ident(column) for column in columns)


def create_table(
    target: str,
    columns: Sequence[tuple[str, str]],
    primary_key: Sequence[str],
    partition_by: tuple[str, str] | None = None,
) -> str:
    """CREATE TABLE IF NOT EXISTS with the columns and a primary key; ``partition_by``
    (strategy, column): a natively partitioned table."""
    definitions = [f"{quote_ident(name)} {pg_type}" for name, pg_type in columns]
    if primary_key:
        definitions.append(f"PRIMARY KEY ({column_list(primary_key)})")
    statement = f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(definitions)})"
    return statement + _partition_by(partition_by)


def add_primary_key(target: str, key: Sequence[str]) -> str:
    return f"ALTER TABLE {target} ADD PRIMARY KEY ({column_list(key)})"


def _partition_by(partition_by: tuple[str, str] | None) -> str:
    if partition_by is None:
        return ""
    strategy, column = partition_by
    return f" PARTITION BY {_STRATEGIES[strategy]} ({quote_ident(column)})"


_STRATEGIES = {"range": "RANGE", "list": "LIST"}


def create_index(name: str, target: str, columns: Sequence[str]) -> str:
    return f"CREATE INDEX IF NOT EXISTS {quote_ident(name)} ON {target} ({column_list(columns)})"


def create_partition(child: str, parent: str, partition_by: tuple[str, str] | None) -> str:
    """A table shaped like ``parent``, to be attached to it (sub-partitioned when
    ``partition_by`` says). Attaching takes a lighter lock on the parent than
    ``CREATE TABLE ... PARTITION OF``, which would block its readers until the commit."""
    return (
        f"CREATE TABLE {child} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        "INCLUDING GENERATED)" + _partition_by(partition_by)
    )


def partition_states() -> str:
    """For each name of the array $2 in schema $1, whose parent should be the same position
    of the array $3: whether a relation has that name, and whether it is a partition of that
    parent (one row per name)."""
    return (
        "SELECT u.name, c.oid IS NOT NULL AS taken, EXISTS (SELECT FROM pg_inherits AS i "
        "JOIN pg_class AS p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid "
        "AND p.relname = u.parent AND p.relnamespace = c.relnamespace) AS attached "
        "FROM unnest($2::text[], $3::text[]) AS u(name, parent) "
        "LEFT JOIN (pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "AND n.nspname = $1) ON c.relname = u.name"
    )


def attach_partition(parent: str, child: str, strategy: str) -> str:
    """``ALTER TABLE ... ATTACH PARTITION`` as a template for :func:`with_literals`: its
    bounds (two for a range, one for a list) are values."""
    bounds = "FROM (%L) TO (%L)" if strategy == "range" else "IN (%L)"
    return f"ALTER TABLE {_literal(parent)} ATTACH PARTITION {_literal(child)} FOR VALUES {bounds}"


def with_literals() -> tuple[str, str]:
    """Run a statement that takes no bind parameter (DDL, COMMENT ON) with values in it,
    quoted by the server: the first statement puts the template ($1, each ``%L`` a value)
    and the values ($2, a text array) into transaction-local settings; the second, a
    constant, formats the template with them and runs it."""
    template, values = "dagster_copy_upsert.template", "dagster_copy_upsert.values"
    return (
        f"SELECT set_config('{template}', $1, true), "
        f"set_config('{values}', array_to_json($2::text[])::text, true)",
        f"DO $$BEGIN EXECUTE format(current_setting('{template}'), VARIADIC ARRAY("
        f"SELECT json_array_elements_text(current_setting('{values}')::json))); END$$",
    )


def _literal(sql: str) -> str:
    """SQL text (quoted identifiers) inside a :func:`with_literals` template."""
    return sql.replace("%", "%%")


def create_stage(stage: str, columns: Sequence[tuple[str, str]]) -> str:
    definitions = ", ".join(f"{quote_ident(name)} {pg_type}" for name, pg_type in columns)
    # Emptied at every commit, kept for the session. Safe only because every write runs in
    # one explicit transaction: in autocommit the rows would vanish before the merge.
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(stage)} ({definitions}) "
        "ON COMMIT DELETE ROWS"
    )


def repeated_key(source: str, key: Sequence[str]) -> str:
    """One key staged more than once, if any (keys compared as the table's types)."""
    return (
        f"SELECT {column_list(key)} FROM {source} AS s GROUP BY {column_list(key)} "
        "HAVING count(*) > 1 LIMIT 1"
    )


def repeated_key_totals(source: str, key: Sequence[str]) -> str:
    """How many keys are staged more than once, and in how many rows."""
    return (
        "SELECT count(*), sum(copies) FROM (SELECT count(*) AS copies FROM "
        f"{source} AS s GROUP BY {column_list(key)} HAVING count(*) > 1) AS repeated"
    )


def delete_repeated_keys(
    stage: str, source: str, key: Sequence[str], row_number: str, *, keep_last: bool
) -> str:
    """Delete every staged row but the first (or last) of its key, the keys compared as the
    table's types (``source``, which carries the row numbers)."""
    number = quote_ident(row_number)
    order = "DESC" if keep_last else "ASC"
    return (
        f"DELETE FROM {quote_ident(stage)} WHERE {number} IN (SELECT {number} FROM "
        f"(SELECT {number}, row_number() OVER (PARTITION BY {column_list(key)} ORDER BY "
        f"{number} {order}) AS copy FROM {source} AS s) AS numbered WHERE copy > 1)"
    )


def analyze(stage: str, columns: Sequence[str]) -> str:
    """Gather the planner's statistics of some of the stage's columns."""
    return f"ANALYZE {quote_ident(stage)} ({column_list(columns)})"


def key_match(key: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote_ident(c)} = {right}.{quote_ident(c)}" for c in key)


def staged(stage: str, columns: Sequence[str], casts: Mapping[str, str]) -> str:
    """The stage as a FROM item, each column in ``casts`` cast to its table type: the server
    converts text to uuid, inet, an enum ... only when told to (their casts from text are
    explicit-only). Every statement that reads the stage as the table's rows reads this."""
    if not casts:
        return quote_ident(stage)
    picked = ", ".join(
        f"CAST({quote_ident(c)} AS {casts[c]}) AS {quote_ident(c)}"
        if c in casts
        else quote_ident(c)
        for c in columns
    )
    return f"(SELECT {picked} FROM {quote_ident(stage)})"


def comparable(columns: Sequence[str], prefix: str, compare_as: Mapping[str, str]) -> str:
    """The columns as a row to compare, a type without an equality operator (json) cast to
    one that has it (jsonb)."""
    return ", ".join(
        f"CAST({prefix}{quote_ident(c)} AS {compare_as[c]})"
        if c in compare_as
        else prefix + quote_ident(c)
        for c in columns
    )


def delete_missing_from_target(
    source: str, target: str, key: Sequence[str], where: str | None
) -> str:
    """For replace with a key: delete the stored rows (of the slice) the frame no longer has."""
    condition = f"NOT EXISTS (SELECT 1 FROM {source} AS s WHERE {key_match(key, 's', 't')})"
    if where:
        condition = f"({where}) AND {condition}"
    return f"DELETE FROM {target} AS t WHERE {condition}"


def lock_for_replace() -> str:
    """Transaction-scoped advisory locks ($1, key) on each key of the array $2, in order,
    each shared where the array $3 says."""
    return (
        "SELECT CASE WHEN u.shared THEN pg_advisory_xact_lock_shared($1::int4, u.key) "
        "ELSE pg_advisory_xact_lock($1::int4, u.key) END "
        "FROM unnest($2::int4[], $3::bool[]) WITH ORDINALITY AS u(key, shared, n) ORDER BY u.n"
    )


def lock_for_comment(target: str) -> str:
    """COMMENT ON's own lock, taken before the comment is read: then the comment read is the
    last one committed. It conflicts with itself, not with reads or writes of rows (ONLY:
    not on a partitioned table's partitions)."""
    return f"LOCK TABLE ONLY {target} IN SHARE UPDATE EXCLUSIVE MODE"


def table_comment() -> str:
    """The comment of the table $1 (a qualified, quoted name)."""
    return "SELECT obj_description(CAST($1::text AS regclass), 'pg_class')"


def comment_on_table(target: str) -> str:
    """COMMENT ON as a template for :func:`with_literals`: the comment is its value."""
    return f"COMMENT ON TABLE {_literal(target)} IS %L"


def delete_all(target: str, where: str | None) -> str:
    return f"DELETE FROM {target} AS t" + (f" WHERE {where}" if where else "")


def insert_from_stage(
    source: str, target: str, columns: Sequence[str], order_by: Sequence[str] = ()
) -> str:
    """INSERT the staged rows as they are, in key order when ``order_by`` names the key."""
    statement = (
        f"INSERT INTO {target} ({column_list(columns)}) SELECT {column_list(columns, 's.')} "
        f"FROM {source} AS s"
    )
    if order_by:
        statement += f" ORDER BY {column_list(order_by, 's.')}"
    return statement


def add_columns(target: str, columns: Sequence[tuple[str, str]]) -> str:
    """One ALTER TABLE adding the columns. Without IF NOT EXISTS: a column another writer
    added meanwhile, perhaps of another type, fails it, and the write is planned again."""
    clauses = ", ".join(f"ADD COLUMN {quote_ident(name)} {pg_type}" for name, pg_type in columns)
    return f"ALTER TABLE {target} {clauses}"


def too_long(stage: str, column: str) -> str:
    """A staged value of ``column`` longer than ``$1`` characters, if any."""
    col = quote_ident(column)
    return f"SELECT {col} FROM {quote_ident(stage)} WHERE char_length({col}) > $1 LIMIT 1"


def changed_by_cast(source: str, column: str, pg_type: str, unmodified: str) -> str:
    """A staged value of ``column`` that the cast to ``pg_type`` (a type with a modifier)
    would change, if any, as text."""
    col = f"s.{quote_ident(column)}"
    return (
        f"SELECT {col}::text FROM {source} AS s WHERE CAST({col} AS {pg_type}) "
        f"IS DISTINCT FROM CAST({col} AS {unmodified}) LIMIT 1"
    )


def outside_partition(source: str, columns: Sequence[str], where: str) -> str:
    """The partition columns of one staged row outside the partition, if any."""
    return (
        f"SELECT {column_list(columns, 't.')} FROM {source} AS t "
        f"WHERE ({where}) IS NOT TRUE LIMIT 1"
    )


def stored_in_other_partition(source: str, target: str, key: Sequence[str], where: str) -> str:
    """One staged key whose stored row lies outside the partition, if any."""
    return (
        f"SELECT {column_list(key, 's.')} FROM {source} AS s "
        f"JOIN {target} AS t ON {key_match(key, 's', 't')} WHERE ({where}) IS NOT TRUE LIMIT 1"
    )


def count_rows(target: str, where: str | None) -> str:
    return f"SELECT count(*) FROM {target} AS t" + (f" WHERE {where}" if where else "")


def prepare_stage(
    stage: str,
    columns: Sequence[tuple[str, str]],
    *,
    create: bool,
    clear: bool,
    evict: Sequence[str] = (),
) -> str:
    """One script (no parameters) that drops evicted stages, creates the stage and empties
    it, as asked."""
    statements = [f"DROP TABLE IF EXISTS {quote_ident(name)}" for name in evict]
    if create:
        statements.append(create_stage(stage, columns))
    if clear:
        statements.append(f"DELETE FROM {quote_ident(stage)}")
    return "; ".join(statements)


def merge(
    source: str,
    target: str,
    columns: Sequence[str],
    key: Sequence[str],
    on_conflict: str,
    update_columns: Sequence[str],
    *,
    refuse_repeated: bool,
    compare_as: Mapping[str, str],
    where: str | None = None,
) -> str:
    """MERGE the staged rows into the target, read from the stage in key order, and count
    what happened (``RETURNING merge_action()``: PostgreSQL 17 or later). ``where``: the
    partition's filter (alias ``t``): only the partition's rows are joined, found by its
    index (or its partitions) instead of a walk of the whole key index.

    One join of the sorted stage with the table decides every row; for a large stage the
    planner merge-joins it with the key index, so the writes walk the table's pages and its
    B-tree front to back, where ``INSERT ... ON CONFLICT`` probes the index and locks each
    row before deciding. A staged row equal to the stored one matches no WHEN clause: it
    takes no row lock and writes no row version.

    ``refuse_repeated``: a key staged more than once fails the statement with a
    cardinality violation as soon as its first copy is read, before that copy reaches the
    table, whatever triggers or WHEN clauses would do with it. The window that finds the
    copies sorts by the key, as the merge needs anyway: cheaper than a pass of its own.
    """
    keys = column_list(key, "s.")
    values = column_list(columns, "s.")
    picked = values
    whens = []
    if refuse_repeated:
        repeated = "copy_upsert_repeated"
        while repeated in columns:
            repeated += "_"
        # SQL has no RAISE: a scalar subquery that returns two rows fails the statement
        # ("more than one row returned by a subquery used as an expression"). CASE runs it
        # only for a repeated key. The first WHEN clause of each kind reads the marker of
        # every row; a filter in the source would do it too, but would make the planner
        # guess the stage a few rows long and hash it instead of merge-joining it.
        fail = "(SELECT true UNION ALL SELECT true)"
        picked += (
            f", CASE WHEN count(*) OVER (PARTITION BY {keys}) > 1 THEN {fail} END "
            f"AS {quote_ident(repeated)}"
        )
        marked = f"s.{quote_ident(repeated)}"
        whens += [
            f"WHEN MATCHED AND {marked} THEN DO NOTHING",
            f"WHEN NOT MATCHED AND {marked} THEN DO NOTHING",
        ]
    rows = f"SELECT {picked} FROM {source} AS s"
    if on_conflict == "update" and update_columns:
        changed = (
            f"({comparable(update_columns, 't.', compare_as)}) IS DISTINCT FROM "
            f"({comparable(update_columns, 's.', compare_as)})"
        )
        assignments = ", ".join(f"{quote_ident(c)} = s.{quote_ident(c)}" for c in update_columns)
        whens.append(f"WHEN MATCHED AND {changed} THEN UPDATE SET {assignments}")
    whens.append(f"WHEN NOT MATCHED THEN INSERT ({column_list(columns)}) VALUES ({values})")
    statement = (
        f"MERGE INTO {target} AS t USING ({rows} ORDER BY {keys}) AS s "
        f"ON {key_match(key, 't', 's')}{_and(where)} {' '.join(whens)}"
    )
    # DO NOTHING returns no row: what is not an insert is an update.
    return _counted(statement, "merge_action() = 'INSERT'")


def _and(where: str | None) -> str:
    return f" AND ({where})" if where else ""


def _counted(write: str, inserted: str) -> str:
    """Run ``write`` and return one row: how many rows it inserted, how many it updated.
    ``inserted`` tells, in RETURNING, an inserted row from an updated one."""
    return (
        f"WITH written AS ({write} RETURNING {inserted} AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted) AS inserted, "
        "count(*) FILTER (WHERE NOT inserted) AS updated FROM written"
    )


def insert_on_conflict(
    source: str,
    target: str,
    columns: Sequence[str],
    key: Sequence[str],
    on_conflict: str,
    update_columns: Sequence[str],
    *,
    compare_as: Mapping[str, str],
    counted: bool = True,
    where: str | None = None,
) -> str:
    """INSERT the staged rows in key order, resolving conflicts on the key, and count what
    happened. ``xmax = 0`` tells a freshly inserted row from an updated one. Unlike MERGE,
    this waits for a key that another writer is inserting at the same time, then resolves
    the conflict on it. ``counted=False``: no RETURNING (a partitioned table's cannot read
    xmax), the command tag counts the rows written. ``where``: the partition's filter (alias
    ``t``), which keeps the look for unchanged rows to the partition's."""
    rows = f"SELECT {column_list(columns, 's.')} FROM {source} AS s"
    update = updates_on_conflict(on_conflict, update_columns)
    if update:
        # Leave out rows equal to the stored row: they need no write, and skipping them here
        # (not in ON CONFLICT ... WHERE) takes no row lock and writes no row version.
        rows += f" WHERE NOT EXISTS ({_stored_row(target, key, update_columns, compare_as, where)})"
    # Key order: B-tree inserts stay local, and concurrent writers lock rows in the same
    # order, so they cannot deadlock.
    rows += f" ORDER BY {column_list(key, 's.')}"
    insert = f"INSERT INTO {target} AS t ({column_list(columns)}) {rows}"
    if not update:
        insert += f" ON CONFLICT ({column_list(key)}) DO NOTHING"
    else:
        assignments = ", ".join(
            f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in update_columns
        )
        # Concurrent writers may have changed the row since the stage was filtered.
        changed = (
            f"({comparable(update_columns, 't.', compare_as)}) IS DISTINCT FROM "
            f"({comparable(update_columns, 'EXCLUDED.', compare_as)})"
        )
        insert += f" ON CONFLICT ({column_list(key)}) DO UPDATE SET {assignments} WHERE {changed}"
    return _counted(insert, "t.xmax = 0") if counted else insert


def updates_on_conflict(on_conflict: str, update_columns: Sequence[str]) -> bool:
    """Whether :func:`insert_on_conflict` updates (and so reads the table, its ``where``
    parameters included) or only inserts."""
    return on_conflict == "update" and bool(update_columns)


def _stored_row(
    target: str,
    key: Sequence[str],
    columns: Sequence[str],
    compare_as: Mapping[str, str],
    where: str | None,
) -> str:
    """The stored row (alias ``t``, in the partition ``where`` selects) of staged row ``s``'s
    key, when ``columns`` are equal."""
    same = " AND ".join(
        f"{comparable([c], 's.', compare_as)} IS NOT DISTINCT FROM "
        f"{comparable([c], 't.', compare_as)}"
        for c in columns
    )
    return f"SELECT FROM {target} AS t WHERE {key_match(key, 's', 't')} AND {same}{_and(where)}"


def count_changed(
    source: str,
    target: str,
    key: Sequence[str],
    update_columns: Sequence[str],
    compare_as: Mapping[str, str],
    where: str | None = None,
) -> str:
    """How many staged rows have a stored row of their key that differs from them."""
    return (
        f"SELECT count(*) FROM {source} AS s WHERE EXISTS (SELECT FROM {target} AS t "
        f"WHERE {key_match(key, 's', 't')}{_and(where)}) AND NOT EXISTS "
        f"({_stored_row(target, key, update_columns, compare_as, where)})"
    )


def partition_filter(
    partition: Sequence[PartitionSlice], types: Mapping[str, PgType]
) -> tuple[str | None, list[Any]]:
    """SQL (on alias ``t``) selecting the partition's rows, and its parameters: a time window
    [start, end) as two ISO text parameters, a set of keys as one text array.

    Raises:
        TableMismatchError: a partition column is not in the table.
        WritePlanError: a time-window column is not a date or timestamp.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for part in partition:
        pg_type = types.get(part.column)
        if pg_type is None:
            raise TableMismatchError(f"partition_expr column {part.column!r} is not in the table")
        col = f"t.{quote_ident(part.column)}"
        first = len(params) + 1
        if isinstance(part, TimeWindowSlice):
            if not time_window_type(pg_type):
                raise WritePlanError(
                    f"partition_expr column {part.column!r} is {pg_type}; a time-window "
                    "partition needs a date or timestamp column"
                )
            # Parameters of the column's own type: the planner compares them with the
            # column as constants, so a partitioned table is pruned while planning (a cast
            # from text to a timestamp is not immutable, and would prune only at run time).
            bound = _TIME_BOUNDS[pg_type.name]
            if bound != "timestamptz" and part.start.replace(tzinfo=None) >= part.end.replace(
                tzinfo=None
            ):
                raise WritePlanError(
                    f"partition [{part.start}, {part.end}) holds no {pg_type} value of column "
                    f"{part.column!r}: its wall-clock start and end are the same (the hour "
                    "repeated when summer time ends); store the column as timestamptz, or "
                    "use a partitions definition in UTC"
                )
            clauses.append(f"{col} >= ${first}::{bound} AND {col} < ${first + 1}::{bound}")
            params += [_time_bound(part.start, bound), _time_bound(part.end, bound)]
        else:
            clauses.append(f"{col} = ANY(CAST(${first}::text[] AS {pg_type.unmodified}[]))")
            params.append(list(part.keys))
    return (" AND ".join(f"({c})" for c in clauses) or None), params


_TIME_BOUNDS = {"date": "date", "timestamp": "timestamp", "timestamptz": "timestamptz"}


def _time_bound(at: datetime, bound: str) -> date | datetime:
    """A window's bound as the column's type holds it: a zoned instant, or the wall-clock
    time (or date) in the window's own time zone."""
    if bound == "timestamptz":
        return at
    return at.date() if bound == "date" else at.replace(tzinfo=None)


def is_empty(target: str) -> str:
    """Whether the table holds no row (it walks dead rows until it finds a live one)."""
    return f"SELECT NOT EXISTS (SELECT FROM {target})"


def cast_probe(stage: str, column: str, pg_type: str) -> str:
    """Cast every staged value of ``column`` to ``pg_type``, to find which column fails."""
    return f"SELECT count(CAST({quote_ident(column)} AS {pg_type})) FROM {quote_ident(stage)}"


def affected(status: str) -> int:
    """Row count of a command tag such as ``INSERT 0 5``, ``DELETE 3`` or ``COPY 10``."""
    return int(status.rsplit(" ", 1)[-1])
