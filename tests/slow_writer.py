"""A process that upserts a million changed rows: killed mid-write by test_faults.py.

python -m tests.slow_writer URL
"""

from __future__ import annotations

import sys

from resources import PostgresResource, copy_upsert
from tests.data import PLAN, TABLE, frame

if __name__ == "__main__":
    postgres = PostgresResource(url=sys.argv[1], application_name="copy-upsert-killed")
    changed = frame(1_000_000, seed=2)
    postgres.run(lambda conn: copy_upsert(conn, changed, schema="public", table=TABLE, plan=PLAN))
