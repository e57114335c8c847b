"""Errors raised by dagster-copy-upsert, and the one table that translates the driver's.

Every error says what is wrong, which table, column or key it concerns, and what to do.
A write that raises any of them has changed nothing in the target table.

Exception tree::

    CopyUpsertError
    ├── WritePlanError (ValueError)        an option or name the write was given is invalid
    ├── ConfigurationError (ValueError)    the resource's configuration is invalid (its URL)
    ├── FrameError (ValueError)            the DataFrame cannot be written as it is
    ├── TableMismatchError                 the existing table does not fit the frame or plan
    │   ├── TableOwnerError                another output owns the table (its comment says)
    │   └── TableNotFoundError (LookupError)   a read's table does not exist
    └── DatabaseError                      the database refused or lost the work
        ├── DatabaseTimeoutError (TimeoutError)     a timeout ran out (client or server side)
        ├── ConnectionLostError (ConnectionError)   the connection broke mid-way
        └── DatabaseConnectionError (ConnectionError)   no connection could be opened

:func:`translate` maps a driver error to one of these, by the table :data:`TRANSLATIONS`;
:func:`translate_connect` maps a failure to connect, by :data:`CONNECT_CAUSES`. When several
entries match, the most specific class wins. The caller raises the result ``from`` the
driver's error, which so stays the ``__cause__``.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg


class CopyUpsertError(Exception):
    """Base class of every error this package raises."""

    def for_output(self, label: str) -> CopyUpsertError:
        """Return the same error, its message prefixed with the output it concerns (``asset
        shop/orders``, ``op 'clean' output 'result'``)."""
        return type(self)(f"{label[:1].upper()}{label[1:]}: {self}")


class WritePlanError(CopyUpsertError, ValueError):
    """An option (write_mode, conflict_target, ...) or a name is invalid."""


class ConfigurationError(CopyUpsertError, ValueError):
    """The resource's configuration is invalid: a database URL that cannot be used."""


class FrameError(CopyUpsertError, ValueError):
    """The DataFrame cannot be written: NULL or duplicate keys, an unsupported dtype, ..."""


class TableMismatchError(CopyUpsertError):
    """The existing table does not match: no unique index on the key, a type that cannot hold
    the frame's values, a missing column."""


class TableOwnerError(TableMismatchError):
    """The table records another owner (the output that writes it) than this write's: two
    outputs would overwrite each other's rows."""


class TableNotFoundError(TableMismatchError, LookupError):
    """The table a read asks for does not exist."""


class DatabaseError(CopyUpsertError):
    """PostgreSQL refused the work or the connection was lost; the transaction was rolled
    back."""


class DatabaseTimeoutError(DatabaseError, TimeoutError):
    """A timeout ran out: the client's ``command_timeout``, or the server's
    ``statement_timeout`` or ``lock_timeout``."""


class ConnectionLostError(DatabaseError, ConnectionError):
    """The connection to PostgreSQL broke (server restart, terminated backend, network)."""


class DatabaseConnectionError(DatabaseError, ConnectionError):
    """No connection to PostgreSQL could be opened: the message names the host, port,
    database and user (never the password), the cause and what to check."""


@dataclass(frozen=True)
class Operation:
    """What was being done when an error happened, for its message: a ``"write"`` or a
    ``"read"`` of ``table`` (``schema.table``)."""

    action: Literal["write", "read"]
    table: str
    write_mode: str | None = None
    retries: int = 0
    # False for a stream, which is read once and so never retried.
    retried: bool = True
    # Whether the driver connection was closed when the error reached us.
    connection_closed: bool = False

    @property
    def doing(self) -> str:
        return "writing" if self.action == "write" else "reading"

    @property
    def nothing_done(self) -> str:
        return "nothing was written" if self.action == "write" else "nothing was read"


# None: the error is not the driver's after all, and stays as it is.
Translation = Callable[[BaseException, Operation], CopyUpsertError | None]


