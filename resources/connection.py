"""Database URLs as libpq reads them, handed to asyncpg.

asyncpg parses libpq's URL itself (hosts and ports, unix sockets, percent-encoding, the TLS
parameters, ``target_session_attrs``, ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``/
``PGDATABASE``/``PGPASSFILE`` and ``.pgpass``). This module only checks the URL up front, so
that a mistake fails naming the parameter, takes out the libpq parameters asyncpg lacks
(``connect_timeout``, ``options``, ``application_name``), and masks the URL for display.
"""

from __future__ import annotations

import difflib
import getpass
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import asyncpg

from .errors import ConfigurationError, translate_connect

SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
# libpq's URL parameters that asyncpg reads from the DSN itself ("database" is asyncpg's).
ASYNCPG_PARAMETERS = (
    "host",
    "port",
    "dbname",
    "database",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
    "service",
)
# libpq's parameters that asyncpg lacks, taken out of the DSN here and passed as arguments.
MAPPED_PARAMETERS = ("connect_timeout", "options", "application_name")
PARAMETERS = ASYNCPG_PARAMETERS + MAPPED_PARAMETERS
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
# Parameters whose values are secret, never shown.
SECRET_PARAMETERS = ("password", "sslpassword")
# Files the URL names: checked up front, since asyncpg reports a missing one without its name.
FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile")


@dataclass(frozen=True)
class Target:
    """Where a URL connects, as libpq (and asyncpg) resolve it with the environment: for
    messages. ``hosts`` holds ``host:port`` items or unix socket directories."""

    hosts: tuple[str, ...]
    database: str
    user: str

    def __str__(self) -> str:
        where = ", ".join(self.hosts)
        return f"{where} (database {self.database!r}, user {self.user!r})"


@dataclass(frozen=True)
class ConnectionSettings:
    """A database URL split into what asyncpg reads (``dsn``, which holds the password:
    never show it) and the libpq parameters asyncpg lacks."""

    dsn: str = field(repr=False)
    masked: str
    target: Target
    # connect_timeout in seconds as the URL gives it: None, not given; 0, no limit.
    connect_timeout: float | None = None
    # From options=-c name=value and application_name.
    server_settings: dict[str, str] = field(default_factory=dict)
    # The URL's user info, decoded (for a SQLAlchemy URL of the same database).
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    # One DSN per host when the URL's host part names several: libpq gives each host its
    # own connect_timeout, where asyncpg's timeout covers them all.
    host_dsns: tuple[str, ...] = field(default=(), repr=False)


def parse_url(raw: str) -> ConnectionSettings:
    """Check a libpq URL and split it for asyncpg.

    Accepts ``postgresql://``, ``postgres://`` and ``postgresql+asyncpg://``; a password
    holding an unencoded ``@`` (the host follows the last ``@``).

    Raises:
        ConfigurationError: another scheme, an unknown parameter, or a malformed value;
            the message names it and shows the URL masked.
    """
    raw = keyword_url(raw) or raw
    masked = masked_url(raw)
    parts = _split(raw)
    if parts is None:
        raise ConfigurationError(
            f"cannot parse the database URL {masked!r}: use "
            "postgresql://user:password@host:port/database, with '@', '/', '?' and '#' in the "
            "password and in parameter values percent-encoded (%40, %2F, %3F, %23)"
        )
    scheme, netloc, path, query = parts
    if scheme.lower() not in SCHEMES:
        raise ConfigurationError(
            f"database URL scheme {scheme!r} is not PostgreSQL: use postgresql://, postgres:// "
            "or postgresql+asyncpg://"
        )
    userinfo, at, hostspec = netloc.rpartition("@")
    user_raw, colon, password_raw = userinfo.partition(":")
    user, password = unquote(user_raw) or None, unquote(password_raw) if colon else None
    params = _query(query or "", masked)
    _check_values(params, masked)
    ports = _ports(hostspec, params, masked)

    mapped = {key: params.pop(key) for key in MAPPED_PARAMETERS if key in params}
    settings = _options(mapped.get("options", ""), masked)
    if "application_name" in mapped:
        settings["application_name"] = mapped["application_name"]
    timeout = None
    if "connect_timeout" in mapped:
        timeout = _number("connect_timeout", mapped["connect_timeout"], masked)

    auth = quote(user or "", safe="") + (":" + quote(password or "", safe="") if colon else "")
    # An empty database ("host/") is no database: asyncpg would take the user name for it
    # and skip dbname= and PGDATABASE, which libpq reads.
    path = "" if path == "/" else path
    dsn = f"postgresql://{auth}{at}{hostspec}{path}" + ("?" + urlencode(params) if params else "")
    target = _target(hostspec, ports, params, unquote(path[1:]), user)
    return ConnectionSettings(
        dsn,
        masked,
        target,
        timeout,
        settings,
        user or params.get("user"),
        params.get("password", password),
        _host_dsns(f"postgresql://{auth}{at}", hostspec, path, params),
    )


