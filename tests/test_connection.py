"""Database URLs as libpq users write them, and failures to connect that say what failed.

The URL forms, parameters and PG* variables are tried against a server that checks
passwords over TCP (tests/password_server.py); each failure to connect is caused for real
(a closed port, an unresolvable name, a socket that never answers, a wrong password, a
missing database, TLS asked of a server without it) and checked for its class, message,
``__cause__``, and, through the IO manager, for a step failure naming the asset with no
table left behind."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
from dagster import EnvVar
from sqlalchemy import text

from resources import (
    ConfigurationError,
    DatabaseConnectionError,
    PostgresResource,
)
from resources.connection import parse_url

from .helpers import failure_message, frame_asset, run_assets
from .password_server import PasswordServer, password_server

__all__ = ["password_server"]  # the fixture, used by name

ROLE = "loader"
PASSWORD = "Conn-pw-7c1e"
DB = "shop_db"


@pytest.fixture(scope="module")
def server(password_server: PasswordServer) -> PasswordServer:
    password_server.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    password_server.execute(f"DROP ROLE IF EXISTS {ROLE}")
    password_server.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    password_server.execute(f"CREATE DATABASE {DB} OWNER {ROLE}")
    return password_server


@pytest.fixture(autouse=True)
def no_pg_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The libpq variables of the machine running the tests stay out of these tests."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def _url(server: PasswordServer, query: str = "", password: str = PASSWORD) -> str:
    return f"postgresql://{ROLE}:{password}@127.0.0.1:{server.port}/{DB}{query}"


async def _settings(conn: Any) -> dict[str, str]:
    names = ("application_name", "statement_timeout", "lock_timeout", "search_path")
    result = await conn.execute(
        text(
            "SELECT current_user AS user, current_database() AS db, "
            + ", ".join(f"current_setting('{n}') AS {n}" for n in names)
        )
    )
    return dict(result.mappings().one())


def _session(url: str, **fields: Any) -> dict[str, str]:
    resource = PostgresResource(url=url, **fields)
    try:
        return resource.run(_settings)
    finally:
        resource.dispose()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


# ---- URL forms and parameters ----


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
def test_every_scheme_connects(server: PasswordServer, scheme: str) -> None:
    url = _url(server).replace("postgresql", scheme, 1)
    assert _session(url)["db"] == DB


def test_libpq_parameters_reach_the_session_and_win_over_the_fields(
    server: PasswordServer,
) -> None:
    query = (
        "?connect_timeout=5&application_name=nightly%20load&sslmode=disable"
        "&target_session_attrs=read-write"
        "&options=-c%20statement_timeout%3D7s%20-clock_timeout%3D2s%20--search-path%3Dshop"
    )
    settings = _session(
        _url(server, query), application_name="field", statement_timeout=99, lock_timeout=98
    )
    assert settings["application_name"] == "nightly load"
    assert (settings["statement_timeout"], settings["lock_timeout"]) == ("7s", "2s")
    assert settings["search_path"] == "shop"
    # Without URL parameters, the fields apply.
    fields = _session(_url(server), application_name="field", statement_timeout=99)
    assert (fields["application_name"], fields["statement_timeout"]) == ("field", "99s")


def test_percent_encoded_names_and_unix_socket(server: PasswordServer) -> None:
    encoded = "".join(f"%{b:02X}" for b in ROLE.encode())
    url = f"postgres://{encoded}@/{DB}?host={server.socket_dir}&port={server.port}"
    assert _session(url)["user"] == ROLE


def test_several_hosts_are_tried_in_turn(server: PasswordServer) -> None:
    closed = _closed_port()
    url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{closed},127.0.0.1:{server.port}/{DB}"
    assert _session(url)["db"] == DB
    # The server is no standby: the error says so. (With several hosts asyncpg reports a
    # refused host's error instead, if any host refused.)
    standby = _url(server, "?target_session_attrs=standby")
    with pytest.raises(DatabaseConnectionError, match="no host fits target_session_attrs"):
        _session(standby)


def test_pg_environment_variables_fill_what_the_url_leaves_out(
    server: PasswordServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": ROLE,
        "PGPASSWORD": PASSWORD,
        "PGDATABASE": DB,
    }.items():
        monkeypatch.setenv(name, value)
    resource = PostgresResource(url="postgresql://")
    assert str(resource.connection_settings().target) == (
        f"127.0.0.1:{server.port} (database '{DB}', user '{ROLE}')"
    )
    assert _session("postgresql://")["user"] == ROLE


def test_libpq_keyword_value_strings_connect(server: PasswordServer) -> None:
    """libpq's other form: ``keyword=value`` pairs, a value quoted with '' and \\' inside."""
    conninfo = (
        f"host=127.0.0.1 port={server.port} dbname={DB} user={ROLE} password='{PASSWORD}' "
        "application_name='nightly \\'load\\'' connect_timeout=5"
    )
    settings = _session(conninfo)
    assert (settings["db"], settings["user"]) == (DB, ROLE)
    assert settings["application_name"] == "nightly 'load'"
    resource = PostgresResource(url=conninfo)
    assert PASSWORD not in repr(resource) and "password=***" in repr(resource)
    with pytest.raises(ConfigurationError, match="did you mean 'dbname'"):
        PostgresResource(url=f"host=127.0.0.1 dbnme={DB}").connection_settings()


def _host_and_port(dsn: str) -> tuple[str | None, str]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    return query.get("host", [parts.hostname])[0], query.get("port", [str(parts.port)])[0]


def test_each_host_gets_its_own_connection_attempt_in_every_url_form() -> None:
    """Hosts in the host part, in host= (with one port each), or in a keyword/value string
    are tried one by one (each with its own connect_timeout); prefer-standby is left to
    asyncpg, which takes any host only once none is a standby."""
    forms = (
        "postgresql://u:pw@a:1,b:2/db",
        "postgresql://u:pw@/db?host=a,b&port=1,2",
        "host=a,b port=1,2 user=u password=pw dbname=db",
    )
    for url in forms:
        dsns = parse_url(url).host_dsns
        assert [_host_and_port(dsn) for dsn in dsns] == [("a", "1"), ("b", "2")]
        assert all(urlsplit(dsn).password == "pw" or "password=pw" in dsn for dsn in dsns)
        joiner = " " if "://" not in url else "&" if "?" in url else "?"
        assert parse_url(f"{url}{joiner}target_session_attrs=prefer-standby").host_dsns == ()
    assert parse_url("postgresql://u@a/db").host_dsns == ()
    # The keyword form's user reaches the SQLAlchemy URL too.
    assert PostgresResource(url="host=a user=bob dbname=x").database_url().username == "bob"


def test_no_fragment_of_a_password_in_urls_that_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for url, secret in (
        ("host=db user=u password=se://cret", "se:"),
        ("password=hunter2x dbname=postgresql://x", "hunter2x"),
        ("postgresql://u@db/x?pasword=hunter2x", "hunter2x"),
    ):
        with pytest.raises(ConfigurationError) as failure:
            PostgresResource(url=url).connection_settings()
        assert secret not in str(failure.value) and secret not in repr(PostgresResource(url=url))
    monkeypatch.delenv("NO_SUCH_URL_VARIABLE", raising=False)
    unset = PostgresResource(url=EnvVar("NO_SUCH_URL_VARIABLE"))
    with pytest.raises(ConfigurationError, match=r"NO_SUCH_URL_VARIABLE .* is not set"):
        unset.connection_settings()


def test_an_empty_database_path_takes_dbname_or_pgdatabase(
    server: PasswordServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``host/`` names no database: libpq then reads ``dbname=`` and ``PGDATABASE`` (asyncpg
    alone would take the user name)."""
    base = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{server.port}/"
    assert _session(f"{base}?dbname={DB}")["db"] == DB
    monkeypatch.setenv("PGDATABASE", DB)
    assert _session(base)["db"] == DB


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_url_is_refused_not_taken_for_the_embedded_server(
    empty: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty secret (one that failed to mount) must not quietly mean "the embedded
    server"; only an unset URL does."""
    for resource in (PostgresResource(url=empty), PostgresResource()):
        monkeypatch.setenv("DATABASE_URL", empty)
        with pytest.raises(ConfigurationError, match="the database URL is empty"):
            resource.connection_settings()


def test_pgpassfile_gives_the_password(
    server: PasswordServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{server.port}:{DB}:{ROLE}:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert _session(f"postgresql://{ROLE}@127.0.0.1:{server.port}/{DB}")["user"] == ROLE


def test_connect_timeout_in_the_url_wins(silent_port: int) -> None:
    url = f"postgresql://u:pw@127.0.0.1:{silent_port}/db?connect_timeout=1"
    resource = PostgresResource(url=url, connect_timeout=30)
    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        with pytest.raises(DatabaseConnectionError, match="no answer within 1 s"):
            resource.run(_settings)
        assert loop.time() - start < 10
    finally:
        loop.close()
        resource.dispose()


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("postgresql://u:Sekr1t-pw@h:55a32/db", "port '55a32'"),
        (
            "postgresql://u:Sekr1t-pw@h/db?connect_timout=5",
            "unknown parameter 'connect_timout'.*did you mean 'connect_timeout'",
        ),
        ("postgresql://u:Sekr1t-pw@h/db?connect_timeout=soon", "connect_timeout 'soon'"),
        ("postgresql://u:Sekr1t-pw@h/db?sslmode=requir", "sslmode 'requir'"),
        ("postgresql://u:Sekr1t-pw@h/db?sslrootcert=/no/such.pem", "sslrootcert"),
        ("postgresql://u:Sekr1t-pw@h/db?target_session_attrs=rw", "target_session_attrs 'rw'"),
        ("postgresql://u:Sekr1t-pw@h/db?options=-x", "options"),
        ("postgresql://u:Sekr1t-pw@h/db?statement_timeout=5", "'statement_timeout'"),
        ("postgresql://u:Sekr1t-pw@h/db?sslmode", "'sslmode' has no value"),
        ("postgresql://u:Sekr1t-pw@h1,h2/db?port=1,2,3", "3 ports for 2 hosts"),
        ("postgresql://u:Sek/r1t-pw@h/db", "cannot parse"),
        ("mysql://u:Sekr1t-pw@h/db", "not PostgreSQL"),
    ],
)
def test_bad_urls_fail_naming_the_parameter(url: str, names: str) -> None:
    resource = PostgresResource(url=url)
    assert "Sekr" not in repr(resource) and "Sekr" not in str(resource)
    with pytest.raises(ConfigurationError, match=names) as failure:
        resource.run(_settings)
    assert "r1t" not in str(failure.value)
    resource.dispose()


