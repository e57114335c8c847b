"""Connections through PgBouncer in transaction pooling mode (``PostgresResource(pgbouncer=True)``).

There, each transaction may run on another server connection, shared with other clients:
nothing may outlive a transaction on the server. So statements are never kept prepared
(asyncpg's cache off: unnamed statements, SQLAlchemy's prepares included), only the startup
parameters PgBouncer passes on are sent at connect (it refuses the others), and the
settings a session would keep are set again at the start of every transaction, for that
transaction only (``set_config(..., true)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import asyncpg
from asyncpg.transaction import Transaction

from .connection import ConnectionSettings
from .errors import ConfigurationError

__all__ = ["connect_options", "split_settings"]

# The startup parameters PgBouncer (1.18 on) passes on without an ignore_startup_parameters
# entry, among those the resource sets.
STARTUP_PARAMETERS = frozenset({"application_name"})


def split_settings(
    server_settings: Mapping[str, str], settings: ConnectionSettings
) -> tuple[dict[str, str], dict[str, str]]:
    """The settings to send at connect behind PgBouncer, and those to set in every
    transaction. temp_buffers is left to the server: PostgreSQL refuses to change it once
    the session has used a temporary table, and behind PgBouncer the session is shared.

    Raises:
        ConfigurationError: the URL sets temp_buffers.
    """
    if "temp_buffers" in settings.server_settings:
        raise ConfigurationError(
            f"the database URL {settings.masked!r} sets temp_buffers, which cannot be set "
            "behind PgBouncer (pgbouncer=True): set it on the server or the role (ALTER ROLE "
            "... SET temp_buffers = '256MB')"
        )
    startup = {k: v for k, v in server_settings.items() if k in STARTUP_PARAMETERS}
    per_transaction = {
        k: v
        for k, v in server_settings.items()
        if k not in STARTUP_PARAMETERS and k != "temp_buffers"
    }
    return startup, per_transaction


def connect_options(per_transaction: Mapping[str, str]) -> dict[str, Any]:
    """asyncpg.connect()'s arguments for a connection through PgBouncer that sets
    ``per_transaction`` at the start of each transaction."""

    class Connection(_PerTransactionSettings):
        settings: ClassVar[Mapping[str, str]] = MappingProxyType(dict(per_transaction))

    return {"statement_cache_size": 0, "connection_class": Connection}


def set_settings_sql(count: int) -> str:
    """The statement that sets ``count`` settings for the transaction, names and values
    bound as parameters ``$1, $2, ...`` in pairs."""
    calls = (f"set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(count))
    return "SELECT " + ", ".join(calls)


class _PerTransactionSettings(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that sets ``settings`` right after each BEGIN (not after a
    SAVEPOINT). The package's transactions and SQLAlchemy's both begin through
    ``transaction()``."""

    settings: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> Transaction:
        """As asyncpg's, with the settings set once the transaction has begun."""
        self._check_open()
        return _SettingsTransaction(self, isolation, readonly, deferrable)


class _SettingsTransaction(Transaction):  # type: ignore[misc]
    __slots__ = ()

    async def start(self) -> None:
        """Begin, then set the connection's settings for this transaction; if that fails,
        roll the BEGIN back."""
        conn: _PerTransactionSettings = self._connection
        outermost = not conn.is_in_transaction()
        await super().start()
        if outermost and conn.settings:
            args = [value for pair in conn.settings.items() for value in pair]
            try:
                await conn.execute(set_settings_sql(len(conn.settings)), *args)
            except BaseException as exc:
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
