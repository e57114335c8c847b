"""The steps of a write, as plain data: what :mod:`resources.plan` decides and
:mod:`resources.write` carries out. Each step is one statement or check (``Attempt`` nests
steps with their fallback)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .native import ChildTable

# ---- steps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateTable:
    """Create the schema if it is missing, then the table, typed from the frame, with a
    primary key on the conflict target. Parallel creators take turns on an advisory lock."""

    schema: str
    columns: tuple[tuple[str, str], ...]
    primary_key: tuple[str, ...]
    # CREATE SCHEMA needs the CREATE privilege on the database even with IF NOT EXISTS.
    create_schema: bool = True
    # (strategy, column): created natively partitioned (its partitions come with writes).
    partition_by: tuple[str, str] | None = None
    # An index on a partitioned asset's partition column(s), so that a partition's write
    # and read find its rows without a scan: (its name, its columns), or None.
    index: tuple[str, tuple[str, ...]] | None = None
    # The primary key is added once the rows are in (AddPrimaryKey), when the table did not
    # exist: its index is then built from every row at once, not grown a row at a time.
    primary_key_after_rows: bool = False


@dataclass(frozen=True)
class AddPrimaryKey:
    """Add the primary key on the conflict target to the table this write created and
    filled; a key in two rows is refused, naming one."""


@dataclass(frozen=True)
class CreatePartitions:
    """Create and attach those of the frame's partitions' child tables that do not exist
    (each parent first). Creators of one table's partitions take turns; a writer whose
    children all exist takes no turn."""

    children: tuple[ChildTable, ...]


@dataclass(frozen=True)
class PrepareStage:
    """Make the staging table ready: drop ``evict`` (the session's oldest stages), create
    ``name`` unless the session has it, and empty it when ``clear`` (an earlier write in the
    caller's still open transaction may have left rows)."""

    name: str
    columns: tuple[tuple[str, str], ...]
    create: bool
    clear: bool
    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class CopyFrame:
    """Binary COPY of the frame into ``table`` (the stage, or the target itself), with each
    row's position in the frame when ``numbered``; ``analyze`` the stage's key afterwards."""

    into: Literal["stage", "target"]
    numbered: bool = False
    analyze: bool = False
    # Send the rows sorted by the key (sorted on the client): an empty table's key index
    # then grows at its right edge, about twice as fast as in random order.
    in_key_order: bool = False


@dataclass(frozen=True)
class KeepOnePerKey:
    """Delete every staged copy of a key but the first (or the last) in the frame."""

    keep_last: bool


@dataclass(frozen=True)
class CheckLengths:
    """Refuse staged text longer than a varchar(n) column holds (it would be trimmed)."""

    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CheckValuesKept:
    """Refuse a staged value the column's modifier would round: (column, the table's type,
    the same without its modifier) for each column to check."""

    columns: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class CheckRowsInPartition:
    """Refuse staged rows outside the partition being written, which ``bounds`` describes
    (for the message)."""

    columns: tuple[str, ...]
    bounds: str = ""


@dataclass(frozen=True)
class CheckKeysInPartition:
    """Refuse a staged key stored in another partition: the merge would move its row."""


@dataclass(frozen=True)
class RefuseRepeatedKeys:
    """Refuse a key staged more than once, naming one, how many and in how many rows."""


@dataclass(frozen=True)
class AddColumns:
    """``ALTER TABLE ... ADD COLUMN`` for frame columns the table lacks (a concurrent add of
    the same column fails it, and the write is planned again)."""

    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LockForReplace:
    """Wait for the other writers replacing the same rows, so that replaces of one table or
    partition take turns: transaction-scoped advisory locks ``(table, key)``, in the order of
    ``keys``, each ``(key, shared)``. The first is the table's own key (0): exclusive for a
    whole-table replace, shared for a partition's, which then takes its partition's units
    exclusively and the units enclosing them shared (see :mod:`resources.claims`). Readers
    and upserts take none of these locks. Taken after the stage is copied and checked,
    before the columns are added and the delete: the delete's snapshot then sees the rows
    the previous writer committed."""

    table: int  # the table's oid, as a signed 32-bit integer
    keys: tuple[tuple[int, bool], ...]


@dataclass(frozen=True)
class RecordOwner:
    """Record ``owner`` in the table's comment (a marker line; the user's lines are kept),
    after locking the table against another recorder and reading the comment again: one
    that recorded another owner meanwhile fails the write."""

    owner: str


@dataclass(frozen=True)
class Delete:
    """Delete the table's rows (those of the partition only, when ``partitioned``), or with
    ``missing_only`` only those whose key is not staged."""

    partitioned: bool
    missing_only: bool = False


@dataclass(frozen=True)
class Insert:
    """INSERT the staged rows as they are (in key order when ``in_key_order``). With
    ``diagnose_casts``, in a savepoint, so that a failed cast can be traced to its column."""

    in_key_order: bool = False
    diagnose_casts: bool = False


@dataclass(frozen=True)
class Merge:
    """Insert or update the staged rows by key: with ``MERGE`` or ``INSERT ... ON
    CONFLICT``. ``refuse_repeated`` makes the MERGE fail on a key staged twice."""

    statement: Literal["merge", "on_conflict"]
    on_conflict: Literal["update", "nothing"]
    update_columns: tuple[str, ...]
    refuse_repeated: bool = False
    diagnose_casts: bool = False
    # ON CONFLICT into a partitioned table, whose RETURNING cannot read xmax: its changed
    # rows are counted just before it (a key another writer inserts meanwhile then counts
    # as inserted, not updated; the rows written are the same).
    count_changed_first: bool = False


@dataclass(frozen=True)
class Attempt:
    """Run ``steps`` in a savepoint; when the server refuses them with one of ``unless``
    (SQLSTATE condition names), roll back to the savepoint and run ``otherwise`` instead."""

    steps: tuple[Step, ...]
    unless: tuple[str, ...]
    otherwise: tuple[Step, ...]


Step = (
    CreateTable
    | AddPrimaryKey
    | CreatePartitions
    | PrepareStage
    | CopyFrame
    | KeepOnePerKey
    | CheckLengths
    | CheckValuesKept
    | CheckRowsInPartition
    | CheckKeysInPartition
    | RefuseRepeatedKeys
    | AddColumns
    | LockForReplace
    | RecordOwner
    | Delete
    | Insert
    | Merge
    | Attempt
)

# How a count in the result is known: from the write's own counts, by counting, or not at all.
RowCount = Literal["inserted", "staged", "count", "unknown"]


@dataclass(frozen=True)
class Steps:
    """A planned write. ``stage`` is the staging table's name ("" on the direct path),
    ``where``/``params`` the partition filter on alias ``t``, ``casts`` the (column, staged
    type, table type) triples read from the stage with an explicit cast (and probed one by
    one to name the column a failed cast belongs to), ``compare_as`` the (column, type) pairs
    compared as that type to tell a changed row, ``row_count``/``partition_row_count`` how
    the result's counts are known, ``table_columns`` the table's (name, type) pairs after the
    write."""

    steps: tuple[Step, ...]
    stage: str = ""
    where: str | None = None
    params: tuple[Any, ...] = ()
    casts: tuple[tuple[str, str, str], ...] = ()
    compare_as: tuple[tuple[str, str], ...] = ()
    # The stage carries each row's position in the frame (duplicates keep_first/keep_last).
    numbered: bool = False
    # The table did not exist: the steps create it, and the write is planned again.
    replan: bool = False
    row_count: RowCount = "unknown"
    partition_row_count: RowCount | None = None
    table_columns: tuple[tuple[str, str], ...] = field(default=())