def _host_dsns(start: str, hostspec: str, path: str, params: dict[str, str]) -> tuple[str, ...]:
    """One DSN per host when the URL names several (in its host part or in ``host=``), each
    with its port; none for one host, and none for ``prefer-standby``, which asyncpg must
    see whole (it takes any host only once none of them is a standby)."""
    attrs = params.get("target_session_attrs", os.environ.get("PGTARGETSESSIONATTRS", ""))
    in_query = "host" in params
    hosts = (params["host"] if in_query else hostspec).split(",")
    if len(hosts) < 2 or attrs == "prefer-standby":
        return ()
    ports = params.get("port", "").split(",")
    dsns = []
    for i, host in enumerate(hosts):
        one = dict(params)
        if in_query:
            one["host"] = host
        if len(ports) > 1:
            one["port"] = ports[i]
        query = "?" + urlencode(one) if one else ""
        dsns.append(f"{start}{hostspec if in_query else host}{path}{query}")
    return tuple(dsns)


# Failures after which libpq tries the URL's next host: it cannot be reached, is starting
# or stopping, or does not fit target_session_attrs. A refused password is final.
_NEXT_HOST = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TargetServerAttributeNotMatched,
)


async def connect_each_host(
    settings: ConnectionSettings, timeout: float | None, **options: Any
) -> asyncpg.Connection:
    """Open a connection as libpq does: each of the URL's hosts in turn, each with its own
    ``timeout`` (None: no limit); ``options`` go to ``asyncpg.connect``.

    Raises:
        DatabaseConnectionError: no host could be connected to (the last one's cause).
        ConfigurationError: a TLS file asyncpg cannot use.
    """
    *others, last = settings.host_dsns or (settings.dsn,)
    try:
        for dsn in others:
            try:
                return await asyncpg.connect(dsn, timeout=timeout, **options)
            except _NEXT_HOST:
                continue
        return await asyncpg.connect(last, timeout=timeout, **options)
    except Exception as exc:
        translated = translate_connect(exc, settings.target, timeout)
        if translated is exc:
            raise
        raise translated from exc


def masked_url(raw: object) -> str:
    """The URL with its password hidden, wherever it was given (user info or query). Never
    raises: what cannot be parsed is hidden whole, past its scheme."""
    try:
        env_name = getattr(raw, "env_var_name", None)
        if env_name:  # an EnvVar refuses str(): show its name, as Dagster does
            return f"EnvVar({env_name!r})"
        text = keyword_url(str(raw)) or str(raw)
        parts = _split(text)
        if parts is None:
            scheme = text.split("://", 1)[0]
            # Only a scheme is shown: what precedes '://' may be part of a password.
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,29}", scheme):
                scheme = "?"
            return f"{scheme}://***"
        scheme, netloc, path, query = parts
        userinfo, at, hostspec = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        shown = f"{scheme}://{user}{':***' if colon else ''}{at}{hostspec}{path}"
        if query is not None:
            pieces = []
            for piece in query.split("&"):
                key, eq, _ = piece.partition("=")
                # An unknown key may be a misspelt password (pasword=...).
                secret = unquote(key) in SECRET_PARAMETERS or unquote(key) not in PARAMETERS
                pieces.append(f"{key}=***" if secret and eq else (piece if eq else "***"))
            shown += "?" + "&".join(pieces)
        return shown
    except Exception:
        return "<database URL hidden>"


# libpq's keyword/value form: `host=db port=5432 dbname=shop password='a b\'c'`.
_KEYWORD_PAIR = re.compile(r"\s*(\w+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|((?:[^\s'\\]|\\.)*))")


def keyword_url(raw: str) -> str | None:
    """The URL of a libpq keyword/value connection string (every keyword a URL parameter,
    percent-encoded); None when ``raw`` is not one (a URL, or text that cannot be read)."""
    if "://" in raw or not re.match(r"\s*\w+\s*=", raw):
        return None
    pairs, at, text = [], 0, raw.rstrip()
    while at < len(text):
        match = _KEYWORD_PAIR.match(text, at)
        if match is None or match.end() == at:
            return None
        keyword, quoted, bare = match.groups()
        pairs.append((keyword, re.sub(r"\\(.)", r"\1", quoted if quoted is not None else bare)))
        at = match.end()
    return "postgresql://?" + urlencode(pairs, safe="", quote_via=quote)


def _split(raw: str) -> tuple[str, str, str, str | None] | None:
    """Scheme, host part (user info up to its last '@'), path and query; None when the URL
    cannot be read for sure: an '@' past the host part means that an unencoded '/' or '?'
    in the password ended the host part early, and the password would be misread."""
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?]*)([^?]*)(?:\?(.*))?", raw, re.S)
    if match is None or "@" in raw[match.end(2) :]:
        return None
    scheme, netloc, path, query = match.groups()
    return scheme, netloc, path, query


