"""A process that uses the embedded PostgreSQL, then waits to be killed: test_embedded.py.

python -m tests.embedded_user DATA_DIR

It runs one query through ``PostgresResource(embedded_data_dir=DATA_DIR)``, prints the
server's backend pid and ``ready``, then sleeps until it is signalled.
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import text

from resources import PostgresResource


async def _backend_pid(conn) -> int:  # type: ignore[no-untyped-def]
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


if __name__ == "__main__":
    postgres = PostgresResource(url=None, embedded_data_dir=sys.argv[1])
    backend = postgres.run(_backend_pid)
    postgres.dispose()
    print(backend, "ready", flush=True)
    while True:
        time.sleep(3600)
