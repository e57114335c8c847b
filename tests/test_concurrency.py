"""Eight writers in separate processes upsert overlapping, randomly ordered key sets into
one table at once, for several rounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WRITERS = 8
ROUNDS = 5


def test_eight_writers_lose_and_duplicate_nothing(database_url: str, db: Database) -> None:
    db.execute("CREATE TABLE shared (id bigint PRIMARY KEY, v text NOT NULL)")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrent_writer", database_url, str(w), str(ROUNDS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    written: dict[int, set[str]] = {}
    for w, process in enumerate(processes):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        for round_, keys in enumerate(json.loads(out.strip().splitlines()[-1])):
            for key in keys:
                written.setdefault(key, set()).add(f"w{w}-r{round_}-k{key}")

    stored = {row["id"]: row["v"] for row in db.fetch("SELECT id, v FROM shared")}
    assert sorted(stored) == sorted(written)  # every key written is there, and only those
    assert db.fetch("SELECT count(*) = count(DISTINCT id) AS unique FROM shared") == [
        {"unique": True}
    ]
    for key, value in stored.items():
        assert value in written[key]