def _lost(exc: BaseException, op: Operation) -> CopyUpsertError:
    return ConnectionLostError(
        f"lost the connection to PostgreSQL while {op.doing} {op.table} ({exc}); "
        f"{op.nothing_done}: check that the server is up, then run again"
    )


def _os_error(exc: BaseException, op: Operation) -> CopyUpsertError | None:
    # A file or permission error (from a progress callback, say) is no lost connection.
    return _lost(exc, op) if op.connection_closed else None


def _interface(exc: BaseException, op: Operation) -> CopyUpsertError:
    if op.connection_closed:
        return _lost(exc, op)
    return DatabaseError(f"the driver refused the {op.action} of {op.table}: {exc}")


def _client_timeout(exc: BaseException, op: Operation) -> CopyUpsertError:
    return DatabaseTimeoutError(
        f"{op.doing} {op.table} timed out (the resource's command_timeout); {op.nothing_done}: "
        "look for locks or a slow server, or raise the timeout"
    )


def _lock_timeout(exc: BaseException, op: Operation) -> CopyUpsertError:
    return DatabaseTimeoutError(
        f"waited longer than lock_timeout for a lock on {op.table} held by another session "
        f"({exc}); {op.nothing_done}: find that session (pg_locks), or raise the resource's "
        "lock_timeout"
    )


def _canceled(exc: BaseException, op: Operation) -> CopyUpsertError:
    if "statement timeout" not in str(exc):
        return DatabaseError(
            f"a statement {op.doing} {op.table} was canceled ({exc}); {op.nothing_done}: "
            "another session canceled it (pg_cancel_backend), or the server is shutting down"
        )
    return DatabaseTimeoutError(
        f"a statement {op.doing} {op.table} ran longer than statement_timeout ({exc}); "
        f"{op.nothing_done}: raise the resource's statement_timeout, or look for locks"
    )


def _conflict(exc: BaseException, op: Operation) -> CopyUpsertError:
    kind = (
        "deadlock" if isinstance(exc, asyncpg.DeadlockDetectedError) else "serialization conflict"
    )
    if not op.retried:
        return DatabaseError(
            f"{op.doing} {op.table} failed on a {kind} with another session ({exc}); "
            f"{op.nothing_done}, and a stream is read once, so it is not retried: retry the "
            "step from a fresh stream (a RetryPolicy on the asset or op; inside a transaction "
            "of your own, retry that whole transaction), or find the other writer"
        )
    return DatabaseError(
        f"{op.doing} {op.table} failed {op.retries + 1} times on a {kind} with another session "
        f"({exc}); {op.nothing_done}: find the other writer, or raise the retries (inside a "
        "transaction of your own at REPEATABLE READ or SERIALIZABLE, retry that whole "
        "transaction instead)"
    )


def _unique(exc: BaseException, op: Operation) -> CopyUpsertError:
    hint = (
        "use write_mode 'upsert' with a conflict_target to update existing rows"
        if op.write_mode == "append"
        else "the frame's rows collide on another unique constraint than conflict_target"
    )
    constraint = getattr(exc, "constraint_name", None)
    return FrameError(
        f"unique constraint {constraint!r} of {op.table} refused a row ({exc}); {hint}"
    )


def _not_null(exc: BaseException, op: Operation) -> CopyUpsertError:
    message = getattr(exc, "message", None) or str(exc)  # without the failing row's DETAIL
    return TableMismatchError(
        f"column {getattr(exc, 'column_name', None)!r} of table {op.table} is NOT NULL but "
        f"would be NULL ({message}): fill the column's NULLs in the frame, or, when the frame "
        "lacks the column, add it, or give the table's column a default"
    )


def _privilege(exc: BaseException, op: Operation) -> CopyUpsertError:
    return DatabaseError(
        f"the database role may not {op.action} {op.table} ({exc}): grant it that privilege"
        + (
            ", or create the schema and table up front (see the README's 'Privileges')"
            if op.action == "write"
            else " (GRANT SELECT; see the README's 'Privileges')"
        )
    )