def _query(query: str, masked: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        key, eq, value = piece.partition("=")
        key = unquote(key)
        if not eq:
            raise ConfigurationError(
                f"database URL parameter {key if key in PARAMETERS else '(hidden)'!r} has no "
                f"value in {masked!r}: write name=value"
            )
        if key not in PARAMETERS:
            close = difflib.get_close_matches(key, PARAMETERS, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigurationError(
                f"unknown parameter {key!r} in the database URL {masked!r}: {hint}the URL "
                f"takes {', '.join(PARAMETERS)}; server settings go in options=-c name=value"
            )
        value = unquote(value)  # as libpq: a '+' stays a '+'
        if value:  # libpq: an empty value is as good as none
            params[key] = value
    return params


def _check_values(params: dict[str, str], masked: str) -> None:
    if params.get("sslmode", "prefer") not in SSLMODES:
        raise ConfigurationError(
            f"sslmode {params['sslmode']!r} in the database URL {masked!r} is not one of "
            f"{', '.join(SSLMODES)}"
        )
    if params.get("target_session_attrs", "any") not in SESSION_ATTRS:
        raise ConfigurationError(
            f"target_session_attrs {params['target_session_attrs']!r} in the database URL "
            f"{masked!r} is not one of {', '.join(SESSION_ATTRS)}"
        )
    for key in FILE_PARAMETERS:
        if key in params and not Path(params[key]).expanduser().is_file():
            raise ConfigurationError(
                f"{key} in the database URL {masked!r} names {params[key]!r}, which is not a "
                "readable file"
            )


def _ports(hostspec: str, params: dict[str, str], masked: str) -> list[str]:
    """The ports, one per host or one for all, as libpq pairs them; each checked."""
    hosts = [h for h in hostspec.split(",")] if hostspec else []
    ports: list[str | None] = []
    for host in hosts:
        if not host:
            raise ConfigurationError(f"the database URL {masked!r} has an empty host name")
        bracketed = re.fullmatch(r"\[[^\]]*\](?::(.*))?", host)
        port = bracketed.group(1) if bracketed else host.partition(":")[2] or None
        ports.append(port)
    if "port" in params:
        ports = list(params["port"].split(","))
    for port in ports:
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(
                f"port {port!r} in the database URL {masked!r} is not a port number (1-65535)"
            )
    query_hosts = params.get("host", "").split(",") if params.get("host") else []
    count = len(hosts or query_hosts)
    if len(ports) > 1 and count and len(ports) != count and "port" in params:
        raise ConfigurationError(
            f"the database URL {masked!r} gives {len(ports)} ports for {count} hosts: give one "
            "port, or one per host"
        )
    return [p or "" for p in ports]


def _options(options: str, masked: str) -> dict[str, str]:
    """libpq's ``options``: ``-c name=value`` (or ``--name=value``) items, as server settings."""
    try:
        words = shlex.split(options.replace("\\ ", "\0"))
    except ValueError:
        words = ["(unbalanced quotes)"]
    words = [w.replace("\0", " ") for w in words]
    settings = {}
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            word = words.pop(0)
        elif word.startswith("-c") or word.startswith("--"):
            word = word[2:]
        else:
            word = "=" + word
        name, eq, value = word.partition("=")
        if not (name and eq):
            raise ConfigurationError(
                f"options in the database URL {masked!r}: {word.lstrip('=')!r} is not "
                "'-c name=value'; options takes server settings only, such as "
                "options=-c%20statement_timeout%3D5min"
            )
        settings[name.replace("-", "_")] = value
    return settings


def _number(name: str, value: str, masked: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise ConfigurationError(
            f"{name} {value!r} in the database URL {masked!r} is not a number of seconds"
        )
    return number


def _target(
    hostspec: str, ports: list[str], params: dict[str, str], path_db: str, user: str | None
) -> Target:
    """Where asyncpg will connect, resolved as it does: URL, then PG* variables, defaults."""
    hosts = [unquote(h) for h in hostspec.split(",")] if hostspec else []
    hosts = hosts or params.get("host", os.environ.get("PGHOST", "")).split(",")
    hosts = [h for h in hosts if h]
    env_ports = os.environ.get("PGPORT", "5432").split(",")
    shown = []
    for i, host in enumerate(hosts or ["default sockets and localhost"]):
        bracketed = re.fullmatch(r"\[([^\]]*)\](?::.*)?", host)
        name = bracketed.group(1) if bracketed else host.partition(":")[0]
        port = ports[i] if i < len(ports) else (ports[0] if len(ports) == 1 else "")
        port = port or (env_ports[i] if i < len(env_ports) else env_ports[0])
        shown.append(f"{name} port {port}" if name.startswith("/") else f"{name}:{port}")
    user = user or params.get("user") or os.environ.get("PGUSER") or _os_user()
    database = (
        path_db
        or params.get("dbname")
        or params.get("database")
        or os.environ.get("PGDATABASE")
        or user
    )
    return Target(tuple(shown), database, user)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container without /etc/passwd entry
        return "?"
