"""What the fault tests run alongside a rotation: an invariant checker and clients.

The invariant: *the color the pointer names has URLs that connect*. While a
server restarts or is frozen nothing connects at all; that is the fault, not a
broken invariant. So the checker (and the clients) count a refused login as a
violation and anything else (refused connection, timeout) as the server
being away.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from credflip.engines import engine_class
from credflip.errors import CredflipError, is_auth_failure
from credflip.layout import Layout
from credflip.resolver import Endpoints, Resolver
from credflip.retry import call_with_refresh
from credflip.stores import open_store
from credflip.stores.base import Store
from credflip.urls import DbUrl


def reopen(store: Store) -> Store:
    """A second handle on the same store, for another thread."""
    return open_store(store.url)


#: How long a checker's or client's login may take: generous, as a busy machine can
#: hold a connection (fork, SCRAM) for seconds; a frozen server is waited out as long.
LOGIN_TIMEOUT = 10


def _login(url: str) -> None:
    parsed = DbUrl.parse(url)
    conn = engine_class(parsed.scheme).client_connect(parsed, timeout=LOGIN_TIMEOUT)
    try:
        conn.cursor().execute("SELECT 1")
    finally:
        conn.close()


class Invariant:
    """Checks the invariant every 50 ms, reading the pointer afresh each time."""

    def __init__(self, store: Store, layout: Layout) -> None:
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
            except CredflipError as exc:
                self.violations.append(f"store: {exc}")
                continue
            for url in (endpoints.writer_url, endpoints.reader_url):
                try:
                    _login(url)
                except Exception as exc:
                    if is_auth_failure(exc):
                        self.violations.append(f"{endpoints.color}: {exc}")
                    else:
                        self.away += 1
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
        assert not self.violations, self.violations[:3]
        assert self.checks > 0, "the checker never got a login through"


class Clients:
    """Lambda-like clients (resolve per request, fresh connection, one retry on a
    refused login) and a pooled SQLAlchemy client, counting refused logins apart."""

    def __init__(self, store: Store, layout: Layout, *, ttl: float = 0.3) -> None:
        from credflip.sqlalchemy import create_engine

        self.store = reopen(store)
        self.resolver = Resolver(store=self.store, prefix=layout.prefix, ttl=ttl)
        self.env = layout.env
        self.engine = create_engine(
            self.env, resolver=self.resolver, pool_size=2, max_overflow=0, pool_pre_ping=True
        )
        self.ok: Counter[str] = Counter()
        self.away: Counter[str] = Counter()
        self.refused: list[str] = []
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
            try:
                request()
            except Exception as exc:
                with self._lock:
                    if is_auth_failure(exc):
                        self.refused.append(f"{kind}: {exc}")
                    else:
                        self.away[kind] += 1
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
        assert self.ok["lambda"] and self.ok["pool"], dict(self.ok)


def wait_for(
    predicate: Any, timeout: float = 30.0, what: str = "condition", interval: float = 0.02
) -> None:
    """Poll *predicate* (bounded): the tests' only way to wait for another thread."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g}s"
        time.sleep(interval)


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