def test_url_parts_reach_asyncpg_unchanged() -> None:
    settings = parse_url(
        "postgresql+asyncpg://u:p@ss:w%2Frd@h1:5432,[::1]:5433/d%20b?sslmode=require"
    )
    assert settings.dsn == "postgresql://u:p%40ss%3Aw%2Frd@h1:5432,[::1]:5433/d%20b?sslmode=require"
    assert str(settings.target) == "h1:5432, ::1:5433 (database 'd b', user 'u')"
    assert settings.password == "p@ss:w/rd"


# ---- connection errors ----


def _failure(url: str) -> DatabaseConnectionError:
    resource = PostgresResource(url=url, connect_timeout=2)
    try:
        with pytest.raises(DatabaseConnectionError) as failure:
            resource.run(_settings)
    finally:
        resource.dispose()
    error = failure.value
    assert isinstance(error, ConnectionError)
    return error


def _materialize_fails(server: PasswordServer, url: str, *parts: str) -> None:
    """Through the IO manager: the step fails naming the asset, and there is no table."""
    resource = PostgresResource(url=url, connect_timeout=2)
    asset_def = frame_asset(pd.DataFrame({"id": [1]}), metadata={"conflict_target": "id"})
    try:
        result = run_assets([asset_def], resource, raise_on_error=False)
    finally:
        resource.dispose()
    message = failure_message(result)
    assert "Asset shop/products: cannot connect to PostgreSQL at" in message
    for part in parts:
        assert part in message
    error = result.get_step_failure_events()[0].step_failure_data.error
    classes = []
    while error is not None:
        classes.append(error.cls_name)
        error = error.cause
    assert "DatabaseConnectionError" in classes
    assert server.fetch("SELECT to_regclass('shop.products') AS t", DB) == [{"t": None}]


