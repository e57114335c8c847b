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
from types import UnionType
from typing import Any, Protocol, Union, get_args, get_origin

import pandas as pd
import pyarrow as pa

from ..catalog import Column
from ..errors import ConfigurationError, FrameError
from ..frame import ArrowFrame, close_source, failing_part_way
from .arrow_handler import ArrowHandler, ArrowStreamHandler
from .pandas_handler import PandasHandler

__all__ = [
    "FrameHandler",
    "frame_annotation",
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
    frame = _frame_to_arrow(obj)
    if frame is not None:
        return frame
    if isinstance(obj, Iterator):
        return chunked(obj)
    if obj is None:
        raise FrameError(
            "returned None, which this IO manager cannot store: annotate a function that "
            "writes nothing '-> None' (Dagster then stores nothing), or return a frame"
        )
    raise FrameError(
        f"returned {type(obj).__name__}, which this IO manager cannot store: return "
        f"{_FORMS}, or an iterator of these"
    )


_FORMS = (
    "a pandas or polars DataFrame, a polars LazyFrame, a pyarrow Table or RecordBatchReader, "
    "an object with __arrow_c_stream__"
)


def _frame_to_arrow(obj: object) -> ArrowFrame | None:
    """``obj`` as Arrow, if a handler takes it (an iterator of frames is none of them)."""
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
    return None


def chunked(chunks: Iterator[object]) -> ArrowFrame:
    """An iterator of frames as one frame, read once: the first chunk gives the columns and
    their types; each later chunk must have the same (checked as it is copied). An error
    the iterator raises fails the write, naming it."""
    made = failing_part_way(chunks, "the output's iterator", "fix the code that makes the chunks")
    first = next(made, None)
    if first is None:
        raise FrameError(
            "the output's iterator yielded no chunk: yield at least one frame (it may have no "
            "rows), so that the columns are known"
        )
    try:
        head = _chunk_to_arrow(first, 0)
    except BaseException:
        close_source(chunks)  # its clean-up runs now, not when the traceback is let go
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        start = 0
        try:
            for number, item in enumerate(itertools.chain([first], made)):
                frame = head if number == 0 else _chunk_to_arrow(item, start)
                _check_value_kinds(head, frame, start)
                for batch in frame.batches():
                    start += batch.num_rows
                    yield batch
        finally:
            close_source(chunks)

    return ArrowFrame(
        schema=head.schema, batches=batches, rows=None, replayable=False, text_as=head.text_as
    )


def _chunk_to_arrow(chunk: object, start: int) -> ArrowFrame:
    frame = _frame_to_arrow(chunk)
    if frame is None:
        raise FrameError(
            f"the output's iterator yielded {type(chunk).__name__} as the chunk from row "
            f"{start}, which this IO manager cannot store: yield {_FORMS} (not iterators)"
        )
    return frame


# How a column's values travel when a handler sends them as text (TextAs).
_VALUE_KINDS = {"jsonb": "JSON values (jsonb)", "numeric": "decimals (numeric)"}


def _check_value_kinds(head: ArrowFrame, chunk: ArrowFrame, start: int) -> None:
    """A later chunk's columns of Python objects hold what the first chunk's do: dicts and
    strings, say, are both sent as text, and would be stored as the first chunk's kind."""
    first_kinds, kinds = head.sent_as_text, chunk.sent_as_text
    for name in first_kinds.keys() | kinds.keys():
        first, given = first_kinds.get(name), kinds.get(name)
        if first == given or name not in head.schema.names or name not in chunk.schema.names:
            continue
        if pa.types.is_null(chunk.schema.field(name).type):
            continue  # NULLs fit any kind
        raise FrameError(
            f"column {name!r} holds {_value_kind(chunk, name)} in the chunk from row {start}, "
            f"but {_value_kind(head, name)} in the first chunk, which decides the column's "
            "type: give every chunk's column the same kind of values"
        )


def _value_kind(frame: ArrowFrame, name: str) -> str:
    arrow = frame.schema.field(name).type
    kind = frame.sent_as_text.get(name)
    if kind is not None:
        return _VALUE_KINDS[kind]
    if pa.types.is_null(arrow):
        return "no value"
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "strings"
    return f"values of Arrow type {arrow}"


def frame_annotation(annotation: Any) -> Any:
    """The frame type an input annotation asks for: ``X`` for ``X | None`` (``Optional[X]``)
    and for ``list[X]`` (a fan-in of dynamic outputs, each loaded as ``X``); any other
    annotation as it is."""
    if get_origin(annotation) in (Union, UnionType):
        others = [a for a in get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            return frame_annotation(others[0])
    if get_origin(annotation) is list and len(get_args(annotation)) == 1:
        return get_args(annotation)[0]
    return annotation


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
