"""The write planner, with no database: every write mode x table state x key shape, and each
decision the plan takes (merge statement, fallbacks, checks, staging, counts)."""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from resources.catalog import Catalog, Column, TableFacts
from resources.claims import (
    MAX_PARTITION_LOCKS,
    OWNER_MARKER,
    calendar_units,
    comment_with_owner,
    recorded_owner,
    replace_lock,
)
from resources.errors import TableMismatchError, TableOwnerError, WritePlanError
from resources.frame import ROWS_PER_CHUNK, prepare_frame
from resources.handlers import to_arrow
from resources.options import KeySlice, PartitionSlice, TimeWindowSlice, WritePlan
from resources.plan import (
    COUNT_ROWS_UP_TO_BYTES,
    MAX_STAGES,
    plan_summary,
    plan_write,
    stage_name,
    table_to_create,
)
from resources.steps import (
    AddColumns,
    Attempt,
    CheckLengths,
    CheckValuesKept,
    CopyFrame,
    Delete,
    LockForReplace,
    Merge,
    PrepareStage,
    RecordOwner,
    Steps,
)
from resources.types import PgType

KEYS: dict[str, Any] = {"none": None, "one": "id", "two": ["id", "region"]}
SIZES = {"missing": 0, "empty": 0, "filled": 8192, "large": 1 << 30, "partitioned": 8192}
PARTITION = (KeySlice("region", ("a",)),)

COLUMNS = {
    "id": Column("id", PgType("int8", display="bigint"), not_null=True),
    "region": Column("region", PgType("text", display="text"), not_null=True),
    "v": Column("v", PgType("float8", display="double precision")),
}


def frame(**extra: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3], "region": ["a", "a", "a"], "v": [1.0, 2.0, 3.0], **extra})


# frame() with a key in two rows.
REPEATED = pd.DataFrame({"id": [1, 1, 3], "region": ["a", "a", "a"], "v": [1.0, 2.0, 3.0]})


def catalog(
    key: Sequence[str] = ("id",),
    *,
    size: int = 8192,
    version: int = 18,
    columns: dict[str, Column] | None = None,
    kind: str = "r",
    rules: bool = False,
    stages: tuple[str, ...] = (),
) -> Catalog:
    table = TableFacts(
        kind,
        columns or COLUMNS,
        (frozenset(key),) if key else (),
        has_rules=rules,
        size_bytes=size,
    )
    return Catalog(table, True, version, "UTC", stages)


def planned(
    options: WritePlan,
    cat: Catalog,
    data: pd.DataFrame | None = None,
    partition: Sequence[PartitionSlice] = (),
    **kwargs: Any,
) -> Steps:
    prepared = prepare_frame(to_arrow(frame() if data is None else data), options, partition)
    return plan_write(
        options, cat, prepared, schema="public", table_name="t", partition=partition, **kwargs
    )