def _bad_value(exc: BaseException, op: Operation) -> CopyUpsertError:
    # A COPY's refusal names its column only in the error's context ("COPY t, line 2,
    # column j: ...").
    copied = _COPY_CONTEXT.search(getattr(exc, "context", None) or "")
    column = getattr(exc, "column_name", None) or (copied and copied.group(1))
    where = f"column {column!r}: " if column else ""
    return TableMismatchError(
        f"{where}table {op.table} refused the frame's values: {exc}; {op.nothing_done}: "
        "convert the column in the frame, or alter the table"
    )


_COPY_CONTEXT = re.compile(r"^COPY .*?, line \d+, column (.+?)(?:: |$)", re.MULTILINE)


def _check(exc: BaseException, op: Operation) -> CopyUpsertError:
    if "default partition" in str(exc):
        return TableMismatchError(
            f"the DEFAULT partition of {op.table} holds rows of the partition being created "
            f"for the frame ({exc}); {op.nothing_done}: move those rows out of the DEFAULT "
            "partition, or drop 'partitioning: native' for this table"
        )
    if "no partition of relation" not in str(exc):
        return _bad_value(exc, op)
    return TableMismatchError(
        f"partitioned table {op.table} has no partition for a row of the frame ({exc}); "
        f"{op.nothing_done}: create that partition "
        "(or a DEFAULT one), or let the IO manager create the table with metadata "
        "partitioning: native"
    )


def _definition(exc: BaseException, op: Operation) -> CopyUpsertError:
    if "would overlap" not in str(exc):
        return _refused(exc, op)
    return TableMismatchError(
        f"the partition of {op.table} the write would create overlaps one it has ({exc}); "
        f"{op.nothing_done}: drop 'partitioning: native' for this table (its rows then go to "
        "the partitions it has), or detach the overlapping one"
    )


def _refused(exc: BaseException, op: Operation) -> CopyUpsertError:
    return DatabaseError(f"PostgreSQL refused the {op.action} of {op.table}: {exc}")


# Driver error class → translation. The most specific matching class wins (the earliest in
# the error's MRO), so the order here does not matter.
TRANSLATIONS: Sequence[tuple[type[BaseException], Translation]] = (
    (OSError, _os_error),
    (ConnectionError, _lost),
    (asyncpg.ConnectionDoesNotExistError, _lost),
    (asyncpg.PostgresConnectionError, _lost),
    (asyncpg.AdminShutdownError, _lost),
    (asyncpg.CannotConnectNowError, _lost),
    (asyncpg.CrashShutdownError, _lost),
    (asyncpg.InterfaceError, _interface),
    (TimeoutError, _client_timeout),
    (asyncpg.LockNotAvailableError, _lock_timeout),
    (asyncpg.QueryCanceledError, _canceled),
    (asyncpg.DeadlockDetectedError, _conflict),
    (asyncpg.SerializationError, _conflict),
    (asyncpg.UniqueViolationError, _unique),
    (asyncpg.NotNullViolationError, _not_null),
    (asyncpg.InsufficientPrivilegeError, _privilege),
    (asyncpg.DataError, _bad_value),
    (asyncpg.IntegrityConstraintViolationError, _bad_value),
    (asyncpg.CheckViolationError, _check),
    (asyncpg.InvalidObjectDefinitionError, _definition),
    (asyncpg.PostgresError, _refused),
)


def translate(exc: BaseException, operation: Operation) -> BaseException:
    """The error to raise for ``exc``: this package's own as it is, a driver error as the
    most specific entry of :data:`TRANSLATIONS` says, anything else unchanged."""
    if isinstance(exc, CopyUpsertError):
        return exc
    mro = type(exc).__mro__
    matches = [(cls, how) for cls, how in TRANSLATIONS if cls in mro]
    if not matches:
        return exc
    _, how = min(matches, key=lambda match: mro.index(match[0]))
    return how(exc, operation) or exc


