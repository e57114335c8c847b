"""Benchmark: one partition's replace, upsert and read in a large partitioned table against
the same in a small one, all in one run on one server (benchmarks.run's).

    python -m benchmarks.partitions                     # 10 and 1,000 days of 10,000 rows
    python -m benchmarks.partitions --days-large 50 --rows-per-day 1000 --repeat 3  # quick

Four tables of daily partitions, every one made by this package's copy_upsert as a
partitioned asset's first writes would make it (--chunk-days days per write, each write's
TimeWindowSlice holding one window per day), with the same rows: columns day (timestamp),
id (bigint, unique across the table: day * --rows-per-day + 0..rows-1, in a random order
within each day), amount (bigint), qty (integer), score (double precision), name (text):

- native_small, native_large: ``partitioning="native"``, conflict_target (day, id): a
  PostgreSQL partitioned table whose child tables (one per day) the writes create;
- plain_small, plain_large: ``partitioning="plain"`` (the default), conflict_target id: one
  table, which the package indexes on day (``<table>_partition_idx``, checked to exist).

The small tables hold --days-small days, the large ones --days-large; both VACUUM ANALYZEd
once built. Then, on the day in the middle of each table, through one warm PostgresResource,
small and large timed in turns (the fastest of --repeat runs counts):

- replace: ``write_mode="replace"`` of the day with a frame of its ids, half of the rows'
  values changed;
- upsert: ``write_mode="upsert"`` of the day with such a frame (half changed, half as they
  are);
- read: ``read_table`` of the day (``partition=[TimeWindowSlice(...)]``), as pandas.

Every write changes the same half of the day's rows: the day holds one of two frames that
differ in that half, and each write writes the other (an untimed first write makes it hold
the first one). After each write, untimed, the relation it wrote (the day's child table, or
the plain table) is VACUUM ANALYZEd, so every run starts from the same state.

Afterwards, untimed, one more replace, upsert and read of each table's day: what each read
of the table, from pg_stat_user_tables before and after (sequential scans of the day's
relation and of the others), and, from auto_explain (ANALYZE, loaded into the writing
session), each statement that read more than the day's rows or one relation; and EXPLAIN of
a read of the day from each large table with the bounds as literals: the partitions it
keeps (one), the index the plain table's plan uses (its partition index).

Output: the table of ratios (large / small) against the issue's targets, printed and written
to benchmarks/results/output-partitions.txt, and everything to
benchmarks/results/partitions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import numpy as np
import pandas as pd

from benchmarks.run import RESULTS, Bench, _size, server, server_settings
from resources import (
    PostgresResource,
    TimeWindowSlice,
    WritePlan,
    WriteResult,
    copy_upsert,
    read_table,
)
from resources.core import driver_connection

SCHEMA = "public"
# The first day of every table.
FIRST_DAY = datetime(2021, 1, 1)
KINDS = ("native", "plain")
SIZES = ("small", "large")
OPERATIONS = ("replace", "upsert", "read")
# The targets for large / small: (kind, operation) -> at most this; None: reported.
TARGETS: dict[tuple[str, str], float | None] = {
    ("native", "replace"): 1.2,
    ("native", "upsert"): 1.2,
    ("native", "read"): 1.2,
    ("plain", "replace"): 1.5,
    ("plain", "upsert"): 1.5,
    ("plain", "read"): None,
}

# The relations holding table $1's rows: its partitions (at any depth), or the table itself.
LEAVES = (
    "SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf "
    "UNION SELECT oid FROM pg_class WHERE oid = $1::regclass AND relkind = 'r'"
)


def day_of(index: int) -> datetime:
    return FIRST_DAY + timedelta(days=index)


def payload(rows: int, seed: int) -> dict[str, Any]:
    """The non-key columns of ``rows`` rows, like benchmarks.run.frame()'s."""
    rng = np.random.default_rng(seed)
    return {
        "amount": rng.integers(-(10**12), 10**12, rows),
        "qty": rng.integers(0, 10_000, rows).astype("int32"),
        "score": rng.random(rows),
        "name": pd.array([f"customer-{v:09d}" for v in rng.integers(0, 10**9, rows)], dtype="str"),
    }