# (mode, key shape, table state) -> (steps, how row_count is known, how partition_row_count is)
MATRIX = {
    ("upsert", "one", "missing"): (["CreateTable"], "unknown", None),
    ("upsert", "one", "empty"): (
        [
            "Attempt[CopyFrame(target)|PrepareStage,CopyFrame(stage),Attempt[Insert|Attempt[Merge(merge)|Merge(on_conflict)]]]"
        ],
        "inserted",
        None,
    ),
    ("upsert", "one", "filled"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "count",
        None,
    ),
    ("upsert", "one", "large"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "unknown",
        None,
    ),
    ("upsert", "one", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            "CheckKeysInPartition",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "count",
        "count",
    ),
    ("upsert", "two", "missing"): (["CreateTable"], "unknown", None),
    ("upsert", "two", "empty"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "Attempt[Insert|Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]]",
        ],
        "inserted",
        None,
    ),
    ("upsert", "two", "filled"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "count",
        None,
    ),
    ("upsert", "two", "large"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "unknown",
        None,
    ),
    ("upsert", "two", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            # (none: the key holds the partition column)
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "count",
        "count",
    ),
    ("replace", "none", "missing"): (["CreateTable"], "unknown", None),
    ("replace", "none", "empty"): (
        ["LockForReplace", "Delete", "CopyFrame(target)"],
        "staged",
        None,
    ),
    ("replace", "none", "filled"): (
        ["LockForReplace", "Delete", "CopyFrame(target)"],
        "staged",
        None,
    ),
    ("replace", "none", "large"): (
        ["LockForReplace", "Delete", "CopyFrame(target)"],
        "staged",
        None,
    ),
    ("replace", "none", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            "LockForReplace",
            "Delete",
            "Insert",
        ],
        "count",
        "staged",
    ),
    ("replace", "one", "missing"): (["CreateTable"], "unknown", None),
    ("replace", "one", "empty"): (
        [
            "LockForReplace",
            "Delete",
            "Attempt[CopyFrame(target)|PrepareStage,CopyFrame(stage),LockForReplace,Delete,Attempt[Insert|Attempt[Merge(merge)|Merge(on_conflict)]]]",
        ],
        "staged",
        None,
    ),
    ("replace", "one", "filled"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "staged",
        None,
    ),
    ("replace", "one", "large"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "staged",
        None,
    ),
    ("replace", "one", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            "CheckKeysInPartition",
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|Merge(on_conflict)]",
        ],
        "count",
        "staged",
    ),
    ("replace", "two", "missing"): (["CreateTable"], "unknown", None),
    ("replace", "two", "empty"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "LockForReplace",
            "Delete",
            "Attempt[Insert|Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]]",
        ],
        "staged",
        None,
    ),
    ("replace", "two", "filled"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "staged",
        None,
    ),
    ("replace", "two", "large"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "staged",
        None,
    ),
    ("replace", "two", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            # (none: the key holds the partition column)
            "LockForReplace",
            "Delete",
            "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]",
        ],
        "count",
        "staged",
    ),
    ("append", "none", "missing"): (["CreateTable"], "unknown", None),
    ("append", "none", "empty"): (["CopyFrame(target)"], "inserted", None),
    ("append", "none", "filled"): (["CopyFrame(target)"], "count", None),
    ("append", "none", "large"): (["CopyFrame(target)"], "unknown", None),
    ("append", "none", "partitioned"): (
        ["PrepareStage", "CopyFrame(stage)", "CheckRowsInPartition", "Insert"],
        "count",
        "count",
    ),
    ("append", "one", "missing"): (["CreateTable"], "unknown", None),
    ("append", "one", "empty"): (
        ["PrepareStage", "CopyFrame(stage)", "Insert"],
        "inserted",
        None,
    ),
    ("append", "one", "filled"): (
        ["PrepareStage", "CopyFrame(stage)", "Insert"],
        "count",
        None,
    ),
    ("append", "one", "large"): (
        ["PrepareStage", "CopyFrame(stage)", "Insert"],
        "unknown",
        None,
    ),
    ("append", "one", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            "Insert",
        ],
        "count",
        "count",
    ),
    ("append", "two", "missing"): (["CreateTable"], "unknown", None),
    ("append", "two", "empty"): (
        ["PrepareStage", "CopyFrame(stage)", "RefuseRepeatedKeys", "Insert"],
        "inserted",
        None,
    ),
    ("append", "two", "filled"): (
        ["PrepareStage", "CopyFrame(stage)", "RefuseRepeatedKeys", "Insert"],
        "count",
        None,
    ),
    ("append", "two", "large"): (
        ["PrepareStage", "CopyFrame(stage)", "RefuseRepeatedKeys", "Insert"],
        "unknown",
        None,
    ),
    ("append", "two", "partitioned"): (
        [
            "PrepareStage",
            "CopyFrame(stage)",
            "CheckRowsInPartition",
            "RefuseRepeatedKeys",
            "Insert",
        ],
        "count",
        "count",
    ),
}


@pytest.mark.parametrize(("mode", "key", "state"), list(MATRIX))
def test_every_mode_table_state_and_key_shape(mode: str, key: str, state: str) -> None:
    options = WritePlan.from_options(conflict_target=KEYS[key], write_mode=mode)
    columns = options.conflict_target
    partition = PARTITION if state == "partitioned" else ()
    cat = catalog(columns, size=SIZES[state])
    if state == "missing":
        cat = replace(cat, table=None)
    steps = planned(options, cat, partition=partition, empty=state == "empty")
    assert (plan_summary(steps), steps.row_count, steps.partition_row_count) == MATRIX[
        (mode, key, state)
    ]


def test_upsert_needs_a_key() -> None:
    with pytest.raises(WritePlanError, match="needs a conflict_target"):
        WritePlan.from_options(write_mode="upsert")


def test_a_missing_table_is_created_from_the_frame_with_the_key_as_primary_key() -> None:
    options = WritePlan.from_options(conflict_target=["id", "region"])
    prepared = prepare_frame(to_arrow(frame()), options)
    create = table_to_create(options, prepared, "shop", "orders", catalog())
    assert create.columns == (("id", "bigint"), ("region", "text"), ("v", "double precision"))
    assert create.primary_key == ("id", "region")
    assert create.index is None and create.partition_by is None


