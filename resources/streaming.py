"""A read handed to the caller's thread batch by batch: a ``pyarrow.RecordBatchReader`` over a
COPY still running, for tables larger than memory.

The COPY runs on the resource's loop (its own thread, as every read does); each decoded
piece waits in a one-place queue until the reader takes it, and the COPY waits meanwhile,
so memory holds about two pieces (a few MB) whatever the table's size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, NoReturn

import pyarrow as pa
from sqlalchemy.ext.asyncio import AsyncConnection

from .catalog import Column
from .errors import DatabaseError

__all__ = ["record_batch_reader"]

# How often a piece waiting for the reader checks that the reader is still there.
_WAIT_SECONDS = 0.2
_END = object()
_WAKE = object()


class ReaderClosed(Exception):
    """The reader was closed (or dropped) before the last piece: end the COPY."""


class _Pipe:
    """Pieces from the resource's loop to the reader's thread, one at a time, then how the
    read ended. Neither side waits for the other for good: a reader never read (its step
    failed, and a traceback holds it) must not keep a thread, or the process, alive."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.closed = threading.Event()  # the reader is gone: send no more
        self.ended = threading.Event()  # the read is over, as ``outcome`` says
        self.outcome: object = _END

    async def begin(self, schema: pa.Schema, columns: Mapping[str, Column]) -> None:
        await self.send((schema, columns))

    async def send(self, piece: Any) -> None:
        await asyncio.to_thread(self._put, piece)

    def _put(self, item: Any) -> None:
        # A send cancelled with the read (its resource disposed) ends here too.
        while not (self.closed.is_set() or self.ended.is_set()):
            try:
                self.queue.put(item, timeout=_WAIT_SECONDS)
                return
            except queue.Full:
                continue
        raise ReaderClosed

    def end(self, outcome: object) -> None:
        """The read is over: ``_END``, or the error the reader raises after the pieces."""
        self.outcome = outcome
        self.ended.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_WAKE)  # a reader waiting in take()

    def take(self) -> Any:
        while True:
            if self.ended.is_set():
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    item = self.outcome
            else:
                try:
                    item = self.queue.get(timeout=_WAIT_SECONDS)
                except queue.Empty:
                    continue
            if item is _WAKE:
                continue
            if isinstance(item, BaseException):
                raise item
            return item


def record_batch_reader(
    run: Callable[[Callable[[AsyncConnection], Awaitable[Any]]], Any],
    read: Callable[[AsyncConnection, _Pipe], Awaitable[Any]],
    convert: Callable[[pa.Table, Mapping[str, Column]], pa.Table],
    name_error: Callable[[BaseException], BaseException] = lambda exc: exc,
) -> pa.RecordBatchReader:
    """A reader of what ``read(conn, stream)`` sends, each piece through ``convert``.

    ``run`` runs the read on a pooled connection (the resource's ``run``), in a thread of its
    own, until the reader has taken every piece or is closed. An error before the first row
    (a missing table) raises from this call; a later one from the iteration that reaches it,
    through ``name_error``.
    """
    pipe = _Pipe()

    def work() -> None:
        outcome: object = _END
        try:
            run(lambda conn: read(conn, pipe))
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
            outcome = DatabaseError(
                "the read was cancelled: its resource was disposed (at the end of the step "
                "that loaded the reader, in Dagster): read a reader within its step"
            )
            outcome.__cause__ = exc
        except BaseException as exc:  # handed to the reader's thread
            outcome = exc
        pipe.end(outcome)

    threading.Thread(target=work, name="copy-upsert-stream", daemon=True).start()
    schema, columns = pipe.take()
    empty = convert(schema.empty_table(), columns)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while (piece := pipe.take()) is not _END:
                yield from convert(piece, columns).to_batches()
        except ReaderClosed:
            return
        except BaseException as exc:
            _raise_named(exc, name_error)
        finally:
            pipe.closed.set()

    stream = batches()
    # A reader dropped before its first batch never runs the generator's finally.
    weakref.finalize(stream, pipe.closed.set)
    return pa.RecordBatchReader.from_batches(empty.schema, stream)


def _raise_named(
    exc: BaseException, name_error: Callable[[BaseException], BaseException]
) -> NoReturn:
    named = name_error(exc)
    if named is exc:
        raise exc
    raise named from exc