def day_frame(index: int, rows: int) -> pd.DataFrame:
    """Day ``index``'s rows as built: ids index * rows + 0..rows-1 in a random order."""
    rng = np.random.default_rng(index)
    ids = index * rows + rng.permutation(rows)
    return pd.DataFrame(
        {
            "day": pd.Series([day_of(index)] * rows, dtype="datetime64[us]"),
            "id": ids.astype("int64"),
            **payload(rows, seed=1_000_000 + index),
        }
    )


def two_versions(index: int, rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Day ``index``'s rows twice, each with the rows of even id changed, differently: a
    write of either over the other changes half of the rows."""
    built = day_frame(index, rows)
    even = (built["id"] % 2 == 0).to_numpy()
    versions = []
    for seed in (1, 2):
        changed = payload(rows, seed=seed)
        versions.append(
            built.assign(**{c: np.where(even, changed[c], built[c]) for c in changed}).astype(
                built.dtypes.to_dict()
            )
        )
    return versions[0], versions[1]


def window(first: int, days: int) -> TimeWindowSlice:
    """The slice of ``days`` days from day ``first``, one window per day."""
    return TimeWindowSlice(
        "day",
        day_of(first),
        day_of(first + days),
        tuple((day_of(d), day_of(d + 1)) for d in range(first, first + days)),
    )


def plan(kind: str, mode: str) -> WritePlan:
    if kind == "native":
        return WritePlan.from_options(
            conflict_target=["day", "id"], partitioning="native", write_mode=mode
        )
    return WritePlan.from_options(conflict_target=["id"], write_mode=mode)


@dataclass
class Target:
    """One of the four tables, and the state of its middle day."""

    kind: str
    size: str
    days: int
    rows_per_day: int
    versions: tuple[pd.DataFrame, pd.DataFrame] | None = None
    # Which version the middle day holds: 0 or 1 (-1: as built).
    holds: int = -1
    # The relation a write of the middle day writes: its child table, or the plain table.
    relation: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.size}"

    @property
    def middle(self) -> int:
        return self.days // 2

    @property
    def day(self) -> TimeWindowSlice:
        return window(self.middle, 1)

    def next_version(self) -> pd.DataFrame:
        """The version the middle day does not hold (then it holds it)."""
        if self.versions is None:
            self.versions = two_versions(self.middle, self.rows_per_day)
        self.holds = 1 if self.holds == 0 else 0
        return self.versions[self.holds]


def case_name(kind: str, operation: str, size: str) -> str:
    return f"{kind} {operation}: {size}"


class Tee:
    """Writes to the terminal and to a file alike."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextmanager
def printed_to(path: Path) -> Iterator[None]:
    with path.open("w") as out, redirect_stdout(Tee(sys.stdout, out)):  # type: ignore[arg-type]
        yield


def write_on(
    conn: Any, *, target: Target, data: pd.DataFrame, part: TimeWindowSlice, mode: str = "upsert"
) -> Awaitable[WriteResult]:
    """copy_upsert of ``data``, slice ``part`` of ``target``'s table, for PostgresResource.run."""
    return copy_upsert(
        conn, data, schema=SCHEMA, table=target.name, plan=plan(target.kind, mode), partition=[part]
    )


def read_on(conn: Any, *, target: Target) -> Awaitable[pd.DataFrame]:
    """read_table of ``target``'s middle day, for PostgresResource.run."""
    return read_table(conn, schema=SCHEMA, table=target.name, partition=[target.day])


async def run_on(postgres: PostgresResource, work: Callable[[Any], Awaitable[Any]]) -> Any:
    return await asyncio.to_thread(postgres.run, work)


async def build(
    bench: Bench, postgres: PostgresResource, targets: list[Target], chunk_days: int
) -> dict[str, float]:
    """Fill each table, --chunk-days days per copy_upsert, both tables of a size from the
    same frames; then VACUUM ANALYZE and CHECKPOINT. Returns the seconds each took."""
    seconds: dict[str, float] = {t.name: 0.0 for t in targets}
    for size in SIZES:
        group = [t for t in targets if t.size == size]
        if not group:
            continue
        days, rows = group[0].days, group[0].rows_per_day
        for first in range(0, days, chunk_days):
            n = min(chunk_days, days - first)
            data = pd.concat(
                [day_frame(d, rows) for d in range(first, first + n)], ignore_index=True
            )
            for target in group:
                start = time.perf_counter()
                await run_on(
                    postgres, partial(write_on, target=target, data=data, part=window(first, n))
                )
                seconds[target.name] += time.perf_counter() - start
        for target in group:
            start = time.perf_counter()
            await bench.sql(f"VACUUM ANALYZE {target.name}")
            seconds[target.name] += time.perf_counter() - start
            print(
                f"  (built {target.name}: {days:,} days x {rows:,} rows in "
                f"{seconds[target.name]:.1f} s)",
                flush=True,
            )
    await bench.sql("CHECKPOINT")
    return seconds


async def describe(bench: Bench, targets: list[Target]) -> dict[str, Any]:
    """Each table's size, partitions and indexes; each target's middle-day relation."""
    info: dict[str, Any] = {}
    for target in targets:
        relation = await bench.sql(
            f"SELECT tableoid::regclass::text AS r FROM {target.name} WHERE day = $1 LIMIT 1",
            day_of(target.middle),
        )
        target.relation = relation[0]["r"]
        row = (
            await bench.sql(
                f"SELECT count(*) AS leaves, sum(pg_total_relation_size(relid)) AS bytes "
                f"FROM ({LEAVES}) AS l",
                target.name,
            )
        )[0]
        indexes = await bench.sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 "
            "ORDER BY indexname",
            SCHEMA,
            target.name,
        )
        info[target.name] = {
            "rows": target.days * target.rows_per_day,
            "partitions": int(row["leaves"]) if target.kind == "native" else 0,
            "total_bytes": int(row["bytes"]),
            "middle_day": day_of(target.middle).date().isoformat(),
            "middle_day_relation": target.relation,
            "indexes": {r["indexname"]: r["indexdef"] for r in indexes},
        }
        if target.kind == "plain":
            index = f"{target.name}_partition_idx"
            info[target.name]["partition_index_exists"] = index in info[target.name]["indexes"]
            if index not in info[target.name]["indexes"]:
                raise SystemExit(f"{target.name} has no index {index}: {info[target.name]}")
    return info