def test_a_partitioned_assets_table_is_indexed_on_its_partition_columns() -> None:
    by_region = [KeySlice("region", ("eu",))]
    options = WritePlan.from_options(conflict_target=["id", "region"])
    prepared = prepare_frame(to_arrow(frame()), options)
    create = table_to_create(options, prepared, "shop", "orders", catalog(), by_region)
    assert create.index == ("orders_partition_idx", ("region",))
    # A key whose index starts with the partition column serves the partition's rows.
    options = WritePlan.from_options(conflict_target=["region", "id"])
    create = table_to_create(options, prepared, "shop", "orders", catalog(), by_region)
    assert create.index is None


def test_native_partitioning_creates_a_partitioned_table_whose_key_holds_the_column() -> None:
    by_region = [KeySlice("region", ("eu",))]
    options = WritePlan.from_options(conflict_target=["id", "region"], partitioning="native")
    prepared = prepare_frame(to_arrow(frame()), options)
    create = table_to_create(options, prepared, "shop", "orders", catalog(), by_region)
    assert create.partition_by == ("list", "region") and create.index is None
    options = WritePlan.from_options(conflict_target=["id"], partitioning="native")
    with pytest.raises(WritePlanError, match=r"conflict_target \['id'\] lacks \['region'\]"):
        table_to_create(options, prepared, "shop", "orders", catalog(), by_region)


@pytest.mark.parametrize(
    ("version", "rules", "merge"),
    [
        (18, False, True),
        (17, False, True),
        (16, False, False),
        (15, False, False),
        (18, True, False),
    ],
)
def test_merge_statement_by_server_version_and_rules(
    version: int, rules: bool, merge: bool
) -> None:
    steps = planned(
        WritePlan.from_options(conflict_target="id"),
        catalog(version=version, rules=rules),
        REPEATED,
    )
    expected = (
        "Attempt[Merge(merge)|RefuseRepeatedKeys,Merge(on_conflict)]"
        if merge
        else "RefuseRepeatedKeys"
    )
    assert plan_summary(steps)[2] == expected


def test_keep_last_numbers_the_stage_and_resolves_before_the_checks() -> None:
    options = WritePlan.from_options(conflict_target="id", duplicates="keep_last")
    steps = planned(options, catalog(), REPEATED, partition=PARTITION)
    assert plan_summary(steps) == [
        "PrepareStage",
        "CopyFrame(stage)",
        "KeepOnePerKey",
        "CheckRowsInPartition",
        "CheckKeysInPartition",
        "Attempt[Merge(merge)|Merge(on_conflict)]",
    ]
    assert ("copy_upsert_row_number", "bigint") in steps.steps[0].columns  # type: ignore[union-attr]


@pytest.mark.parametrize("duplicates", ["error", "keep_first", "keep_last"])
def test_a_key_found_distinct_on_the_client_needs_no_duplicate_handling(duplicates: str) -> None:
    """No window in the MERGE, no pass that finds or resolves repeats, and a stage sent in
    key order: the integer key of frame() is sorted on the client and found distinct."""
    options = WritePlan.from_options(conflict_target="id", duplicates=duplicates)
    steps = planned(options, catalog(), frame().iloc[::-1])
    assert steps.steps[1] == CopyFrame("stage", in_key_order=True)
    assert not steps.numbered
    (attempt,) = steps.steps[2:]
    assert isinstance(attempt, Attempt) and attempt.steps[0] == Merge(
        "merge", "update", ("region", "v"), False, False
    )
    assert attempt.otherwise == (Merge("on_conflict", "update", ("region", "v"), False, False),)


@pytest.mark.parametrize(
    ("ids", "repeats"),
    [
        (["2024-01-01 00:00:00.000001", "2024-01-01 00:00:00.000002"], False),
        # Nanoseconds are rounded down to PostgreSQL's microseconds: one key.
        (["2024-01-01 00:00:00.000001001", "2024-01-01 00:00:00.000001002"], True),
    ],
)
def test_keys_are_compared_as_they_are_sent(ids: list[str], repeats: bool) -> None:
    options = WritePlan.from_options(conflict_target="at")
    data = pd.DataFrame({"at": pd.to_datetime(ids, utc=True), "v": [1, 2]})
    assert prepare_frame(to_arrow(data), options, ()).key_repeats is repeats


