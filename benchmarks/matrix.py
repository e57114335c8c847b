"""Benchmark: issue 16's cases against L2, the server's own COPY of the key-sorted rows, on
four servers in one run: {the embedded PostgreSQL 18, Debian's PostgreSQL 15} x {the
benchmark's settings (benchmarks.run.SERVER_SETTINGS), PostgreSQL's defaults}.

    python -m benchmarks.matrix                       # 1M rows, best of 5, all four servers
    python -m benchmarks.matrix --rows 100000 --repeat 1 --servers 18 --configs defaults

Each server is started here and stopped afterwards: PostgreSQL 18 by benchmarks.run's
embedded_server (a temporary directory; the settings by ALTER SYSTEM, then a restart), 15
by .ci/postgres15 start / restart / stop in a temporary directory (run as root, as .ci/run
is: the script installs Debian's postgresql-15 when missing and runs the server as an
unprivileged user of its own, which reads the COPY files from a directory everyone can read;
fsync=on, as on the embedded server). BENCH_DATABASE_URL is not used. On each, with benchmarks.run's
frame() of --rows rows (keys in random order), every case the fastest of --repeat runs:

- L1: ``COPY bench FROM 'file' (FORMAT binary)`` of the frame in random key order into the
  empty keyed table (benchmarks.run's limit); L2: the same file's rows sorted by key; and
  ADBC's ``cursor.adbc_ingest("bench", table, mode="append")`` of the frame (a pyarrow Table
  made beforehand) into the empty keyed table, then commit; the three timed in turns;
- this package (benchmarks.run.package_cases): fresh table, all rows updated, the identical
  frame again (with its checks: no row rewritten or locked), half new and half changed in
  random order;
- reads of the table whole as pandas (benchmarks.run.reads): read_table as load_input does
  it, connectorx and ADBC, timed in turns, the fastest of READ_REPEAT x --repeat runs.

Every case's time per row ÷ L2's, and the issue's targets (holds / MISSED), per server; then
one table of every target by server. Printed and written to
benchmarks/results/output-matrix.txt; everything to benchmarks/results/matrix.json, and a
chart of the ratios to benchmarks/results/chart-matrix.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
import pyarrow as pa

from benchmarks.partitions import code_state, printed_to
from benchmarks.run import (
    RESULTS,
    SERVER_SETTINGS,
    TABLE,
    Bench,
    _size,
    adbc_arrow,
    binary_file,
    connectorx_url,
    embedded_server,
    frame,
    package_cases,
    reads,
    server_settings,
)
from resources import PostgresResource, read_table

POSTGRES15 = Path(__file__).resolve().parent.parent / ".ci" / "postgres15"
SERVERS = {"18": "embedded PostgreSQL 18", "15": "Debian's PostgreSQL 15"}
CONFIGS: dict[str, dict[str, str]] = {"tuned": SERVER_SETTINGS, "defaults": {}}
# The scale; a run below it is labelled as reduced. Runs of one case vary by 10-40%
# on these machines: by default each is run DEFAULT_REPEAT times.
FULL_ROWS, FULL_REPEAT = 1_000_000, 3
DEFAULT_REPEAT = 5
# The reads take half a second and vary by 2-3x between runs on these machines (0.34 to
# 1.09 s for one reader at bdafc4b): each is run READ_REPEAT times per --repeat, in turns.
READ_REPEAT = 3

L1 = "L1: server COPY binary, random key order"
L2 = "L2: server COPY binary, sorted by key"
ADBC_INGEST = "ADBC adbc_ingest (append)"
FRESH = "package: fresh table (all inserts)"
UPDATED = "package: all rows updated"
IDENTICAL = "package: identical frame again"
MIXED = "package: half new, half changed, random order"
LOAD_INPUT = "read: load_input (this package)"
CONNECTORX = "read: connectorx.read_sql"
ADBC_READ = "read: ADBC fetch_arrow_table().to_pandas()"


def targets(major: int) -> dict[str, tuple[float, str]]:
    """The issue's targets on a server of ``major`` version: ratio name -> (at most, what the
    ratio is)."""
    old = major < 17
    return {
        "fresh ÷ L2": (1.3, f"{FRESH} ÷ L2"),
        "identical ÷ L2": (1.0, f"{IDENTICAL} ÷ L2, and no row rewritten or locked"),
        "all rows updated ÷ L2": (4.0 if old else 3.5, f"{UPDATED} ÷ L2"),
        "half new, half changed ÷ L2": (3.5 if old else 3.0, f"{MIXED} ÷ L2"),
        "fresh ÷ ADBC adbc_ingest": (0.6, f"{FRESH} ÷ {ADBC_INGEST}"),
        "load_input ÷ faster of connectorx, ADBC": (1.0, f"{LOAD_INPUT} ÷ the faster"),
    }


@contextmanager
def postgres15(settings: dict[str, str]) -> Iterator[str]:
    """The URL of Debian's PostgreSQL 15 in a temporary directory (.ci/postgres15), with
    ``settings`` (none: PostgreSQL's defaults) and fsync=on; stopped and deleted afterwards."""
    env = {**os.environ, "POSTGRES15_FSYNC": "on"}

    def ci(action: str, home: Path) -> str:
        done = subprocess.run(
            [str(POSTGRES15), action, str(home)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f".ci/postgres15 {action} failed:\n{done.stderr[-4000:]}")
        return done.stdout.strip()

    with tempfile.TemporaryDirectory(prefix="copy-upsert-pg15-") as tmp:
        # The server's own user must reach its directory inside this one.
        Path(tmp).chmod(0o755)
        home = Path(tmp) / "server"
        try:
            url = ci("start", home)
            if settings:
                asyncio.run(_alter_system(url, settings))
                ci("restart", home)
            yield url
        finally:
            if (home / "data" / "postmaster.pid").exists():
                ci("stop", home)


async def _alter_system(url: str, settings: dict[str, str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        # ALTER SYSTEM runs outside a transaction block: one statement at a time.
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    finally:
        await conn.close()


@contextmanager
def started(version: str, config: str) -> Iterator[str]:
    settings = CONFIGS[config]
    if version == "18":
        with embedded_server(settings) as url:
            yield url
    else:
        with postgres15(settings) as url:
            yield url


async def loads(bench: Bench, data: pd.DataFrame, scratch: Path) -> dict[str, Any]:
    """L1, L2 and ADBC's adbc_ingest into the empty keyed table, timed in turns. After each
    case's runs, untimed, the table's row count (each must have loaded every row)."""
    import adbc_driver_postgresql.dbapi as adbc  # type: ignore[import-untyped]

    files = {L1: scratch / "random.bin", L2: scratch / "sorted.bin"}
    if not files[L1].exists():
        binary_file(data, files[L1])
        binary_file(data.sort_values("id", ignore_index=True), files[L2])
        for path in files.values():
            path.chmod(0o644)
    table = pa.Table.from_pandas(data, preserve_index=False)

    def ingest() -> None:
        with adbc.connect(bench.url) as conn:
            with conn.cursor() as cur:
                cur.adbc_ingest(TABLE, table, mode="append")
            conn.commit()

    counts: dict[str, int] = {}

    async def count(case: str, _value: Any) -> None:
        counts[case] = (await bench.sql(f"SELECT count(*) AS n FROM {TABLE}"))[0]["n"]

    cases = [
        *(
            (name, partial(bench.sql, f"COPY {TABLE} FROM '{path}' (FORMAT binary)"))
            for name, path in files.items()
        ),
        (ADBC_INGEST, partial(asyncio.to_thread, ingest)),
    ]
    await bench.timed_in_turns(cases, len(data), setup=bench.reset, after=count)
    return {"rows_loaded": counts, "adbc_types": {f.name: str(f.type) for f in table.schema}}


async def warm_readers(bench: Bench, data: pd.DataFrame) -> None:
    """Each reader of benchmarks.run.reads once, untimed, on a table of 1,000 of the rows: the
    first read in a process pays one-time costs (imports, a resource's pool and loop thread)
    that would otherwise count in a run of --repeat 1."""
    import connectorx

    await bench.reset(fill=data.iloc[:1_000])
    postgres = PostgresResource(url=bench.url)
    query = f"SELECT * FROM {TABLE}"
    try:
        await asyncio.to_thread(
            postgres.run, lambda conn: read_table(conn, schema="public", table=TABLE)
        )
    finally:
        postgres.dispose()
    await asyncio.to_thread(
        connectorx.read_sql, connectorx_url(bench.url), query, return_type="pandas"
    )
    await asyncio.to_thread(lambda: adbc_arrow(bench.url, query).to_pandas())


async def measure(
    version: str, config: str, url: str, data: pd.DataFrame, repeat: int, scratch: Path
) -> dict[str, Any]:
    bench = Bench(url, repeat)
    row = (
        await bench.sql("SELECT version() AS v, current_setting('server_version_num')::int AS n")
    )[0]
    settings = await server_settings(bench)
    major = row["n"] // 10_000
    print(f"\n=== {SERVERS[version]}, {config} settings ===")
    print(f"  {row['v']}")
    print("  server: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    start = time.perf_counter()
    load_info = await loads(bench, data, scratch)
    checks = await package_cases(bench, data)
    checks["loads_wrote_every_row"] = all(n == len(data) for n in load_info["rows_loaded"].values())
    await warm_readers(bench, data)
    bench.repeat = repeat * READ_REPEAT
    read_info = await reads(bench, data)
    await bench.reset()
    seconds = time.perf_counter() - start
    by = {r.case: r for r in bench.results}
    l2 = by[L2].seconds / by[L2].rows
    per_l2 = {r.case: r.seconds / r.rows / l2 for r in bench.results}
    faster_read = min(by[CONNECTORX].seconds, by[ADBC_READ].seconds)
    untouched = bool(checks["identical_rewrote_no_row"] and checks["identical_locked_no_row"])
    ratios = {
        "fresh ÷ L2": per_l2[FRESH],
        "identical ÷ L2": per_l2[IDENTICAL],
        "all rows updated ÷ L2": per_l2[UPDATED],
        "half new, half changed ÷ L2": per_l2[MIXED],
        "fresh ÷ ADBC adbc_ingest": by[FRESH].seconds / by[ADBC_INGEST].seconds,
        "load_input ÷ faster of connectorx, ADBC": by[LOAD_INPUT].seconds / faster_read,
    }
    verdicts = {}
    print(f"\n  {'every case ÷ L2 (time per row)':<56}{'ratio':>7}")
    for case, value in per_l2.items():
        print(f"    {case:<54}{value:>7.2f}")
    print(f"\n  {'target':<56}{'value':>7}  bound")
    for name, (bound, what) in targets(major).items():
        value = ratios[name]
        holds = value <= bound and (name != "identical ÷ L2" or untouched)
        verdicts[name] = {"value": value, "at_most": bound, "holds": holds, "what": what}
        note = "" if name != "identical ÷ L2" or untouched else " (rows rewritten or locked)"
        print(f"    {name:<54}{value:>7.2f}  <= {bound:<4} {'holds' if holds else 'MISSED'}{note}")
    print(f"  checks {json.dumps(checks)}")
    print(f"  ({seconds:.0f} s for this server's cases)", flush=True)
    return {
        "server": version,
        "config": config,
        "version": row["v"],
        "server_version_num": row["n"],
        "settings": settings,
        "settings_set": CONFIGS[config],
        "seconds": seconds,
        "results": [{**asdict(r), "ratio_to_l2": per_l2[r.case]} for r in bench.results],
        "ratio_l1_to_l2": per_l2[L1],
        "targets": verdicts,
        "checks": checks,
        "loads": load_info,
        "reads": read_info,
    }


def summary(runs: list[dict[str, Any]]) -> None:
    """One table: every case ÷ L2 and every target, a column per server and configuration."""
    heads = [f"{r['server']} {r['config']}" for r in runs]
    width = 46
    line = f"{'':<{width}}" + "".join(f"{h:>16}" for h in heads)
    print(f"\n=== summary: time per row ÷ L2; targets (bound on 18 / on 15) ===\n{line}")
    cases = [res["case"] for res in runs[0]["results"]]
    for case in cases:
        cells = []
        for r in runs:
            got = {res["case"]: res["ratio_to_l2"] for res in r["results"]}
            cells.append(f"{got[case]:>16.2f}")
        print(f"{case:<{width}}" + "".join(cells))
    print()
    for name in runs[0]["targets"]:
        bounds = [targets(major)[name][0] for major in (18, 15)]
        label = f"{name} <= {' / '.join(dict.fromkeys(f'{b:g}' for b in bounds))}"
        cells = []
        for r in runs:
            t = r["targets"][name]
            cells.append(f"{t['value']:>9.2f} {'holds' if t['holds'] else 'MISSED':>6}")
        print(f"{label:<{width}}" + "".join(cells))


def chart(runs: list[dict[str, Any]], rows: int, repeat: int, reduced: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cases = [res["case"] for res in runs[0]["results"]]
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.45 * len(cases)))
    height = 0.8 / len(runs)
    y = np.arange(len(cases))[::-1]
    for i, r in enumerate(runs):
        got = {res["case"]: res["ratio_to_l2"] for res in r["results"]}
        values = [got[c] for c in cases]
        label = f"PostgreSQL {r['server_version_num'] // 10_000}, {r['config']}"
        ax.barh(y + (len(runs) / 2 - i - 0.5) * height, values, height, label=label)
    ax.set_yticks(y, cases, fontsize=8)
    ax.axvline(1.0, color="#444", linewidth=0.8)
    ax.set_xlabel("time per row ÷ L2 (server COPY of the key-sorted file); lower is faster")
    ax.set_title(f"{rows:,} rows x 7 columns, best of {repeat}{reduced}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "chart-matrix.png", dpi=110)


def main(rows: int, repeat: int, servers: list[str], configs: list[str]) -> None:
    reduced = (
        ""
        if rows >= FULL_ROWS and repeat >= FULL_REPEAT
        else f" (REDUCED: the issue's scale is {_size(FULL_ROWS)} rows, best of {FULL_REPEAT})"
    )
    code = code_state()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    )
    print(
        f"benchmarks.matrix: {rows:,} rows x 7 columns, best of {repeat} runs "
        f"(reads: {repeat * READ_REPEAT}){reduced}"
    )
    print(
        f"  {machine}; package at {code['commit']}"
        + (
            f", with uncommitted changes to {', '.join(code['uncommitted_in_resources'])}"
            if code["uncommitted_in_resources"]
            else ""
        )
    )
    print(
        "  tuned: "
        + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        + "; defaults: PostgreSQL's own; fsync=on on every server",
        flush=True,
    )
    data = frame(rows)
    runs = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="copy-upsert-matrix-") as tmp:
        # Every server reads the COPY files as its own unprivileged user.
        scratch = Path(tmp)
        scratch.chmod(0o755)
        for version in servers:
            for config in configs:
                with started(version, config) as url:
                    runs.append(asyncio.run(measure(version, config, url, data, repeat, scratch)))
    total = time.perf_counter() - start
    summary(runs)
    print(f"\n({total:.0f} s in all, servers' starts included)")
    payload = {
        "rows": rows,
        "best_of": repeat,
        "reads_best_of": repeat * READ_REPEAT,
        "reduced": bool(reduced),
        "machine": machine,
        "python": platform.python_version(),
        "code": code,
        "tuned_settings": SERVER_SETTINGS,
        "seconds": total,
        "runs": runs,
    }
    (RESULTS / "matrix.json").write_text(json.dumps(payload, indent=2, default=str))
    chart(runs, rows, repeat, reduced)


def _choices(text: str, allowed: dict[str, Any]) -> list[str]:
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    if not chosen or any(c not in allowed for c in chosen):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(allowed)}")
    return chosen


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, help="runs of every case; the fastest counts"
    )
    parser.add_argument(
        "--servers",
        type=partial(_choices, allowed=SERVERS),
        default=list(SERVERS),
        help="PostgreSQL versions: 18 (embedded), 15 (Debian's, by .ci/postgres15)",
    )
    parser.add_argument(
        "--configs",
        type=partial(_choices, allowed=CONFIGS),
        default=list(CONFIGS),
        help="tuned (benchmarks.run.SERVER_SETTINGS), defaults (PostgreSQL's own)",
    )
    args = parser.parse_args()
    if args.rows < 2 or args.repeat < 1:
        parser.error("--rows must be at least 2, --repeat at least 1")
    RESULTS.mkdir(exist_ok=True)
    with printed_to(RESULTS / "output-matrix.txt"):
        main(args.rows, args.repeat, args.servers, args.configs)
