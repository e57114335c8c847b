"""One of several writers run at once by test_concurrency.py:

    python -m tests.concurrent_writer URL WRITER ROUNDS MERGE_PATH

Each round upserts a random, randomly ordered set of keys of one table, with values that
say which writer and round wrote them, and prints the keys it wrote as JSON. MERGE_PATH
"on_conflict" forces INSERT ... ON CONFLICT on servers that have MERGE (see
conftest.merge_path).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

import resources.plan
from resources import PostgresResource, WritePlan, copy_upsert

KEYS = 1000
PER_ROUND = 300


def main(url: str, writer: int, rounds: int, merge_path: str) -> None:
    if merge_path == "on_conflict":
        resources.plan.MERGE_RETURNING_SINCE = 10**6
    postgres = PostgresResource(url=url, application_name=f"writer-{writer}")
    plan = WritePlan.from_options(conflict_target="id")
    rng = np.random.default_rng(writer)
    written: list[list[int]] = []
    try:
        for round_ in range(rounds):
            keys = rng.choice(KEYS, PER_ROUND, replace=False)
            frame = pd.DataFrame({"id": keys, "v": [f"w{writer}-r{round_}-k{k}" for k in keys]})
            postgres.run(
                lambda conn, f=frame: copy_upsert(
                    conn, f, schema="public", table="shared", plan=plan
                )
            )
            written.append([int(k) for k in keys])
    finally:
        postgres.dispose()
    print(json.dumps(written))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