@pytest.mark.parametrize("position", ["first", "chunk_edge", "last", "none"])
def test_a_repeated_key_is_found_wherever_it_lies_in_key_order(position: str) -> None:
    """Neighbours in key order are compared a chunk at a time, across the chunks' edges."""
    rows = 2 * ROWS_PER_CHUNK
    ids = np.arange(rows)
    at = {"first": 1, "chunk_edge": ROWS_PER_CHUNK, "last": rows - 1, "none": None}[position]
    if at is not None:
        ids[at] = ids[at - 1]
    data = pd.DataFrame({"id": np.random.default_rng(1).permutation(ids)})
    options = WritePlan.from_options(conflict_target="id")
    assert prepare_frame(to_arrow(data), options, ()).key_repeats is (at is not None)


def test_a_key_cast_on_the_server_is_checked_there() -> None:
    """The server compares keys as the table's types: the client's finding counts only for
    keys stored as they are sent (here bigint values go into an integer column)."""
    options = WritePlan.from_options(conflict_target="id")
    cat = catalog(columns={"id": Column("id", PgType("int4"), not_null=True)})
    steps = planned(options, cat, pd.DataFrame({"id": [2, 1]}))
    assert steps.casts and "RefuseRepeatedKeys" in plan_summary(steps)[-1]


def test_a_new_column_is_added_after_the_checks_just_before_the_merge() -> None:
    options = WritePlan.from_options(conflict_target="id")
    steps = planned(options, catalog(), frame(extra=["x", "y", "z"]), partition=PARTITION)
    summary = plan_summary(steps)
    assert summary.index("AddColumns") == len(summary) - 2
    assert steps.steps[-2] == AddColumns((("extra", "text"),))
    assert ("extra", "text") in steps.table_columns


def test_strict_schema_evolution_refuses_a_new_column() -> None:
    options = WritePlan.from_options(conflict_target="id", schema_evolution="strict")
    with pytest.raises(TableMismatchError, match=r"\['extra'\] .* schema_evolution is 'strict'"):
        planned(options, catalog(), frame(extra=["x", "y", "z"]))


def test_a_cast_stages_even_into_an_empty_table() -> None:
    columns = {**COLUMNS, "id": Column("id", PgType("int4", display="integer"), not_null=True)}
    steps = planned(
        WritePlan.from_options(conflict_target="id"), catalog(columns=columns), empty=True
    )
    assert plan_summary(steps)[0] == "PrepareStage"
    assert steps.casts == (("id", "bigint", "integer"),)


def test_text_into_varchar_checks_lengths() -> None:
    varchar = PgType("varchar", modifier=7, display="character varying(3)")
    columns = {**COLUMNS, "region": Column("region", varchar, not_null=True)}
    steps = planned(WritePlan.from_options(conflict_target="id"), catalog(columns=columns))
    assert CheckLengths((("region", 3),)) in steps.steps


@pytest.mark.parametrize(
    ("table_type", "accepted"),
    [
        (PgType("timestamptz", modifier=6), True),
        (PgType("timestamptz"), True),
        (PgType("timestamptz", modifier=3), "checked"),
        (PgType("timestamp"), False),
        (PgType("text"), False),
    ],
)
def test_a_zoned_timestamp_goes_only_where_nothing_rounds(
    table_type: PgType, accepted: bool | str
) -> None:
    """timestamptz(3) may round: its values are checked on the server before the merge."""
    columns = {**COLUMNS, "at": Column("at", table_type)}
    data = frame(at=list(pd.to_datetime(["2024-01-01"] * 3, utc=True)))
    options = WritePlan.from_options(conflict_target="id")
    if accepted:
        steps = planned(options, catalog(columns=columns), data)
        assert ("CheckValuesKept" in plan_summary(steps)) == (accepted == "checked")
    else:
        with pytest.raises(TableMismatchError, match=r"column .at. of table public\.t is"):
            planned(options, catalog(columns=columns), data)


def test_a_session_keeps_at_most_max_stages() -> None:
    options = WritePlan.from_options(conflict_target="id")
    old = tuple(f"copy_upsert_stage_{i:016x}" for i in range(MAX_STAGES))
    first = planned(options, catalog(stages=old)).steps[0]
    assert isinstance(first, PrepareStage) and first.create and first.evict == old[:1]
    reused = planned(options, catalog(stages=(*old[1:], first.name))).steps[0]
    assert isinstance(reused, PrepareStage) and not reused.create and not reused.evict


def test_the_stage_is_emptied_first_only_inside_a_callers_transaction() -> None:
    options = WritePlan.from_options(conflict_target="id")
    own = planned(options, catalog()).steps[0]
    nested = planned(options, catalog(), nested=True).steps[0]
    assert isinstance(own, PrepareStage) and not own.clear
    assert isinstance(nested, PrepareStage) and nested.clear


