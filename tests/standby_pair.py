"""A PostgreSQL 15 primary and a streaming standby (Debian's binaries), for failover tests.

The primary listens on 127.0.0.1 with scram-sha-256 for a test role and for replication
(``wal_level = replica``); the standby is a ``pg_basebackup -R`` of it on another port, a
hot standby streaming from it through a replication slot. Both are administered as the
``postgres`` superuser over a unix socket (trust). PostgreSQL refuses to run as root, so the
servers run as an unprivileged system user, as ``.ci/postgres15`` starts its server.

The ``standby_pair`` fixture starts a fresh pair for each test and stops both servers in its
finalizer however the test ends: with ``pg_ctl stop -m immediate``, then by the postmaster's
pid if that did not work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
# The unprivileged user .ci/postgres15 runs its server as.
SYSTEM_USER = "copy_upsert_pg"
ROLE = "loader"
PASSWORD = "fail-0ver pa$$"  # quoted in the URL; scram-sha-256 checks it
DATABASE = "warehouse"
REPLICATION_ROLE = "replicator"
REPLICATION_PASSWORD = "stream-me"
SLOT = "standby_slot"
WAIT_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _open_path_to(path: Path) -> None:
    """Let other users traverse every directory above ``path`` (as the embedded server's
    helper does), so that the server's user reaches its data directory."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