async def timed_cases(bench: Bench, postgres: PostgresResource, targets: list[Target]) -> None:
    """Each kind's replace, upsert and read of the middle day, small and large in turns."""
    by_case = {case_name(t.kind, op, t.size): (t, op) for t in targets for op in OPERATIONS}

    async def vacuum(target: Target) -> None:
        await bench.sql(f"VACUUM ANALYZE {target.relation}")

    def write(target: Target, mode: str) -> Callable[[], Awaitable[Any]]:
        def work() -> Awaitable[Any]:
            data = target.next_version()
            return run_on(
                postgres, partial(write_on, target=target, data=data, part=target.day, mode=mode)
            )

        return work

    def read(target: Target) -> Callable[[], Awaitable[Any]]:
        return lambda: run_on(postgres, partial(read_on, target=target))

    async def after(case: str, value: Any) -> None:
        target, operation = by_case[case]
        if operation == "read":
            got = {"case": case, "rows_read": len(value)}
            expected = {"case": case, "rows_read": target.rows_per_day}
        else:
            await vacuum(target)
            got = {
                "case": case,
                "inserted": value.rows_inserted,
                "updated": value.rows_updated,
                "deleted": value.rows_deleted,
            }
            expected = {
                "case": case,
                "inserted": 0,
                "updated": target.rows_per_day // 2,
                "deleted": 0,
            }
        if got != expected and got not in target.checks:
            print(f"  ! {case}: {got}, expected {expected}", flush=True)
        target.checks.append(got)

    # Untimed: each day's pages in memory, each session's stage and statements ready.
    for target in targets:
        await write(target, "upsert")()
        await vacuum(target)
        await read(target)()
    for kind in KINDS:
        pair = [t for t in targets if t.kind == kind]
        rows = pair[0].rows_per_day
        for operation in OPERATIONS:
            cases = [
                (
                    case_name(kind, operation, t.size),
                    read(t) if operation == "read" else write(t, operation),
                )
                for t in pair
            ]
            await bench.timed_in_turns(
                cases,
                rows,
                after=after,
                note=" / ".join(f"{t.size}: {_size(t.days * t.rows_per_day)} rows" for t in pair),
            )