def test_frames_of_one_shape_share_a_stage() -> None:
    assert stage_name([("a", "bigint")]) == stage_name([("a", "bigint")])
    assert stage_name([("a", "bigint")]) != stage_name([("a", "text")])


def test_exact_row_count_counts_a_large_table() -> None:
    options = WritePlan.from_options(conflict_target="id", exact_row_count=True)
    assert planned(options, catalog(size=COUNT_ROWS_UP_TO_BYTES * 10)).row_count == "count"


@pytest.mark.parametrize("mode", ["upsert", "append"])
def test_an_empty_frame_upserted_or_appended_writes_nothing(mode: str) -> None:
    options = WritePlan.from_options(conflict_target="id", write_mode=mode)
    assert planned(options, catalog(), frame().iloc[:0]).steps == ()
    assert planned(options, catalog(), frame().iloc[:0], partition=PARTITION).steps == ()


@pytest.mark.parametrize("key", ["none", "one", "two"])
def test_an_empty_frame_replacing_empties_the_table_or_the_partition_in_turn(key: str) -> None:
    options = WritePlan.from_options(conflict_target=KEYS[key], write_mode="replace")
    cat = catalog(options.conflict_target)
    whole = planned(options, cat, frame().iloc[:0])
    assert whole.steps == (LockForReplace(0, ((0, False),)), Delete(partitioned=False))
    assert (whole.row_count, whole.partition_row_count) == ("staged", None)
    part = planned(options, cat, frame().iloc[:0], partition=PARTITION)
    assert plan_summary(part) == ["LockForReplace", "Delete"]
    assert part.steps[1] == Delete(partitioned=True) and part.where is not None
    assert (part.row_count, part.partition_row_count) == ("count", "staged")


def test_an_empty_frame_replacing_a_missing_table_creates_it_then_plans_again() -> None:
    options = WritePlan.from_options(write_mode="replace")
    steps = planned(options, replace(catalog(), table=None), frame().iloc[:0])
    assert steps.replan and plan_summary(steps) == ["CreateTable"]


@pytest.mark.parametrize(("kind", "description"), [("v", "a view"), ("f", "a foreign table")])
def test_only_tables_are_written(kind: str, description: str) -> None:
    with pytest.raises(TableMismatchError, match=rf"public\.t is {description}"):
        planned(WritePlan.from_options(conflict_target="id"), catalog(kind=kind))


def test_a_key_without_a_unique_index_is_refused() -> None:
    with pytest.raises(
        TableMismatchError, match=r"no unique index or constraint on exactly \['id'\]"
    ):
        planned(WritePlan.from_options(conflict_target="id"), catalog(key=()))


def test_values_the_server_converts_only_when_told_are_cast_from_the_stage() -> None:
    columns = {
        **COLUMNS,
        "ref": Column("ref", PgType("uuid", display="uuid")),
        "doc": Column("doc", PgType("json", display="json")),
        "amount": Column("amount", PgType("numeric", display="numeric")),
    }
    data = frame(
        ref=["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"] * 3,
        doc=[{"a": 1}] * 3,
        amount=[decimal.Decimal("1.5")] * 3,
    )
    steps = planned(WritePlan.from_options(conflict_target="id"), catalog(columns=columns), data)
    assert steps.casts == (
        ("ref", "text", "uuid"),
        ("doc", "jsonb", "json"),
        ("amount", "text", "numeric"),
    )
    assert steps.compare_as == (("doc", "jsonb"),)
    assert ("amount", "text") in steps.steps[0].columns  # type: ignore[union-attr]


def test_a_domain_column_is_cast_so_that_its_check_names_the_column() -> None:
    positive = PgType("int8", domain=True, display="positive")
    columns = {**COLUMNS, "v": Column("v", positive)}
    data = frame(v=[1, 2, 3])
    steps = planned(
        WritePlan.from_options(conflict_target="id"), catalog(columns=columns), data, empty=True
    )
    assert steps.casts == (("v", "bigint", "positive"),)
    assert plan_summary(steps)[0] == "PrepareStage"  # not COPYed straight into the table


def test_a_missing_table_is_created_and_the_write_planned_again() -> None:
    options = WritePlan.from_options(conflict_target="id")
    steps = planned(options, replace(catalog(), table=None))
    assert steps.replan and plan_summary(steps) == ["CreateTable"]


def _stream(data: pd.DataFrame) -> Any:
    return iter([data.iloc[:2], data.iloc[2:]])


