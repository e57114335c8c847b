"""What a write is asked to do: the options (:class:`WritePlan`), the partition slices, and
what it reports back (:class:`WriteResult`). Plain data, checked on construction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from .errors import WritePlanError

WriteMode = Literal["upsert", "replace", "append"]
OnConflict = Literal["update", "nothing"]
Duplicates = Literal["error", "keep_last", "keep_first"]
SchemaEvolution = Literal["add_columns", "strict"]
Partitioning = Literal["plain", "native"]

__all__ = [
    "Duplicates",
    "KeySlice",
    "OnConflict",
    "PartitionSlice",
    "Partitioning",
    "SchemaEvolution",
    "TimeWindowSlice",
    "WriteMode",
    "WritePlan",
    "WriteResult",
]


@dataclass(frozen=True)
class WritePlan:
    """How a frame is written. Build one with :meth:`from_options`, which checks every value."""

    write_mode: WriteMode
    conflict_target: tuple[str, ...] = ()
    on_conflict: OnConflict = "update"
    update_columns: tuple[str, ...] | None = None
    duplicates: Duplicates = "error"
    schema_evolution: SchemaEvolution = "add_columns"
    exact_row_count: bool = False
    partitioning: Partitioning = "plain"

    @classmethod
    def from_options(
        cls,
        conflict_target: str | Sequence[str] | None = None,
        write_mode: str | None = None,
        on_conflict: str | None = None,
        update_columns: str | Sequence[str] | None = None,
        duplicates: str | None = None,
        schema_evolution: str | None = None,
        exact_row_count: bool | None = None,
        partitioning: str | None = None,
    ) -> WritePlan:
        """Check loosely typed options (as found in asset metadata) and fill in defaults.

        Args:
            conflict_target: the unique key, one column name or several.
            write_mode: ``"upsert"`` (default with a key), ``"replace"`` (default without one:
                the table, or the partition, becomes the frame) or ``"append"``.
            on_conflict: ``"update"`` (default) or ``"nothing"``, for rows whose key exists.
            update_columns: the columns overwritten on conflict; default every non-key column.
            duplicates: ``"error"`` (default), ``"keep_last"`` or ``"keep_first"``, for a key
                that appears more than once in the frame.
            schema_evolution: ``"add_columns"`` (default: a frame column the table lacks is
                added, nullable, in the same transaction) or ``"strict"`` (it is an error).
            exact_row_count: count the table's rows after every write, even when that scans
                a large table (default False: see :class:`WriteResult`).
            partitioning: for a partitioned asset, the table the first write creates:
                ``"plain"`` (default: one table, indexed on the partition column(s)) or
                ``"native"`` (PostgreSQL's declarative partitioning: a child table per
                Dagster partition, created by the write that first needs it).

        Raises:
            WritePlanError: an option has an unknown value or the wrong type.
        """
        key = _names("conflict_target", conflict_target) or ()
        mode = _choice("write_mode", write_mode, WriteMode, "upsert" if key else "replace")
        if mode == "upsert" and not key:
            raise WritePlanError(
                "write_mode 'upsert' needs a conflict_target: set the metadata key "
                "'conflict_target' to the column(s) of the table's unique key"
            )
        updates = _names("update_columns", update_columns)
        if mode != "upsert":
            # A replace makes the table the frame, an append only inserts: neither keeps a
            # stored row, or some of its columns, as it was.
            keeping = {"on_conflict 'nothing'": on_conflict == "nothing", "update_columns": updates}
            given = [name for name, value in keeping.items() if value]
            if given:
                options = " and ".join(given)
                raise WritePlanError(
                    f"write_mode {mode!r} {_WHAT_MODES_DO[mode].format(options=options)}: drop "
                    f"{options}, or use write_mode 'upsert'"
                )
        if updates is not None:
            overlap = sorted(set(updates) & set(key))
            if overlap:
                raise WritePlanError(
                    f"update_columns {overlap} are part of the conflict_target; "
                    "list only non-key columns in update_columns"
                )
        return cls(
            write_mode=mode,
            conflict_target=key,
            on_conflict=_choice("on_conflict", on_conflict, OnConflict, "update"),
            update_columns=updates,
            duplicates=_choice("duplicates", duplicates, Duplicates, "error"),
            schema_evolution=_choice(
                "schema_evolution", schema_evolution, SchemaEvolution, "add_columns"
            ),
            exact_row_count=_flag("exact_row_count", exact_row_count),
            partitioning=_choice("partitioning", partitioning, Partitioning, "plain"),
        )


_WHAT_MODES_DO = {
    "replace": "makes the table (or the partition) the frame, every row as sent, where "
    "{options} would keep stored values",
    "append": "only inserts rows (a key already stored fails the write), where {options} "
    "would do nothing",
}


@dataclass(frozen=True)
class TimeWindowSlice:
    """The rows whose ``column`` lies in [start, end): a time-window partition, or several
    adjacent ones, each (start, end) in ``windows`` (default: the one window)."""

    column: str
    start: datetime
    end: datetime
    windows: tuple[tuple[datetime, datetime], ...] = ()

    @property
    def parts(self) -> tuple[tuple[datetime, datetime], ...]:
        """The window of each partition the slice holds."""
        return self.windows or ((self.start, self.end),)


@dataclass(frozen=True)
class KeySlice:
    """The rows whose ``column`` is one of ``keys``: static or dynamic partitions."""

    column: str
    keys: tuple[str, ...]


PartitionSlice = TimeWindowSlice | KeySlice


@dataclass(frozen=True)
class WriteResult:
    """What a write did. ``rows_unchanged`` counts staged rows whose stored row was left
    as it was (equal already, or ``on_conflict="nothing"``).

    ``row_count`` (and ``partition_row_count``) are exact, or None where knowing them would
    mean scanning a large table: they are known for free after a first write or a replace,
    counted when the table is small (see ``plan.COUNT_ROWS_UP_TO_BYTES``) or the plan sets
    ``exact_row_count``, and left out otherwise. ``columns`` are the table's (name, type)
    pairs after the write."""

    rows_staged: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_deleted: int
    row_count: int | None
    partition_row_count: int | None
    columns: tuple[tuple[str, str], ...] = field(default=())


def _names(option: str, value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise WritePlanError(
        f"{option} must be a column name or a non-empty list of column names, got {value!r}"
    )


def _choice(option: str, value: str | None, allowed: Any, default: str) -> Any:
    choices = get_args(allowed)
    if value is None:
        return default
    if value not in choices:
        raise WritePlanError(
            f"unknown {option} {value!r}: use one of {', '.join(repr(c) for c in choices)}"
        )
    return value


def _flag(option: str, value: bool | None) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise WritePlanError(f"{option} must be true or false, got {value!r}")
    return value
