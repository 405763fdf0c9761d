"""What the fault tests run alongside a rotation: an invariant checker and clients.

The invariant: *the color the pointer names has URLs that connect*. While a
server restarts or is frozen nothing connects at all; that is the fault, not a
broken invariant. So a test that takes a server down says so (:class:`Outages`),
and the checker (and the clients) let a login fail only when it was tried on
that server while it was down, and never by a refusal of the login itself. A
test that injects no database fault tolerates no failed login at all: a pointer
naming a wrong host, port or database fails it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from credflip.engines import engine_class
from credflip.errors import is_auth_failure
from credflip.layout import Layout
from credflip.resolver import Endpoints, Resolver
from credflip.retry import call_with_refresh
from credflip.state import State, read_lock
from credflip.stores import open_store
from credflip.stores.base import Store
from credflip.urls import DbUrl


def reopen(store: Store) -> Store:
    """A second handle on the same store, for another thread."""
    return open_store(store.url)


#: How long a checker's or client's login may take: generous, as a busy machine can
#: hold a connection (fork, SCRAM) for seconds; a frozen server is waited out as long.
LOGIN_TIMEOUT = 10


class Outages:
    """When a test says a server is down: its port, from before the fault until the server
    answers again. The only failed logins a checker tolerates are ones tried on that
    port in that time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: list[tuple[int | None, float, float | None]] = []

    def begin(self, port: int | None) -> None:
        """Call before the fault starts."""
        with self._lock:
            self._windows.append((port, time.monotonic(), None))

    def end(self, port: int | None) -> None:
        """Call once the server answers again."""
        with self._lock:
            now = time.monotonic()
            self._windows = [
                (p, s, now if p == port and e is None else e) for p, s, e in self._windows
            ]

    @contextlib.contextmanager
    def during(self, port: int | None) -> Iterator[None]:
        self.begin(port)
        try:
            yield
        finally:
            self.end(port)

    def covers(self, port: int | None, started: float, ended: float) -> bool:
        """Whether a request on *port* from *started* to *ended* overlapped a declared outage."""
        with self._lock:
            return any(
                p == port and s <= ended and (e is None or started <= e)
                for p, s, e in self._windows
            )


def _port(url: str) -> int | None:
    return DbUrl.parse(url).port


def _login(url: str) -> None:
    parsed = DbUrl.parse(url)
    conn = engine_class(parsed.scheme).client_connect(parsed, timeout=LOGIN_TIMEOUT)
    try:
        conn.cursor().execute("SELECT 1")
    finally:
        conn.close()


class Invariant:
    """Checks the invariant every 50 ms, reading the pointer afresh each time.

    A failed login is a violation unless it was not refused as such and *outages*
    covers it (no outages: every failure is one)."""

    def __init__(self, store: Store, layout: Layout, outages: Outages | None = None) -> None:
        self.outages = outages or Outages()
        self.store = reopen(store)
        self.resolver = Resolver(store=self.store, prefix=layout.prefix, ttl=0)
        self.env = layout.env
        self.checks = 0
        self.away = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                endpoints = self.resolver.refresh(self.env)
            except Exception as exc:  # no store fault a test injects is seen by reads
                self.violations.append(f"store: {type(exc).__name__}: {exc}")
                continue
            for role, url in (("writer", endpoints.writer_url), ("reader", endpoints.reader_url)):
                started = time.monotonic()
                try:
                    _login(url)
                except Exception as exc:
                    ended = time.monotonic()
                    if not is_auth_failure(exc) and self.outages.covers(_port(url), started, ended):
                        self.away += 1
                    else:
                        self.violations.append(f"{endpoints.color} {role}: {exc}")
                else:
                    self.checks += 1

    def __enter__(self) -> Invariant:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()

    def assert_held(self) -> None:
        assert not self.violations, (len(self.violations), self.violations[:3])
        assert self.checks > 0, "the checker never got a login through"


