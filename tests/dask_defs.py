"""The example pipeline's jobs on dagster-dask's executor, for test_dask.py, and what the test
asks each dask worker about itself. The workers import this module (the run's
ReconstructableJob points at it) and run every step in one of their long-lived processes.
The database comes from DATABASE_URL."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from typing import Any

import asyncpg
import distributed.utils
from dagster import AssetSelection, Definitions, JobDefinition, define_asset_job
from dagster_dask import dask_executor
from sqlalchemy.ext.asyncio import AsyncEngine

import resources.resource
from pipelines.definitions import defs as example

defs = Definitions(
    assets=list(example.assets or []),
    resources=dict(example.resources or {}),
    jobs=[
        define_asset_job(
            "dimensions", selection=AssetSelection.groups("dimensions"), executor_def=dask_executor
        ),
        define_asset_job(
            "flights_monthly",
            selection=AssetSelection.groups("flights"),
            executor_def=dask_executor,
        ),
    ],
)


def dimensions() -> JobDefinition:
    return defs.resolve_job_def("dimensions")


def flights_monthly() -> JobDefinition:
    return defs.resolve_job_def("flights_monthly")


# In a worker process: its threads and open event loops before the first step.
_BASELINE: dict[str, set[int]] = {}


def _open_loops() -> list[asyncio.AbstractEventLoop]:
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()
    ]


def record_baseline() -> int:
    """Run in each worker (``Client.run``) before the first step: note its threads and
    event loops, and turn the garbage collector off until ``left_behind``, so that what a
    step's teardown fails to close stays open (and visible) rather than being closed at
    some later collection. Returns the worker's pid."""
    # Dask starts its offload thread ((de)serializes large messages) on first use: now.
    distributed.utils._offload_executor.submit(int).result()
    gc.collect()
    _BASELINE["threads"] = {t.ident for t in threading.enumerate() if t.ident is not None}
    _BASELINE["loops"] = {id(loop) for loop in _open_loops()}
    gc.disable()
    return os.getpid()


def left_behind() -> dict[str, Any]:
    """Run in each worker after the runs: what the package's steps left open in this
    process, reachable or not (asyncpg connections, pools holding connections, event loops,
    threads, shared runtimes); then, after a collection, the AsyncEngines still reachable."""
    objects = gc.get_objects()
    found: dict[str, Any] = {
        "pid": os.getpid(),
        "open connections": [
            repr(o)
            for o in objects
            if isinstance(o, asyncpg.connection.Connection) and not o.is_closed()
        ],
        "pools holding connections": [
            repr(o)
            for o in objects
            if isinstance(o, AsyncEngine)
            and getattr(o.pool, "checkedin", int)() + getattr(o.pool, "checkedout", int)()
        ],
        "event loops": [repr(o) for o in _open_loops() if id(o) not in _BASELINE["loops"]],
        "threads": [t.name for t in threading.enumerate() if t.ident not in _BASELINE["threads"]],
        "runtimes": len(resources.resource._RUNTIMES),
    }
    del objects
    gc.enable()
    gc.collect()
    found["engines"] = [repr(o) for o in gc.get_objects() if isinstance(o, AsyncEngine)]
    return found