@dataclass
class Node:
    """One server of the pair."""

    name: str
    data: Path
    port: int
    socket_dir: Path
    log: Path
    pid: int | None = None  # the postmaster's, once started

    def admin_connect(self, database: str = "postgres") -> Any:
        """A coroutine connecting as the superuser over the unix socket (trust)."""
        return asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", database=database
        )

    def fetch(self, sql: str, *args: Any, database: str = DATABASE) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            conn = await self.admin_connect(database)
            try:
                return [dict(row) for row in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def value(self, sql: str, *args: Any, database: str = DATABASE) -> Any:
        return next(iter(self.fetch(sql, *args, database=database)[0].values()))

    def execute(self, sql: str, database: str = DATABASE) -> None:
        async def go() -> None:
            conn = await self.admin_connect(database)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(go())

    def snapshot(self, table: str) -> tuple[int, str]:
        """Row count and an md5 of every row, in order: equal contents, equal snapshot."""
        row = self.fetch(
            "SELECT count(*) AS n, "
            "md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS sum "
            f"FROM {table} AS t"
        )[0]
        return int(row["n"]), str(row["sum"])

    def running(self) -> bool:
        """Whether the postmaster still lives (a zombie, which its reaper has not yet
        collected, does not)."""
        if self.pid is None:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"


class StandbyPair:
    """A primary and a streaming standby of it; see the module's docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # As root, the servers run as an unprivileged user; otherwise as the current one.
        self.owner = _ensure_system_user() if os.geteuid() == 0 else None
        self.primary = Node("primary", root / "primary", _free_port(), root, root / "primary.log")
        port = _free_port()
        while port == self.primary.port:
            port = _free_port()
        self.standby = Node("standby", root / "standby", port, root, root / "standby.log")

    # ---- the URLs a client uses ----

    def url(self, first: str = "primary", target_session_attrs: str = "read-write") -> str:
        """Both hosts (the primary first, or the standby when ``first="standby"``), for the
        test role (scram-sha-256 over TCP)."""
        nodes = [self.primary, self.standby]
        if first == "standby":
            nodes.reverse()
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
        password = quote(PASSWORD, safe="")
        return (
            f"postgresql://{ROLE}:{password}@{hosts}/{DATABASE}"
            f"?target_session_attrs={target_session_attrs}"
        )

    # ---- lifecycle ----

    def _as_server(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(DEBIAN_BIN / args[0]), *args[1:]],
            user=self.owner.pw_uid if self.owner else None,
            group=self.owner.pw_gid if self.owner else None,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS * 2,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{self._logs()}"
            )
        return done.stdout

    def _logs(self) -> str:
        return "\n".join(
            f"--- {node.log.name} ---\n{node.log.read_text(errors='replace')[-3000:]}"
            for node in (self.primary, self.standby)
            if node.log.exists()
        )

    def _pg_ctl_start(self, node: Node) -> None:
        self._as_server("pg_ctl", "-D", str(node.data), "-l", str(node.log), "-w", "start")
        node.pid = int((node.data / "postmaster.pid").read_text().split()[0])

    def start(self) -> None:
        """initdb and start the primary, base-back it up into the standby, start the
        standby, and wait until it streams."""
        _open_path_to(self.root)
        self.root.chmod(0o755)
        if self.owner:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        primary, standby = self.primary, self.standby
        self._as_server(
            "initdb",
            "-D",
            str(primary.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                f"port = {primary.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "password_encryption = 'scram-sha-256'\n"
                "wal_level = replica\n"
                "max_wal_senders = 4\n"
                "max_replication_slots = 4\n"
                "hot_standby = on\n"
                "fsync = off\n"
                "synchronous_commit = on\n"
            )
        (primary.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "local replication all trust\n"
            f"host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._pg_ctl_start(primary)
        for sql in (
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'",
            f"CREATE ROLE {REPLICATION_ROLE} LOGIN REPLICATION PASSWORD '{REPLICATION_PASSWORD}'",
            f"CREATE DATABASE {DATABASE} OWNER {ROLE}",  # not in a transaction block
        ):
            primary.execute(sql, database="postgres")
        # Over TCP as the replication role: the pg_hba.conf entry and its password; -R
        # writes primary_conninfo (with that password) and standby.signal.
        self._as_server(
            "pg_basebackup",
            "-D",
            str(standby.data),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            REPLICATION_ROLE,
            "-X",
            "stream",
            "--checkpoint=fast",  # a spread checkpoint would take minutes
            "-C",
            "-S",
            SLOT,
            "-R",
            "--no-sync",
            env={"PGPASSWORD": REPLICATION_PASSWORD},
        )
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {standby.port}\nhot_standby = on\n")
        self._pg_ctl_start(standby)
        self._wait(
            lambda: primary.fetch(
                "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' "
                "AND application_name = 'walreceiver'"
            ),
            "the standby to stream from the primary",
        )

    def _wait(self, done: Any, what: str, timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:g} s for {what}\n{self._logs()}")
            time.sleep(0.05)

    def wait_replayed(self) -> str:
        """Wait until the standby has replayed everything the primary has logged so far, an
        open transaction's changes included; return that WAL position.

        The walsender sends only flushed WAL, and an open transaction's records may sit
        unflushed until something else flushes (a commit; at the latest the running-xacts
        record the primary logs every 15 s): a transaction that commits (an xid of its own)
        flushes everything logged before its commit record."""
        lsn = str(self.primary.value("SELECT pg_current_wal_insert_lsn()::text"))
        self.primary.value("SELECT pg_current_xact_id()::text")
        self._wait(
            lambda: self.standby.value(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn, database="postgres"
            ),
            f"the standby to replay up to {lsn}",
        )
        return lsn

    def stop_primary(self, mode: str = "immediate") -> None:
        """Stop the primary (``immediate``: as a crash; ``fast``: a clean shutdown)."""
        self._as_server("pg_ctl", "-D", str(self.primary.data), "-m", mode, "-w", "stop")

    def promote_standby(self) -> float:
        """Promote the standby and wait until it leaves recovery; return the seconds taken."""
        started = time.monotonic()
        self._as_server("pg_ctl", "-D", str(self.standby.data), "-w", "promote")
        self._wait(
            lambda: not self.standby.value("SELECT pg_is_in_recovery()", database="postgres"),
            "the promoted standby to leave recovery",
        )
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop both servers, whatever state they are in: pg_ctl first, then the postmaster's
        pid (SIGQUIT: an immediate shutdown)."""
        for node in (self.standby, self.primary):
            if not node.running():
                continue
            with contextlib.suppress(Exception):  # the pid below, then
                self._as_server("pg_ctl", "-D", str(node.data), "-m", "immediate", "-w", "stop")
            if node.running() and node.pid is not None:
                os.kill(node.pid, signal.SIGQUIT)
                deadline = time.monotonic() + 10
                while node.running() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if node.running():
                    os.kill(node.pid, signal.SIGKILL)


def debian_binaries_missing() -> str | None:
    """Why the pair cannot start here, or None."""
    missing = [b for b in ("initdb", "pg_ctl", "pg_basebackup") if not (DEBIAN_BIN / b).exists()]
    if missing:
        return (
            f"Debian's PostgreSQL 15 binaries are missing ({', '.join(missing)} in {DEBIAN_BIN}): "
            "install postgresql-15 (.ci/run does)"
        )
    return None


@pytest.fixture
def standby_pair() -> Iterator[StandbyPair]:
    """A fresh primary and streaming standby, both stopped afterwards whatever happens."""
    if reason := debian_binaries_missing():
        pytest.skip(reason)
    # A short path: unix socket paths are limited to about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="pgpair-"))
    pair = StandbyPair(root)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)
