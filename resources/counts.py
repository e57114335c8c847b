"""How a write knows the table's and the partition's row counts afterwards, decided with no
I/O: from its own counts when they tell, by counting a small table (or a partition of a
table partitioned on its column), or not at all (a count of a large table would scan it)."""

from __future__ import annotations

from collections.abc import Sequence

from .catalog import TableFacts
from .options import PartitionSlice, WritePlan
from .steps import RowCount

# A table this small is counted after the write (the count costs less than a millisecond
# per MB); a larger one only with ``exact_row_count``.
COUNT_ROWS_UP_TO_BYTES = 8 << 20


def row_counts(
    options: WritePlan, table: TableFacts, partition: Sequence[PartitionSlice], empty: bool
) -> tuple[RowCount, RowCount | None]:
    """How the table's and the partition's row counts after the write are known (the
    second None without a partition). ``empty``: the table is known to hold no row."""
    small = table.size_bytes is not None and table.size_bytes <= COUNT_ROWS_UP_TO_BYTES
    counted: RowCount = "count" if options.exact_row_count or small else "unknown"
    # A replace, of an empty frame too, makes the table (or the partition) the frame.
    replacing = options.write_mode == "replace"
    if replacing and not partition:
        whole: RowCount = "staged"
    elif empty:
        whole = "inserted"
    else:
        whole = counted
    if not partition:
        return whole, None
    # A table partitioned on the slice's columns counts the partition in its children only.
    pruned = table.kind == "p" and set(table.partition_columns) <= {p.column for p in partition}
    part: RowCount = (
        "staged" if replacing else "inserted" if empty else "count" if pruned else counted
    )
    return whole, part