class Clients:
    """Lambda-like clients (resolve per request, fresh connection, one retry on a
    refused login) and a pooled SQLAlchemy client, all on the writer: a refused login
    is counted apart, any other failure is one unless *outages* covers it on the port
    of the writer URL when the clients start (no outages: every failure is one).

    Their TTL leaves one drain sample (0.2 s) of margin under the rotations' client TTL
    (0.3 s in these tests): a client that resolved just before the switch is done with
    the old color before the drain's cache wait ends, even on a busy machine, and is
    never taken for a legacy client."""

    def __init__(
        self, store: Store, layout: Layout, *, ttl: float = 0.1, outages: Outages | None = None
    ) -> None:
        from credflip.sqlalchemy import create_engine

        self.outages = outages or Outages()
        self.store = reopen(store)
        self.resolver = Resolver(store=self.store, prefix=layout.prefix, ttl=ttl)
        self.env = layout.env
        self.port = _port(self.resolver.resolve(self.env).writer_url)
        self.engine = create_engine(
            self.env, resolver=self.resolver, pool_size=2, max_overflow=0, pool_pre_ping=True
        )
        self.ok: Counter[str] = Counter()
        self.away: Counter[str] = Counter()
        self.refused: list[str] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True)
            for kind in ("lambda", "lambda", "pool", "pool")
        ]

    def _lambda(self) -> None:
        def work(endpoints: Endpoints) -> None:
            _login(endpoints.writer_url)

        call_with_refresh(self.env, work, resolver=self.resolver)

    def _pool(self) -> None:
        import sqlalchemy

        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))

    def _loop(self, kind: str) -> None:
        request = self._lambda if kind == "lambda" else self._pool
        while not self._stop.wait(0.02):
            started = time.monotonic()
            try:
                request()
            except Exception as exc:
                away = self.outages.covers(self.port, started, time.monotonic())
                with self._lock:
                    if is_auth_failure(exc):
                        self.refused.append(f"{kind}: {exc}")
                    elif away:
                        self.away[kind] += 1
                    else:
                        self.failed.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.ok[kind] += 1

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.engine.dispose()
        self.store.close()

    def served(self) -> int:
        with self._lock:
            return sum(self.ok.values())

    def serve_more(self, n: int = 5, what: str = "clients serving") -> None:
        """Wait (bounded) until *n* more requests than now succeeded."""
        start = self.served()
        wait_for(lambda: self.served() > start + n, what=what)

    def assert_fine(self) -> None:
        assert not self.refused, self.refused[:3]
        assert not self.failed, (len(self.failed), self.failed[:3])
        assert self.ok["lambda"] and self.ok["pool"], dict(self.ok)


def wait_for(
    predicate: Any, timeout: float = 30.0, what: str = "condition", interval: float = 0.02
) -> None:
    """Poll *predicate* (bounded): the tests' only way to wait for another thread."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g}s"
        time.sleep(interval)


# -- killing a run --------------------------------------------------------------


class Ended(NamedTuple):
    """How a run started by :func:`kill_after` ended."""

    code: int | None  #: its exit code, None when it was killed
    err: str  #: its stderr
    begun: float  #: seconds from its start until *begun* held
    ran: float  #: seconds from its start to its end


def kill_after(
    args: list[str],
    delay: float,
    env: dict[str, str],
    *,
    begun: Callable[[int], bool] | None = None,
) -> Ended:
    """Run ``credflip ARGS`` and SIGKILL it *delay* seconds after it started, or after
    ``begun(pid)`` first held (e.g. :func:`holds_lock`: starting the interpreter, seconds
    on a busy machine, is no part of what a test means to interrupt)."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "credflip", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        while begun is not None and proc.poll() is None and not begun(proc.pid):
            assert time.monotonic() - started < 120, f"{args[0]} did not begin within 120 s"
            time.sleep(0.02)
        began = time.monotonic() - started
        try:
            code: int | None = proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            code = None
        ran = time.monotonic() - started
        err.seek(0)
        return Ended(code, err.read(), began, ran)


def holds_lock(store: Store, layout: Layout) -> Callable[[int], bool]:
    """Whether the process *pid* holds the env's lock: a rotate or rollback has begun."""

    def held(pid: int) -> bool:
        lock = read_lock(store, layout)
        return lock is not None and lock.pid == pid

    return held


def nothing_to_roll_back(state: State) -> bool:
    """What rollback refuses (exit 1): no rotation under way, and none finished since the
    last rollback."""
    return state.current is None and (state.last is None or state.last.result != "done")


# -- freezing a server --------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """*pid* and its children (a PostgreSQL postmaster and its backends)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return [pid, *children]


class Frozen:
    """SIGSTOP a server's processes (the database stops answering without closing any
    socket); SIGCONT them on :meth:`thaw` or at exit."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.frozen = False

    def freeze(self) -> Frozen:
        self.pids = process_tree(self.pids[0])
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGSTOP)
        self.frozen = True
        return self

    def thaw(self) -> None:
        if self.frozen:
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self.frozen = False

    def __enter__(self) -> Frozen:
        return self.freeze()

    def __exit__(self, *_exc: object) -> None:
        self.thaw()


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
