"""Load DataFrames (pandas, polars, Arrow, streams of them) into PostgreSQL with binary COPY and an
atomic upsert, from Dagster."""

from .core import (
    ArrowFrame,
    KeySlice,
    TimeWindowSlice,
    WritePlan,
    WriteResult,
    copy_upsert,
    read_arrow,
    read_table,
)
from .embedded import embedded_database_url
from .errors import (
    ConfigurationError,
    ConnectionLostError,
    CopyUpsertError,
    DatabaseConnectionError,
    DatabaseError,
    DatabaseTimeoutError,
    FrameError,
    TableMismatchError,
    TableNotFoundError,
    TableOwnerError,
    WritePlanError,
)
from .io_manager import PostgresUpsertIOManager
from .resource import PostgresResource

__all__ = [
    "ArrowFrame",
    "ConfigurationError",
    "ConnectionLostError",
    "CopyUpsertError",
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseTimeoutError",
    "FrameError",
    "KeySlice",
    "PostgresResource",
    "PostgresUpsertIOManager",
    "TableMismatchError",
    "TableNotFoundError",
    "TableOwnerError",
    "TimeWindowSlice",
    "WritePlan",
    "WritePlanError",
    "WriteResult",
    "copy_upsert",
    "embedded_database_url",
    "read_arrow",
    "read_table",
]
