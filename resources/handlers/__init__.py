"""One handler per DataFrame library, shaped like Dagster's ``DbTypeHandler``: the types it
takes (``supported_types``), its write side (``to_arrow``: the object as an
:class:`~resources.frame.ArrowFrame`) and its read side (``from_arrow``: a read's Arrow
table as the library's frame). The core sees Arrow only; the IO manager picks the handler
from the output's value and from the input's annotation.

An output may also be an iterator (a generator) of frames of any of these libraries, whose
chunks form one frame (:func:`chunked`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from ..catalog import Column
from ..errors import ConfigurationError, FrameError
from ..frame import ArrowFrame, close_source
from .arrow_handler import ArrowHandler, ArrowStreamHandler
from .pandas_handler import PandasHandler

__all__ = [
    "FrameHandler",
    "handler_for_input",
    "to_arrow",
]

# polars' oldest release with LazyFrame.collect_batches, the streaming a LazyFrame write uses.
POLARS_EXTRA = "pip install 'dagster-copy-upsert[polars]' (polars>=1.34)"


class FrameHandler(Protocol):
    """One library's two sides."""

    @property
    def supported_types(self) -> tuple[type, ...]:
        """The frame types this handler writes and reads."""

    def to_arrow(self, obj: Any) -> ArrowFrame:
        """The write side: ``obj`` as Arrow record batches."""

    def from_arrow(self, table: pa.Table, columns: Mapping[str, Column]) -> Any:
        """The read side: a read's decoded table of the catalog's ``columns``."""


def _polars(lazy: bool = False) -> FrameHandler:
    """polars' handler, imported only for a polars frame or annotation (importing polars
    takes a fifth of a second that pandas users need not pay)."""
    try:
        from .polars_handler import LazyPolarsHandler, PolarsHandler
    except ImportError as exc:
        raise ConfigurationError(
            f"polars frames need the polars extra ({exc}): {POLARS_EXTRA}"
        ) from exc
    return LazyPolarsHandler() if lazy else PolarsHandler()


def _from_polars(kind: type) -> bool:
    return (getattr(kind, "__module__", None) or "").split(".")[0] == "polars"


def to_arrow(obj: object) -> ArrowFrame:
    """An output's value as Arrow: a frame of any handler's library, an Arrow C stream, or an
    iterator of frames.

    Raises:
        FrameError: a value no handler takes, or an iterator of none.
        ConfigurationError: a polars frame without the polars extra.
    """
    if isinstance(obj, pd.DataFrame):
        return PandasHandler().to_arrow(obj)
    if isinstance(obj, ArrowHandler.supported_types):
        return ArrowHandler().to_arrow(obj)
    if _from_polars(type(obj)):
        polars = _polars()
        if isinstance(obj, polars.supported_types):
            return polars.to_arrow(obj)
    if ArrowStreamHandler().accepts(obj):
        return ArrowStreamHandler().to_arrow(obj)
    if isinstance(obj, Iterator):
        return chunked(obj)
    raise FrameError(
        f"returned {type(obj).__name__}, which this IO manager cannot store: return a pandas "
        "or polars DataFrame, a polars LazyFrame, a pyarrow Table or RecordBatchReader, an "
        "object with __arrow_c_stream__, or an iterator of these"
    )


def chunked(chunks: Iterator[object]) -> ArrowFrame:
    """An iterator of frames as one frame, read once: the first chunk gives the columns and
    their types; each later chunk must have the same (checked as it is copied)."""
    first = next(chunks, None)
    if first is None:
        raise FrameError(
            "the output's iterator yielded no chunk: yield at least one frame (it may have no "
            "rows), so that the columns are known"
        )
    if isinstance(first, Iterator):
        raise FrameError("a chunk is itself an iterator: yield frames, not iterators")
    head = to_arrow(first)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for chunk in itertools.chain([head], (to_arrow(c) for c in chunks)):
                yield from chunk.batches()
        finally:
            close_source(chunks)

    return ArrowFrame(
        schema=head.schema, batches=batches, rows=None, replayable=False, text_as=head.text_as
    )


def handler_for_input(annotation: Any) -> FrameHandler:
    """The handler whose frame an input annotated ``annotation`` gets: pandas for an
    unannotated input.

    Raises:
        ConfigurationError: a type no handler returns, or one whose library is missing.
    """
    if annotation in (None, Any, object, pd.DataFrame):
        return PandasHandler()
    if annotation in (pa.Table, pa.RecordBatchReader):
        return ArrowHandler()
    if _from_polars(annotation):
        handler = _polars(lazy=getattr(annotation, "__name__", "") == "LazyFrame")
        if annotation in handler.supported_types:
            return handler
    raise ConfigurationError(
        f"an input annotated {getattr(annotation, '__name__', annotation)!s} cannot be loaded "
        "by this IO manager: annotate it pandas.DataFrame (or leave it unannotated), "
        "polars.DataFrame, polars.LazyFrame, pyarrow.Table or pyarrow.RecordBatchReader"
    )