async def scan_counts(bench: Bench, table: str) -> dict[str, dict[str, int]]:
    """Each relation holding ``table``'s rows: its sequential scans, the rows they read, its
    index scans; and each of their indexes' scans (as ``index <name>``)."""
    rows = await bench.sql(
        "SELECT c.relname AS rel, coalesce(s.seq_scan, 0) AS seq_scan, "
        "coalesce(s.seq_tup_read, 0) AS seq_tup_read, coalesce(s.idx_scan, 0) AS idx_scan "
        f"FROM ({LEAVES}) AS t JOIN pg_class AS c ON c.oid = t.relid "
        "LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid",
        table,
    )
    indexes = await bench.sql(
        "SELECT i.indexrelname AS rel, i.idx_scan FROM ("
        + LEAVES
        + ") AS t JOIN pg_stat_user_indexes AS i ON i.relid = t.relid",
        table,
    )
    counts = {
        r["rel"]: {k: int(r[k]) for k in ("seq_scan", "seq_tup_read", "idx_scan")} for r in rows
    }
    counts.update({f"index {r['rel']}": {"idx_scan": int(r["idx_scan"])} for r in indexes})
    return counts


def _delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    out = {}
    for rel, counts in after.items():
        diff = {k: v - before.get(rel, {}).get(k, 0) for k, v in counts.items()}
        if any(diff.values()):
            out[rel] = {k: v for k, v in diff.items() if v}
    return out


async def scans(bench: Bench, postgres: PostgresResource, targets: list[Target]) -> dict[str, Any]:
    """Untimed: one more replace, upsert and read of each table's middle day, and what each
    read of the table: pg_stat_user_tables/_indexes before and after (the writing session
    flushes its counters first), for the day's relation (its child table, or the plain
    table: a sequential scan of that reads every row of the table) and the others (another
    day's child table holds no row the write or read needs); and each statement it ran, as
    auto_explain (loaded into the session, where the server allows it) logs it with ANALYZE:
    how many of the table's relations it read and how many rows, and its time."""
    out: dict[str, Any] = {}
    for target in targets:
        for operation in OPERATIONS:
            data = None if operation == "read" else target.next_version()
            work = (
                partial(read_on, target=target)
                if data is None
                else partial(write_on, target=target, data=data, part=target.day, mode=operation)
            )
            before = await scan_counts(bench, target.name)
            notices = await run_on(postgres, partial(explained, work=work))
            delta = _delta(before, await scan_counts(bench, target.name))
            if operation != "read":
                await bench.sql(f"VACUUM ANALYZE {target.relation}")
            tables = {r: c for r, c in delta.items() if not r.startswith("index ")}
            own = tables.pop(target.relation, {})
            own_indexes = {
                r.removeprefix("index "): c["idx_scan"]
                for r, c in delta.items()
                if r.startswith(f"index {target.relation}_")
            }
            out[f"{target.name} {operation}"] = {
                "day_relation": target.relation,
                "day_relation_seq_scans": own.get("seq_scan", 0),
                "day_relation_rows_read_by_seq_scans": own.get("seq_tup_read", 0),
                "day_relation_index_scans": own_indexes,
                "other_relations_seq_scanned": sum(1 for c in tables.values() if c.get("seq_scan")),
                "other_relations_seq_scans": sum(c.get("seq_scan", 0) for c in tables.values()),
                "other_relations_rows_read_by_seq_scans": sum(
                    c.get("seq_tup_read", 0) for c in tables.values()
                ),
                "other_relations_index_scans": sum(c.get("idx_scan", 0) for c in tables.values()),
                "statements": [_statement(n, target.name) for n in notices],
            }
    return out


