"""Errors raised by dagster-copy-upsert.

Every error says what is wrong, which table, column or key it concerns, and what to do.
A write that raises any of them has changed nothing in the target table.

Exception tree::

    CopyUpsertError
    ├── WritePlanError (ValueError)        an option or name the write was given is invalid
    ├── FrameError (ValueError)            the DataFrame cannot be written as it is
    ├── TableMismatchError                 the existing table does not fit the frame or plan
    └── DatabaseError                      the database refused or lost the write
"""

from __future__ import annotations


class CopyUpsertError(Exception):
    """Base class of every error this package raises."""

    def for_asset(self, asset: str) -> CopyUpsertError:
        """Return the same error, its message prefixed with the asset it concerns."""
        return type(self)(f"Asset {asset}: {self}")


class WritePlanError(CopyUpsertError, ValueError):
    """An option (write_mode, conflict_target, ...) or a name is invalid."""


class FrameError(CopyUpsertError, ValueError):
    """The DataFrame cannot be written: NULL or duplicate keys, an unsupported dtype, ..."""


class TableMismatchError(CopyUpsertError):
    """The existing table does not match: no unique index on the key, a type that cannot hold
    the frame's values, a missing column."""


class DatabaseError(CopyUpsertError):
    """PostgreSQL refused the write or the connection was lost; the transaction was rolled back."""