@pytest.mark.parametrize(
    ("data", "duplicates", "partition", "after_rows"),
    [
        pytest.param(frame(), "error", (), True, id="keys found distinct"),
        pytest.param(frame(), "keep_last", (), True, id="distinct, whatever the policy"),
        pytest.param(_stream(frame()), "error", (), True, id="stream, a repeat is an error"),
        pytest.param(_stream(frame()), "keep_last", (), False, id="stream, a repeat resolved"),
        pytest.param(REPEATED, "keep_first", (), False, id="a key repeated"),
        pytest.param(frame(), "error", PARTITION, False, id="a partition, checked"),
        pytest.param(frame(n=[1.5, 2.5, 3.5]).iloc[:0], "error", (), False, id="no rows"),
    ],
)
def test_a_new_keyed_table_takes_its_rows_before_its_key_index(
    data: Any, duplicates: str, partition: Sequence[PartitionSlice], after_rows: bool
) -> None:
    options = WritePlan.from_options(conflict_target="id", duplicates=duplicates)
    prepared = prepare_frame(to_arrow(data), options, partition)
    missing = replace(catalog(), table=None)
    create = table_to_create(options, prepared, "shop", "orders", missing, partition)
    assert create.primary_key == ("id",)
    assert create.primary_key_after_rows is after_rows


def test_decimals_sent_as_text_need_the_stage_so_the_key_index_comes_first() -> None:
    options = WritePlan.from_options(conflict_target="id")
    prepared = prepare_frame(to_arrow(frame(d=[decimal.Decimal("1.5")] * 3)), options)
    create = table_to_create(options, prepared, "shop", "orders", replace(catalog(), table=None))
    assert not create.primary_key_after_rows


def test_the_table_this_write_created_is_copied_into_then_given_its_key() -> None:
    options = WritePlan.from_options(conflict_target="id")
    created = catalog(key=(), size=0)
    steps = planned(options, created, created=True, empty=True)
    assert plan_summary(steps) == ["CopyFrame(target)", "AddPrimaryKey"]
    assert steps.row_count == "inserted" and not steps.replan
    # The same table found without a key, but created by someone else, is refused.
    with pytest.raises(TableMismatchError, match="no unique index"):
        planned(options, created, empty=True)


def test_a_new_decimal_column_is_cast_from_its_text() -> None:
    options = WritePlan.from_options(conflict_target="id")
    steps = planned(options, catalog(), frame(amount=[decimal.Decimal("1.5")] * 3))
    assert ("amount", "text", "numeric") in steps.casts
    assert ("amount", "numeric") in steps.table_columns


def test_a_negative_scale_rounds_integers_so_their_values_are_checked() -> None:
    # numeric(5,-2): ((-2 & 0x7FF) | 5 << 16) + 4
    rounding = PgType("numeric", modifier=((5 << 16) | (-2 & 0x7FF)) + 4, display="numeric(5,-2)")
    columns = {**COLUMNS, "v": Column("v", rounding)}
    steps = planned(
        WritePlan.from_options(conflict_target="id"), catalog(columns=columns), frame(v=[1, 2, 3])
    )
    assert CheckValuesKept((("v", "numeric(5,-2)", "numeric"),)) in steps.steps
    with pytest.raises(TableMismatchError, match="numeric"):
        planned(
            WritePlan.from_options(conflict_target="id"),
            catalog(columns=columns),
            frame(v=["1", "2", "3"]),
        )


# ---- replaces take turns ------------------------------------------------------------------------


def lock_of(
    partition: Sequence[PartitionSlice] = (), mode: str = "replace", key: Any = "id"
) -> LockForReplace | None:
    """The LockForReplace step of a write of ``partition`` (None when it takes none)."""
    options = WritePlan.from_options(conflict_target=key, write_mode=mode)
    columns = {**COLUMNS, "at": Column("at", PgType("timestamptz", display="timestamptz"))}
    data = frame(at=list(pd.to_datetime(["2024-01-05"] * 3, utc=True)))
    steps = planned(options, catalog(options.conflict_target, columns=columns), data, partition)
    locks = [s for s in steps.steps if isinstance(s, LockForReplace)]
    return locks[0] if locks else None


def conflict(a: LockForReplace | None, b: LockForReplace | None) -> bool:
    """Whether two writers holding these locks wait for each other: a key both take, one of
    them exclusively."""
    assert a is not None and b is not None and a.table == b.table
    held = dict(a.keys)
    return any(k in held and not (shared and held[k]) for k, shared in b.keys)


def day(start: str, days: int = 1, tz: str = "UTC") -> TimeWindowSlice:
    at = pd.Timestamp(start, tz=tz).to_pydatetime()
    return TimeWindowSlice("at", at, at + timedelta(days=days))