def test_closed_port(server: PasswordServer) -> None:
    port = _closed_port()
    url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/{DB}"
    error = _failure(url)
    where = f"127.0.0.1:{port} (database '{DB}', user '{ROLE}')"
    assert str(error).startswith(f"cannot connect to PostgreSQL at {where}: connection refused")
    assert "check the host and port" in str(error)
    assert isinstance(error.__cause__, ConnectionRefusedError)
    _materialize_fails(server, url, where, "connection refused")


def test_unknown_host(server: PasswordServer) -> None:
    url = f"postgresql://{ROLE}:{PASSWORD}@no-such-host.invalid:5432/{DB}"
    error = _failure(url)
    assert "at no-such-host.invalid:5432 (database" in str(error)
    assert "unknown host" in str(error) and "check its spelling and DNS" in str(error)
    assert isinstance(error.__cause__, socket.gaierror)
    _materialize_fails(server, url, "no-such-host.invalid:5432", "unknown host")


def test_server_that_never_answers(server: PasswordServer, silent_port: int) -> None:
    url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{silent_port}/{DB}"
    error = _failure(url)
    assert f"127.0.0.1:{silent_port}" in str(error)
    assert "timed out (no answer within 2 s)" in str(error)
    assert "raise connect_timeout" in str(error)
    assert isinstance(error.__cause__, TimeoutError)
    _materialize_fails(server, url, "timed out")


def test_wrong_password(server: PasswordServer) -> None:
    url = _url(server, password="not-the-password")
    error = _failure(url)
    assert f"127.0.0.1:{server.port} (database '{DB}', user '{ROLE}')" in str(error)
    assert "authentication failed" in str(error) and "check the user and password" in str(error)
    assert "not-the-password" not in str(error)
    assert type(error.__cause__).__name__ == "InvalidPasswordError"
    _materialize_fails(server, url, "authentication failed")


def test_missing_database(server: PasswordServer) -> None:
    url = f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{server.port}/no_such_db"
    error = _failure(url)
    assert "database 'no_such_db'" in str(error)
    assert "database does not exist" in str(error) and "create the database" in str(error)
    assert type(error.__cause__).__name__ == "InvalidCatalogNameError"
    _materialize_fails(server, url, "database does not exist")


def test_tls_required_of_a_server_without_it(server: PasswordServer) -> None:
    url = _url(server, "?sslmode=require")
    error = _failure(url)
    assert f"127.0.0.1:{server.port}" in str(error)
    assert "TLS refused" in str(error) and "lower sslmode" in str(error)
    assert isinstance(error.__cause__, ConnectionError)
    _materialize_fails(server, url, "TLS refused")
