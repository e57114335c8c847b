"""Dagster partitions as PostgreSQL's own (declarative) partitions: which child tables a write
into a natively partitioned table needs, named and bounded, as data. No I/O.

A time-window slice makes a ``RANGE`` level, a set of keys a ``LIST`` level; each partition
of the slice is one child table, named after the parent and the partition, in the parent's
schema. A multi-partitioned asset's second dimension sub-partitions each child of the first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .options import PartitionSlice, TimeWindowSlice
from .sql import fitted_name

Strategy = Literal["range", "list"]

# pg_partitioned_table.partstrat of each strategy.
STRATEGY_CODES: dict[str, Strategy] = {"r": "range", "l": "list"}


@dataclass(frozen=True)
class ChildTable:
    """One partition's table: ``FOR VALUES FROM (values[0]) TO (values[1])`` of a range
    level, ``FOR VALUES IN (values[0])`` of a list level, the values as text the server
    converts to the column's type. ``partition_by``: the level below it, for a
    sub-partitioned child."""

    name: str
    parent: str
    strategy: Strategy
    values: tuple[str, ...]
    partition_by: tuple[Strategy, str] | None = None


def strategy(part: PartitionSlice) -> Strategy:
    """How a slice's column partitions the table."""
    return "range" if isinstance(part, TimeWindowSlice) else "list"


def partition_by(partition: Sequence[PartitionSlice], level: int = 0) -> tuple[Strategy, str]:
    """The ``PARTITION BY`` of a level: its strategy and column."""
    return strategy(partition[level]), partition[level].column


def children(table: str, partition: Sequence[PartitionSlice]) -> tuple[ChildTable, ...]:
    """The child tables holding ``partition``'s rows of ``table``, each parent before its
    children."""
    return _level(table, partition, 0)


def _level(parent: str, partition: Sequence[PartitionSlice], level: int) -> tuple[ChildTable, ...]:
    if level == len(partition):
        return ()
    part = partition[level]
    below = partition_by(partition, level + 1) if level + 1 < len(partition) else None
    made: list[ChildTable] = []
    bounds: list[tuple[str, tuple[str, ...]]] = (
        [(_window_label(start), (start.isoformat(), end.isoformat())) for start, end in part.parts]
        if isinstance(part, TimeWindowSlice)
        else [(_key_label(key), (key,)) for key in part.keys]
    )
    for label, values in bounds:
        child = ChildTable(fitted_name(f"{parent}_{label}"), parent, strategy(part), values, below)
        made.append(child)
        made.extend(_level(child.name, partition, level + 1))
    return tuple(made)


def _window_label(start: datetime) -> str:
    """The window's start as its zone's clock shows it; with the UTC offset when that clock
    shows the time twice (the hour repeated when summer time ends)."""
    label = start.strftime("%Y%m%d" if start.time() == datetime.min.time() else "%Y%m%d_%H%M")
    other = start.replace(fold=1 - start.fold)
    if start.tzinfo is not None and other.utcoffset() != start.utcoffset():
        label += start.strftime("_%z").replace("+", "p").replace("-", "m")
    return label


def _key_label(key: str) -> str:
    """The key as it is when it is a plain word; else its word characters and a digest, so
    that two keys never share a child ("a-b" and "a_b")."""
    plain = re.sub(r"\W", "_", key, flags=re.ASCII)
    if plain == key and key:
        return key
    return f"{plain}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