def test_a_whole_table_replace_takes_the_tables_key_exclusively() -> None:
    assert lock_of() == LockForReplace(0, ((0, False),))
    big = replace(catalog(), table=replace(catalog().table, oid=3_000_000_000))  # type: ignore[type-var]
    options = WritePlan.from_options(write_mode="replace")
    steps = planned(options, big).steps
    assert steps[0] == LockForReplace(3_000_000_000 - (1 << 32), ((0, False),))


@pytest.mark.parametrize("mode", ["upsert", "append"])
def test_upserts_and_appends_take_no_turn(mode: str) -> None:
    assert lock_of(mode=mode) is None
    assert lock_of(PARTITION, mode=mode) is None


def test_the_turn_is_taken_after_the_checks_before_adding_columns_and_deleting() -> None:
    options = WritePlan.from_options(conflict_target="id", write_mode="replace")
    steps = planned(options, catalog(), frame(extra=["x", "y", "z"]), partition=PARTITION)
    assert plan_summary(steps)[2:7] == [
        "CheckRowsInPartition",
        "CheckKeysInPartition",
        "LockForReplace",
        "AddColumns",
        "Delete",
    ]


def test_a_partition_replace_shares_the_table_key_then_takes_its_units_in_order() -> None:
    lock = lock_of((KeySlice("region", ("b", "a")),))
    assert lock is not None and lock.keys[0] == (0, True)
    rest = [k for k, _ in lock.keys[1:]]
    assert rest == sorted(rest) and 0 not in rest
    assert [shared for _, shared in lock.keys[1:]] == [False, False]  # one key per region


@pytest.mark.parametrize(
    ("a", "b", "waits"),
    [
        # static and dynamic keys: writers wait exactly when they share a key
        ((KeySlice("region", ("a",)),), (KeySlice("region", ("a",)),), True),
        ((KeySlice("region", ("a",)),), (KeySlice("region", ("b",)),), False),
        ((KeySlice("region", ("a", "b")),), (KeySlice("region", ("b", "c")),), True),
        # time windows: exactly when they overlap, a range and a partition inside it too
        ((day("2024-01-05"),), (day("2024-01-05"),), True),
        ((day("2024-01-05"),), (day("2024-01-06"),), False),
        ((day("2024-01-01", 31),), (day("2024-01-05"),), True),
        ((day("2024-01-01", 10),), (day("2024-01-09", 10),), True),
        ((day("2024-01-01", 5),), (day("2024-01-06", 5),), False),
        ((day("2023-12-30", 5),), (day("2024-01-02"),), True),
        ((day("2020-01-01", 3650),), (day("2024-02-29"),), True),
        ((day("2020-01-01", 365),), (day("2024-02-29"),), False),
        # a day in New York spans two UTC days
        ((day("2024-01-05", tz="America/New_York"),), (day("2024-01-06"),), True),
        ((day("2024-01-05", tz="America/New_York"),), (day("2024-01-07"),), False),
        # multi-dimensional: both dimensions must overlap
        (
            (day("2024-01-05"), KeySlice("region", ("a",))),
            (day("2024-01-05"), KeySlice("region", ("b",))),
            False,
        ),
        (
            (day("2024-01-01", 31), KeySlice("region", ("a",))),
            (day("2024-01-05"), KeySlice("region", ("a", "b"))),
            True,
        ),
        (
            (day("2024-01-01", 31), KeySlice("region", ("a",))),
            (day("2024-02-05"), KeySlice("region", ("a",))),
            False,
        ),
    ],
)
def test_partition_replaces_wait_for_each_other_exactly_when_they_overlap(
    a: Sequence[PartitionSlice], b: Sequence[PartitionSlice], waits: bool
) -> None:
    assert conflict(lock_of(a), lock_of(b)) == waits
    assert conflict(lock_of(b), lock_of(a)) == waits
    assert conflict(lock_of(), lock_of(a))  # a whole-table replace waits for every one


def test_hourly_partitions_of_a_day_take_turns_only_with_the_day() -> None:
    at = datetime(2024, 1, 5, tzinfo=UTC)
    hours = [
        (TimeWindowSlice("at", at + timedelta(hours=h), at + timedelta(hours=h + 1)),)
        for h in range(24)
    ]
    assert not any(conflict(lock_of(hours[0]), lock_of(h)) for h in hours[1:])
    assert all(conflict(lock_of((day("2024-01-05"),)), lock_of(h)) for h in hours)
    assert calendar_units(at, at + timedelta(minutes=15)) == [("hour", "2024-01-05T00:00:00")]