async def explained(conn: Any, work: Callable[[Any], Awaitable[Any]]) -> list[str]:
    """Run ``work(conn)`` with auto_explain logging every statement's plan to this session
    as notices (unless the server refuses to load it); flush the session's statistics
    counters. Returns the notices."""
    driver = await driver_connection(conn)
    notices: list[str] = []

    def listen(_conn: Any, message: Any) -> None:
        notices.append(message.message)

    with suppress(asyncpg.PostgresError):
        await driver.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_level = notice; "
            "SET auto_explain.log_format = text; SET auto_explain.log_analyze = on; "
            "SET auto_explain.log_timing = off; SET auto_explain.log_nested_statements = on; "
            "SET auto_explain.log_min_duration = 0"
        )
    driver.add_log_listener(listen)
    try:
        await work(conn)
    finally:
        driver.remove_log_listener(listen)
        await driver.execute(
            "SELECT set_config('auto_explain.log_min_duration', '-1', false) "
            "WHERE current_setting('auto_explain.log_min_duration', true) IS NOT NULL"
        )
    await driver.execute("SELECT pg_stat_force_next_flush()")
    return [n for n in notices if n.startswith("duration:")]


# A scan node of a text plan, with its actual rows per loop and loops (auto_explain's ANALYZE
# without timing); PostgreSQL 18's JSON format is not valid JSON for a MERGE into a
# partitioned table ("Target Tables"), so the text is parsed.
SCAN = re.compile(
    r"(?P<type>(?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan))"
    r"(?: Backward)?(?: using (?P<index>\S+))? on (?P<rel>\S+).*?"
    r"\(actual(?: time=\S+)? rows=(?P<rows>[\d.]+) loops=(?P<loops>\d+)\)"
)
REMOVED = re.compile(r"Rows Removed by (?:Filter|Index Recheck): (?P<rows>\d+)")
PRUNED = re.compile(r"Subplans Removed: (?P<n>\d+)")


def _statement(notice: str, table: str) -> dict[str, Any]:
    """One auto_explain notice: the statement, its time, and its scans of ``table``'s
    relations (the rows they read: returned and filtered out, over every loop)."""
    lines = notice.splitlines()
    query = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("Query Text:")), "")
    query = " ".join(query.split())
    relations: set[str] = set()
    scans: set[str] = set()
    rows = pruned = 0.0
    loops = 0
    ours = False
    for line in lines:
        if match := SCAN.search(line):
            ours = match["rel"].startswith(table)
            loops = int(match["loops"])
            if ours:
                relations.add(match["rel"])
                scans.add(match["type"] + (f" using {match['index']}" if match["index"] else ""))
                rows += float(match["rows"]) * loops
        elif (match := REMOVED.search(line)) and ours:
            # Per loop, like the rows.
            rows += int(match["rows"]) * loops
        elif match := PRUNED.search(line):
            pruned += int(match["n"])
    return {
        "query": query[:160] + ("..." if len(query) > 160 else ""),
        "ms": float(lines[0].split()[1]),
        "relations_read": len(relations),
        "rows_read": int(rows),
        "scans": sorted(scans),
        "subplans_removed": int(pruned),
    }


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def plans(bench: Bench, targets: list[Target]) -> dict[str, Any]:
    """EXPLAIN of a read of the middle day from each large table, the bounds as literals:
    the relations the plan reads (one partition of a native table; the plain table by its
    partition index)."""
    out: dict[str, Any] = {}
    for target in (t for t in targets if t.size == "large"):
        start, end = day_of(target.middle).isoformat(), day_of(target.middle + 1).isoformat()
        query = f"SELECT * FROM {target.name} WHERE day >= '{start}' AND day < '{end}'"
        rows = await bench.sql(f"EXPLAIN (FORMAT JSON) {query}")
        nodes = list(_plan_nodes(json.loads(rows[0]["QUERY PLAN"])[0]["Plan"]))
        scans = [n for n in nodes if "Relation Name" in n]
        out[target.name] = {
            "query": query,
            "relations_read": sorted({n["Relation Name"] for n in scans}),
            "scans": sorted(
                {
                    n["Node Type"] + (f" using {n['Index Name']}" if "Index Name" in n else "")
                    for n in scans
                }
            ),
        }
    return out