# Failure to connect, by the driver's error class → (the cause, what to check). The most
# specific matching class wins, as in TRANSLATIONS.
CONNECT_CAUSES: Sequence[tuple[type[BaseException], str, str]] = (
    (OSError, "network error", "check the host, the port and the network between"),
    (
        socket.gaierror,
        "unknown host",
        "the host name does not resolve: check its spelling and DNS",
    ),
    (
        ConnectionRefusedError,
        "connection refused",
        "nothing listens there: check the host and port, and that the server runs and "
        "listens on that address (listen_addresses, port)",
    ),
    (
        FileNotFoundError,
        "no server socket",
        "no server listens on that unix socket: check the socket directory and port, and "
        "that the server runs",
    ),
    (
        TimeoutError,
        "timed out",
        "the server did not answer in time: check that the host and port are a PostgreSQL "
        "server, firewalls between, the server's load; or raise connect_timeout",
    ),
    (
        ConnectionError,
        "the server closed the connection",
        "check the server's log, and that the port is a PostgreSQL server's",
    ),
    (
        ssl.SSLError,
        "TLS failed",
        "check sslmode and sslrootcert (the CA that signed the server's certificate), and "
        "the host name the certificate names",
    ),
    (
        asyncpg.InvalidAuthorizationSpecificationError,
        "authentication refused",
        "check the user name, and that pg_hba.conf admits it from this host",
    ),
    (
        asyncpg.InvalidPasswordError,
        "authentication failed",
        "check the user and password (in the URL, PGPASSWORD or .pgpass)",
    ),
    (
        asyncpg.InvalidCatalogNameError,
        "database does not exist",
        "check the database name, or create the database",
    ),
    (
        asyncpg.TooManyConnectionsError,
        "too many connections",
        "lower pool_size and max_overflow, or raise the server's max_connections",
    ),
    (
        asyncpg.CannotConnectNowError,
        "the server is starting or stopping",
        "wait for it, then run again",
    ),
    (
        asyncpg.TargetServerAttributeNotMatched,
        "no host fits target_session_attrs",
        "check target_session_attrs and which host is the primary",
    ),
    (
        # PgBouncer refusing a startup parameter ("unsupported startup parameter: ...").
        asyncpg.ProtocolViolationError,
        "the server refused a connection parameter",
        "if the URL reaches PgBouncer, set the resource's pgbouncer=True (PgBouncer refuses "
        "the settings a connection sends at startup)",
    ),
    (asyncpg.InterfaceError, "the driver failed", "check the URL's parameters"),
    (asyncpg.PostgresError, "the server refused the connection", "check the server's log"),
)


def translate_connect(exc: BaseException, target: object, timeout: float | None) -> BaseException:
    """The error to raise when opening a connection to ``target`` (its ``str`` names hosts,
    database and user) failed with ``exc``: a :class:`DatabaseConnectionError` saying the
    cause and what to check; a ``ClientConfigurationError`` (a TLS file asyncpg cannot use)
    becomes a :class:`ConfigurationError`; anything else stays as it is."""
    if isinstance(exc, CopyUpsertError):
        return exc
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return ConfigurationError(f"cannot connect to PostgreSQL at {target}: {exc}")
    mro = type(exc).__mro__
    matches = [entry for entry in CONNECT_CAUSES if entry[0] in mro]
    if not matches:
        return exc
    _, cause, check = min(matches, key=lambda entry: mro.index(entry[0]))
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        detail = f"no answer within {timeout:g} s" if timeout else "no answer"
    elif isinstance(exc, ConnectionError) and "SSL" in detail:
        cause = "TLS refused"
        check = "the server does not offer TLS: enable ssl on it, or lower sslmode"
    return DatabaseConnectionError(
        f"cannot connect to PostgreSQL at {target}: {cause} ({detail}); {check}"
    )
