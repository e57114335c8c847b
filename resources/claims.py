"""What a write claims on its table, decided with no I/O: a turn (writers replacing the same
table, or the same partition, run one after another) and the table's owner (the one output
that writes it, recorded in the table's comment).

**Turns.** A replace deletes what its statement's snapshot sees, so two replaces at once
would each miss the other's rows and leave both frames. Before its delete a replace takes
transaction-scoped advisory locks on ``(table oid, key)`` (:class:`LockForReplace`): a
whole-table replace the table's key 0 exclusively; a partition's replace key 0 shared and
its slice's units exclusively, with the units that enclose them shared, so that two slices
wait for each other exactly when they overlap: a key of a static or dynamic dimension is a
unit; a time window is cut into whole UTC years, months, days and hours (a sub-hour window
claims its whole hour), which enclose each other. A run over a range of partitions and a
run of one partition inside it so take turns too. Every writer takes its locks in one
order (the table's key first, then ascending), so replaces cannot deadlock on them.

**Owner.** The comment's last line ``dagster-copy-upsert owner: <owner>`` names the output
that writes the table; any other lines are the user's and are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .catalog import TableFacts
from .errors import TableOwnerError, WritePlanError
from .options import KeySlice, PartitionSlice, TimeWindowSlice
from .steps import LockForReplace, RecordOwner

OWNER_MARKER = "dagster-copy-upsert owner: "
# The table's own key; a partition's units hash to other keys.
TABLE_KEY = 0
# A slice of more units than this locks the whole table instead.
MAX_PARTITION_LOCKS = 256
LEVELS = ("year", "month", "day", "hour")


# ---- turns ---------------------------------------------------------------------------------------


def replace_lock(oid: int, partition: Sequence[PartitionSlice]) -> LockForReplace:
    """The locks a replace of ``partition`` (the whole table when empty) of table ``oid``
    takes, in the order it takes them."""
    table = oid - (1 << 32) if oid >= 1 << 31 else oid
    units = _units(partition)
    if units is None:
        return LockForReplace(table, ((TABLE_KEY, False),))
    exclusive = {_key(unit) for unit in units[0]}
    shared = {_key(unit) for unit in units[1]} - exclusive
    ordered = sorted([(k, False) for k in exclusive] + [(k, True) for k in shared])
    return LockForReplace(table, ((TABLE_KEY, True), *ordered))


Unit = tuple[tuple[str, Any], ...]


def _units(partition: Sequence[PartitionSlice]) -> tuple[set[Unit], set[Unit]] | None:
    """The slice's units (one value per dimension) and the units enclosing them; None when
    the whole table is to be locked (no slice, too many units, more than one time
    dimension, whose units would not nest)."""
    windows = [p for p in partition if isinstance(p, TimeWindowSlice)]
    if not partition or len(windows) > 1:
        return None
    exclusive: set[Unit] = {()}
    shared: set[Unit] = set()
    for part in sorted(partition, key=lambda p: p.column):
        if isinstance(part, KeySlice):
            values = [(part.column, ("key", key)) for key in part.keys]
            shared = {(*unit, v) for unit in shared for v in values}
            exclusive = {(*unit, v) for unit in exclusive for v in values}
        else:
            nodes = calendar_units(part.start, part.end)
            if nodes is None:
                return None
            enclosing = [(part.column, e) for node in nodes for e in _enclosing(*node)]
            shared = {(*unit, e) for unit in exclusive for e in enclosing}
            exclusive = {(*unit, (part.column, node)) for unit in exclusive for node in nodes}
        if len(exclusive) + len(shared) > MAX_PARTITION_LOCKS:
            return None
    return (exclusive, shared) if exclusive else None


def calendar_units(start: datetime, end: datetime) -> list[tuple[str, str]] | None:
    """[start, end) as the fewest whole UTC years, months, days and hours (level, start),
    widened to whole hours; None when there would be too many or the dates overflow."""
    units: list[tuple[str, str]] = []
    try:
        at, stop = _utc(start).replace(minute=0, second=0, microsecond=0), _utc(end)
        if stop != stop.replace(minute=0, second=0, microsecond=0):
            stop = _next(stop.replace(minute=0, second=0, microsecond=0), "hour")
        while at < stop:
            level = next(lv for lv in LEVELS if _fits(at, lv, stop))
            units.append((level, at.isoformat()))
            at = _next(at, level)
            if len(units) > MAX_PARTITION_LOCKS:
                return None
    except OverflowError:
        return None
    return units


def _fits(at: datetime, level: str, stop: datetime) -> bool:
    """Whether a unit of ``level`` starts at ``at`` and ends by ``stop`` (an hour always)."""
    return level == "hour" or (_floor(at, level) == at and _next(at, level) <= stop)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _floor(moment: datetime, level: str) -> datetime:
    if level == "year":
        return datetime(moment.year, 1, 1)
    if level == "month":
        return datetime(moment.year, moment.month, 1)
    if level == "day":
        return datetime(moment.year, moment.month, moment.day)
    return moment.replace(minute=0, second=0, microsecond=0)


def _next(moment: datetime, level: str) -> datetime:
    """The start of the next unit of ``level`` after the one ``moment`` starts."""
    if level == "year":
        return datetime(moment.year + 1, 1, 1)
    if level == "month":
        return datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1)
    return moment + timedelta(hours=24 if level == "day" else 1)


def _enclosing(level: str, start: str) -> list[tuple[str, str]]:
    """The units enclosing a unit: a day's month and year, ..."""
    moment = datetime.fromisoformat(start)
    return [(lv, _floor(moment, lv).isoformat()) for lv in LEVELS[: LEVELS.index(level)]]


def _key(unit: Unit) -> int:
    """A stable signed 32-bit lock key for a unit, never the table's own key."""
    digest = hashlib.sha256(repr(unit).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True) or 1


# ---- owner ---------------------------------------------------------------------------------------


def recorded_owner(comment: str | None) -> str | None:
    """The owner the table's comment records, if any."""
    for line in (comment or "").splitlines():
        if line.startswith(OWNER_MARKER):
            return line[len(OWNER_MARKER) :]
    return None


def comment_with_owner(comment: str | None, owner: str) -> str:
    """The comment with its owner line (last) naming ``owner``; the user's lines kept."""
    lines = [line for line in (comment or "").splitlines() if not line.startswith(OWNER_MARKER)]
    return "\n".join([*lines, OWNER_MARKER + owner])


def owner_steps(owner: str | None, table: TableFacts, name: str) -> tuple[RecordOwner, ...]:
    """Refuse a write by another output than the recorded owner; record ``owner`` on a table
    that has none, when the role may comment on it (is a member of its owner role).

    Raises:
        TableOwnerError: the table records another owner.
        WritePlanError: ``owner`` cannot be recorded in one line.
    """
    if owner is None:
        return ()
    if not owner or "\n" in owner or "\r" in owner:
        raise WritePlanError(f"owner {owner!r} of {name} must be one non-empty line of text")
    recorded = recorded_owner(table.comment)
    if recorded is None:
        return (RecordOwner(owner),) if table.may_comment else ()
    if recorded != owner:
        raise owner_error(name, recorded, owner)
    return ()


def owner_error(name: str, recorded: str, owner: str) -> TableOwnerError:
    return TableOwnerError(
        f"table {name} belongs to {recorded} (its comment says '{OWNER_MARKER}{recorded}'), "
        f"but {owner} writes it too; nothing was written: give one of them another table "
        "with the 'table' metadata, or mark both with metadata 'shared_table: true' (or, if "
        f"{recorded} no longer writes it, delete that line from the table's comment)"
    )