def report(
    bench: Bench,
    scale: dict[str, int],
    version: str,
    settings: dict[str, str],
    code: dict[str, Any],
    built: dict[str, float],
    tables: dict[str, Any],
    targets: list[Target],
    scanned: dict[str, Any],
    pruned: dict[str, Any],
) -> None:
    by = {r.case: r for r in bench.results}
    ratios: dict[str, Any] = {}
    small_rows = scale["days_small"] * scale["rows_per_day"]
    large_rows = scale["days_large"] * scale["rows_per_day"]
    head = f"{_size(small_rows)} rows", f"{_size(large_rows)} rows"
    print(f"\n  {'case':<16}{head[0]:>12}{head[1]:>12}{'ratio':>8}  target")
    for kind in KINDS:
        for operation in OPERATIONS:
            small = by[case_name(kind, operation, "small")].seconds
            large = by[case_name(kind, operation, "large")].seconds
            target = TARGETS[kind, operation]
            ratio = large / small
            holds = None if target is None else ratio <= target
            verdict = "" if target is None else f"<= {target:<4} {'holds' if holds else 'MISSED'}"
            print(
                f"  {kind + ' ' + operation:<16}{small:>10.4f} s{large:>10.4f} s{ratio:>8.2f}  "
                f"{verdict}",
                flush=True,
            )
            ratios[f"{kind} {operation}"] = {
                "small_seconds": small,
                "large_seconds": large,
                "ratio": ratio,
                "target": target,
                "holds": holds,
            }
    print(
        "\n  what one more write or read of the day read (pg_stat_user_tables): sequential "
        "scans (rows they read) of the day's relation, then of other relations; index scans "
        "of the day's relation's indexes. Below each, auto_explain's statements that read more "
        "than one relation or 1.5x the day's rows"
    )
    for name, info in scanned.items():
        print(
            f"    {name:<22} {info['day_relation']}: {info['day_relation_seq_scans']} "
            f"({info['day_relation_rows_read_by_seq_scans']:,} rows); "
            f"{info['other_relations_seq_scans']} on {info['other_relations_seq_scanned']:,} "
            f"other relation(s) ({info['other_relations_rows_read_by_seq_scans']:,} rows); "
            f"index scans {info['day_relation_index_scans'] or 'none'}"
            + (
                f" + {info['other_relations_index_scans']} on other relations"
                if info["other_relations_index_scans"]
                else ""
            ),
            flush=True,
        )
        rows = scale["rows_per_day"]
        for statement in info["statements"]:
            if statement["relations_read"] > 1 or statement["rows_read"] > 1.5 * rows:
                print(
                    f"      {statement['ms']:>9.1f} ms {statement['relations_read']:>5,} "
                    f"relation(s), {statement['rows_read']:>11,} rows read "
                    f"({', '.join(statement['scans'])}): {statement['query'][:70]}",
                    flush=True,
                )
    print("\n  EXPLAIN of a read of the middle day from each large table, bounds as literals:")
    for name, info in pruned.items():
        print(
            f"    {name}: reads {len(info['relations_read'])} relation(s) "
            f"{info['relations_read'][:3]} by {', '.join(info['scans'])}",
            flush=True,
        )
    payload = {
        "command": "python -m benchmarks.partitions " + " ".join(sys.argv[1:]),
        "scale": scale,
        "full_scale": scale == FULL_SCALE,
        "postgresql": version,
        "server_settings": settings,
        "package": code,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "best_of": scale["repeat"],
        "build_seconds": built,
        "tables": tables,
        "results": [asdict(r) for r in bench.results],
        "ratios": ratios,
        "write_counts": {t.name: t.checks for t in targets},
        "scans": scanned,
        "plans": pruned,
    }
    (RESULTS / "partitions.json").write_text(json.dumps(payload, indent=2, default=str))


