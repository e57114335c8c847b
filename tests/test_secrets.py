"""No password is ever shown. Each of 17 passwords with reserved and unusual characters is
given three ways (a literal URL, percent-encoded, or with an unencoded '@'; an
``EnvVar("DATABASE_URL")`` URL; ``PGPASSWORD`` with a URL without password) to a role that
has it on a server that checks passwords. An asset is materialized through it, and a failed
connection (a wrong port) is caused through the IO manager and directly. No fragment of three
or more characters of the password may appear in any Dagster event log entry of those runs,
any Python log record or console output, any output metadata value, any error message (with
its causes), nor in ``repr()``/``str()`` of the resource or the IO manager."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from dagster import DagsterInstance, EnvVar

from resources import DatabaseConnectionError, PostgresResource, PostgresUpsertIOManager

from .helpers import frame_asset, run_assets
from .password_server import PasswordServer, password_server

__all__ = ["password_server"]  # the fixture, used by name

# Letters between the special characters are upper case and lower case past 'f', so that no
# three-character fragment of a password occurs by chance in hex ids or in English words.
PASSWORDS = [
    "Qz@Xk9Wm",  # '@'
    "Hq#Jv2Rp",  # '#'
    "Sz/Tk3Lw",  # '/'
    "Cm:Nq4Gx",  # ':'
    "Pr%Vz5Hk",  # '%'
    "Qw?Ym6Tz",  # '?'
    "Am&Pk7Rz",  # '&'
    "Ew=Zq8Ks",  # '='
    "Pl+Uz9Xq",  # '+'
    "Sp Wq1Zk",  # a space
    "Sq'Tz2Vm",  # a single quote
    'Dq"Wz3Kp',  # a double quote
    "Bk\\Xz4Qm",  # a backslash
    "Ünï¢ødé-Zq5",  # non-ASCII
    "Rx%41Yq%2F",  # what looks like percent-encoding
    "Zq@Xw@Vk9m",  # two '@'
    "Mz@#/:%?&=+ '\"\\Kq",  # all of them
]
# Passwords whose only reserved character is '@': also tried unencoded in a literal URL.
UNENCODED = [pw for pw in PASSWORDS if all(c.isalnum() or c == "@" for c in pw)]
WAYS = ["literal", "envvar", "pgpassword"]


def _fragments(password: str) -> set[str]:
    return {password[i : i + 3] for i in range(len(password) - 2)}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _causes(error: BaseException | None) -> list[str]:
    texts = []
    while error is not None:
        texts += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return texts


@pytest.fixture
def role(password_server: PasswordServer, request: pytest.FixtureRequest) -> str:
    name = f"secret_{abs(hash(request.node.name)) % 10**8}"
    password = request.node.callspec.params["password"]
    escaped = password.replace("'", "''")
    password_server.execute(f"DROP ROLE IF EXISTS {name}")
    password_server.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{escaped}'")
    return name


def _case(
    way: str, password: str, role: str, port: int, monkeypatch: pytest.MonkeyPatch, raw: bool
) -> PostgresResource:
    """The resource for one way of giving the password; the variables it needs are set."""
    secret = password if raw else quote(password, safe="")
    with_password = f"postgresql://{role}:{secret}@127.0.0.1:{port}/postgres"
    if way == "literal":
        return PostgresResource(url=with_password, connect_timeout=3)
    if way == "envvar":
        monkeypatch.setenv("DATABASE_URL", with_password)
        return PostgresResource(url=EnvVar("DATABASE_URL"), connect_timeout=3)
    monkeypatch.setenv("PGPASSWORD", password)
    return PostgresResource(url=f"postgresql://{role}@127.0.0.1:{port}/postgres", connect_timeout=3)


def _check(
    password_server: PasswordServer,
    role: str,
    password: str,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    raw: bool = False,
) -> None:
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    key = (role, "t")
    asset_def = frame_asset(
        pd.DataFrame({"id": [1, 2]}), key=key, metadata={"conflict_target": "id"}
    )
    good = _case(way, password, role, password_server.port, monkeypatch, raw)
    with DagsterInstance.ephemeral() as instance:
        ok = run_assets([asset_def], good, instance=instance)
        assert ok.success
        assert password_server.fetch(f"SELECT count(*) AS n FROM {role}.t") == [{"n": 2}]
        for event in ok.get_asset_materialization_events():
            texts += [str(v.value) for v in event.materialization.metadata.values()]
            texts.append(repr(event))
        bad = _case(way, password, role, _closed_port(), monkeypatch, raw)
        failed = run_assets([asset_def], bad, instance=instance, raise_on_error=False)
        assert not failed.success
        for run in (ok, failed):
            for entry in instance.all_logs(run.run_id):
                texts += [str(entry), repr(entry)]
        for resource in (good, bad):
            manager = PostgresUpsertIOManager(postgres=resource)
            texts += [repr(resource), str(resource), repr(manager), str(manager)]
    # The same failure directly, with its causes.
    direct = _case(way, password, role, _closed_port(), monkeypatch, raw)
    with pytest.raises(DatabaseConnectionError) as failure:
        direct.run(lambda conn: asyncio.sleep(0))
    direct.dispose()
    assert "connection refused" in str(failure.value)
    texts += _causes(failure.value)
    texts += [caplog.text, *[r.getMessage() for r in caplog.records]]
    out, err = capfd.readouterr()
    texts += [out, err]
    for text in texts:
        for fragment in _fragments(password):
            assert fragment not in text, f"{fragment!r} of the password shown: {text[:2000]}"


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_no_fragment_of_the_password_is_shown(
    password_server: PasswordServer,
    role: str,
    password: str,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _check(password_server, role, password, way, monkeypatch, caplog, capfd, tmp_path)


@pytest.mark.parametrize("way", ["literal", "envvar"])
@pytest.mark.parametrize("password", UNENCODED)
def test_an_unencoded_at_sign_works_and_is_not_shown(
    password_server: PasswordServer,
    role: str,
    password: str,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _check(password_server, role, password, way, monkeypatch, caplog, capfd, tmp_path, raw=True)
