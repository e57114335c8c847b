"""The benchmark's table and rows, as the tests use them: a copy of TABLE, DDL, PLAN and
frame() from benchmarks/run.py (the same deterministic data), so that the tests import nothing
from benchmarks/."""

from __future__ import annotations

import numpy as np
import pandas as pd

from resources import WritePlan

TABLE = "bench"
DDL = (
    f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, amount bigint, score double precision, "
    "name text, seen_at timestamptz, active boolean, parent bigint)"
)
PLAN = WritePlan.from_options(conflict_target="id")


def frame(rows: int, *, seed: int = 1, keys: np.ndarray | None = None) -> pd.DataFrame:
    """Deterministic rows: bigint key (random order), bigint, double, text, timestamptz,
    boolean and a nullable bigint with 10% NULLs."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows) if keys is None else keys
    n = len(ids)
    parent = pd.array(rng.integers(0, 1_000_000, n), dtype="Int64")
    parent[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "id": ids.astype("int64"),
            "amount": rng.integers(-(10**12), 10**12, n),
            "score": rng.random(n),
            "name": pd.array([f"customer-{v:09d}" for v in rng.integers(0, 10**9, n)], dtype="str"),
            "seen_at": pd.Timestamp("2024-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 365 * 86_400_000_000, n), unit="us"),
            "active": rng.random(n) < 0.5,
            "parent": parent,
        }
    )