def code_state() -> dict[str, Any]:
    """The commit measured, and the package's files that differed from it (uncommitted)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=RESULTS.parent.parent
        )
        return result.stdout.rstrip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "resources").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_in_resources": changed}


FULL_SCALE = {"days_small": 10, "days_large": 1_000, "rows_per_day": 10_000, "repeat": 5}


async def main(scale: dict[str, int], chunk_days: int) -> None:
    targets = [
        Target(kind, size, scale[f"days_{size}"], scale["rows_per_day"])
        for kind in KINDS
        for size in SIZES
    ]
    with server() as url:
        bench = Bench(url, scale["repeat"])
        version = (await bench.sql("SHOW server_version"))[0]["server_version"]
        settings = await server_settings(bench)
        print(
            f"PostgreSQL {version}; daily partitions of {scale['rows_per_day']:,} rows: "
            f"{scale['days_small']:,} days (small) and {scale['days_large']:,} days (large); "
            f"best of {scale['repeat']} runs"
            + ("" if scale == FULL_SCALE else " (a reduced run, not the issue's scale)")
        )
        print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
        code = code_state()
        print(
            f"  package at {code['commit']}"
            + (
                f", with uncommitted changes to {', '.join(code['uncommitted_in_resources'])}"
                if code["uncommitted_in_resources"]
                else ""
            ),
            flush=True,
        )
        postgres = PostgresResource(url=url)
        try:
            built = await build(bench, postgres, targets, chunk_days)
            tables = await describe(bench, targets)
            for name, info in tables.items():
                print(
                    f"  {name}: {info['rows']:,} rows, {info['total_bytes'] / 2**20:,.0f} MB"
                    + (f", {info['partitions']:,} partitions" if info["partitions"] else "")
                    + f"; indexes {sorted(info['indexes'])}",
                    flush=True,
                )
            await timed_cases(bench, postgres, targets)
            scanned = await scans(bench, postgres, targets)
            pruned = await plans(bench, targets)
        finally:
            postgres.dispose()
    report(bench, scale, version, settings, code, built, tables, targets, scanned, pruned)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days-small", type=int, default=FULL_SCALE["days_small"])
    parser.add_argument("--days-large", type=int, default=FULL_SCALE["days_large"])
    parser.add_argument("--rows-per-day", type=int, default=FULL_SCALE["rows_per_day"])
    parser.add_argument(
        "--repeat",
        type=int,
        default=FULL_SCALE["repeat"],
        help="runs of every case; the fastest counts",
    )
    parser.add_argument(
        "--chunk-days", type=int, default=100, help="days per copy_upsert while building a table"
    )
    args = parser.parse_args()
    if not 3 <= args.days_small < args.days_large:
        parser.error("--days-small must be at least 3 and less than --days-large")
    if args.rows_per_day < 2 or args.repeat < 1 or args.chunk_days < 1:
        parser.error("--rows-per-day must be at least 2, --repeat and --chunk-days at least 1")
    RESULTS.mkdir(exist_ok=True)
    with printed_to(RESULTS / "output-partitions.txt"):
        asyncio.run(
            main(
                {
                    "days_small": args.days_small,
                    "days_large": args.days_large,
                    "rows_per_day": args.rows_per_day,
                    "repeat": args.repeat,
                },
                args.chunk_days,
            )
        )