def test_a_slice_of_too_many_units_locks_the_whole_table() -> None:
    keys = tuple(str(i) for i in range(MAX_PARTITION_LOCKS + 1))
    assert lock_of((KeySlice("region", keys),)) == LockForReplace(0, ((0, False),))
    other = TimeWindowSlice("other", datetime(2024, 1, 1), datetime(2024, 2, 1))
    assert replace_lock(7, (day("2024-01-05"), other)) == LockForReplace(7, ((0, False),))
    assert calendar_units(datetime(9999, 12, 31), datetime.max) is None


# ---- table ownership ----------------------------------------------------------------------------


def owned(comment: str | None, may_comment: bool = True) -> Catalog:
    cat = catalog()
    return replace(cat, table=replace(cat.table, comment=comment, may_comment=may_comment))  # type: ignore[type-var]


UPSERT = WritePlan.from_options(conflict_target="id")


def test_a_table_without_an_owner_records_it_last_if_the_role_may() -> None:
    steps = planned(UPSERT, owned("made by hand"), owner="asset shop/products")
    assert steps.steps[-1] == RecordOwner("asset shop/products")
    assert RecordOwner("x") not in planned(UPSERT, owned(None, may_comment=False), owner="x").steps
    assert planned(UPSERT, owned(None), frame().iloc[:0], owner="x").steps == (RecordOwner("x"),)


def test_no_owner_means_no_check_and_no_record() -> None:
    marked = owned(f"{OWNER_MARKER}asset a")
    assert not any(isinstance(s, RecordOwner) for s in planned(UPSERT, marked).steps)
    assert not any(isinstance(s, RecordOwner) for s in planned(UPSERT, owned(None)).steps)


def test_the_recorded_owner_writes_on_without_recording_again() -> None:
    steps = planned(UPSERT, owned(f"mine\n{OWNER_MARKER}asset a"), owner="asset a")
    assert not any(isinstance(s, RecordOwner) for s in steps.steps)


@pytest.mark.parametrize("data", [frame(), frame().iloc[:0]], ids=["rows", "empty"])
def test_another_owner_is_refused_before_any_step(data: pd.DataFrame) -> None:
    options = WritePlan.from_options(conflict_target="id", write_mode="replace")
    with pytest.raises(TableOwnerError) as raised:
        planned(options, owned(f"{OWNER_MARKER}asset a"), data, owner="op 'b' output 'result'")
    message = str(raised.value)
    assert "public.t" in message and "asset a" in message and "op 'b' output 'result'" in message
    assert "'table' metadata" in message and "'shared_table: true'" in message
    assert isinstance(raised.value, TableMismatchError)


def test_the_owner_line_is_the_last_and_keeps_the_users_lines() -> None:
    assert comment_with_owner(None, "a") == f"{OWNER_MARKER}a"
    assert comment_with_owner("notes\nmore", "a") == f"notes\nmore\n{OWNER_MARKER}a"
    assert comment_with_owner(f"{OWNER_MARKER}old\nnotes", "a") == f"notes\n{OWNER_MARKER}a"
    assert recorded_owner(f"notes\n{OWNER_MARKER}asset x/y") == "asset x/y"
    assert recorded_owner("notes") is None and recorded_owner(None) is None


def test_an_owner_of_several_lines_is_refused() -> None:
    with pytest.raises(WritePlanError, match="one non-empty line"):
        planned(UPSERT, owned(None), owner="a\nb")


@pytest.mark.parametrize(
    ("data", "sorted_on_client"),
    [
        (frame(), False),  # already in key order
        (frame().iloc[::-1], True),  # an integer key, sorted by Arrow as PostgreSQL does
    ],
    ids=["in-order", "sortable"],
)
def test_an_empty_keyed_table_takes_the_frame_straight_in_key_order(
    data: pd.DataFrame, sorted_on_client: bool
) -> None:
    steps = planned(WritePlan.from_options(conflict_target="id"), catalog(), data, empty=True)
    attempt = steps.steps[0]
    assert isinstance(attempt, Attempt)
    assert attempt.steps == (CopyFrame("target", in_key_order=sorted_on_client),)


def test_a_text_key_is_not_sorted_on_the_client() -> None:
    """PostgreSQL orders text by the column's collation, Arrow by its bytes: staged."""
    data = frame(region=["b", "c", "a"])
    options = WritePlan.from_options(conflict_target="region")
    steps = planned(options, catalog(key=("region",)), data, empty=True)
    assert plan_summary(steps)[0] == "PrepareStage"
