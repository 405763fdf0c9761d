"""The client kinds of bench/rotation_under_load.py, each a request function for
:class:`credflip.demo.Traffic` (or, for the async app, :class:`AsyncTraffic`).

- ``lambda``: a fresh connection per request with the URL it is given;
- ``server``: a SQLAlchemy engine with a pool;
- ``django``: HTTP requests to bench/django_site.py in a process of its own;
- ``async``: tasks on an event loop that runs in a :class:`~credflip.demo.Worker`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from children import ChildDied, Server

from credflip.demo import CRASHES, Worker
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

HERE = Path(__file__).parent
#: Workers (threads, or tasks for async) per client kind.
WORKERS = 4
#: The kinds whose connections outlive a request: their old-color sessions are timed.
POOLED = ("server", "django", "async")
#: The server-like workers' pool, the same in every scenario.
POOL: dict[str, Any] = {
    "pool_size": WORKERS,
    "max_overflow": 0,
    "connect_args": {"application_name": "server"},
}
ASYNC_POOL: dict[str, Any] = {**POOL, "connect_args": {"application_name": "async"}}


def lambda_request(get_url: Any) -> Any:
    def request(worker: int) -> str:
        url = DbUrl.parse(get_url())
        with psycopg.connect(
            **connect_kwargs(url), connect_timeout=5, application_name="lambda"
        ) as conn:
            conn.execute("INSERT INTO orders (worker, kind) VALUES (%s, 'lambda')", (worker,))
        return url.user

    return request


def server_request(engine: sqlalchemy.Engine) -> Any:
    def request(worker: int) -> str:
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text("INSERT INTO orders (worker, kind) VALUES (:w, 'server')"),
                {"w": worker},
            )
            return str(conn.execute(sqlalchemy.text("SELECT session_user")).scalar())

    return request


def django_request(port: int, site: Callable[[], None]) -> Any:
    """HTTP GET on the Django site, one keep-alive connection per worker thread.

    A request that fails because the site's process died raises the site's
    error (:class:`ChildDied`, a crash for :class:`Traffic`), not a failure.
    """
    local = threading.local()

    def request(worker: int) -> str:
        conn = getattr(local, "conn", None) or http.client.HTTPConnection(
            "127.0.0.1", port, timeout=10
        )
        local.conn = conn
        try:
            conn.request("GET", f"/order?worker={worker}")
            response = conn.getresponse()
            body = response.read()
        except Exception:
            conn.close()
            local.conn = None
            site()
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return str(json.loads(body)["writer"])

    return request


@contextmanager
def django_site(mode: str, env: dict[str, str]) -> Iterator[tuple[int, Callable[[], None]]]:
    """bench/django_site.py in a process of its own; yields its port and a check that
    raises :class:`ChildDied` with its error once it exited."""
    site = Server(
        [sys.executable, str(HERE / "django_site.py"), mode],
        what=f"the Django site ({mode})",
        env={**os.environ, **env},
    )
    try:
        line = site.first_line(timeout=60)
        if not line.isdigit():
            raise ChildDied(f"{site.what} printed {line!r}, not its port")
        yield int(line), site.check
    finally:
        site.stop()


class AsyncApp:
    """An event loop in a thread of its own (a :class:`Worker`), with the app's async engine.

    :meth:`check` raises once the loop's thread died or ended before :meth:`close`.
    """

    def __init__(self, make_engine: Callable[[], Any]) -> None:
        self.engine = make_engine()  # at "import", before the loop runs
        self.loop = asyncio.new_event_loop()
        self.closing = False
        self.thread = Worker(self.loop.run_forever, name="the async app's event loop")
        self.thread.start()

    def check(self) -> None:
        """Raise when the loop's thread crashed, or stopped while the app still serves."""
        self.thread.check()
        if not self.closing and not self.thread.is_alive():
            raise ChildDied(f"{self.thread.name} stopped before the app was closed")

    async def order(self, worker: int) -> str:
        async with self.engine.begin() as conn:
            await conn.execute(
                sqlalchemy.text("INSERT INTO orders (worker, kind) VALUES (:w, 'async')"),
                {"w": worker},
            )
            return str((await conn.execute(sqlalchemy.text("SELECT session_user"))).scalar())

    def close(self) -> None:
        self.closing = True
        asyncio.run_coroutine_threadsafe(self.engine.dispose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


class AsyncTraffic:
    """Traffic's interface for an async app: its workers are tasks on the app's loop
    (no thread hands requests over, so latencies are the loop's own)."""

    def __init__(self, app: AsyncApp, *, workers: int, pause: float) -> None:
        self.app = app
        self.workers = workers
        self.pause = pause
        self.ok = 0
        self.failed = 0
        self.by_color: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = False
        self._future: Any = None

    async def _work(self, worker: int) -> None:
        while not self._stop:
            began = time.monotonic()
            try:
                user = await self.app.order(worker)
            except CRASHES:
                raise
            except Exception as exc:
                self.failed += 1
                self.errors[type(exc).__name__] += 1
                ok = False
            else:
                self.ok += 1
                self.by_color[user] += 1
                ok = True
            self.samples.append((began, time.monotonic() - began, ok))
            await asyncio.sleep(self.pause)

    async def _all(self) -> None:
        await asyncio.gather(*(self._work(n) for n in range(self.workers)))

    def start(self) -> None:
        self._future = asyncio.run_coroutine_threadsafe(self._all(), self.app.loop)
        deadline = time.monotonic() + 30
        while self.ok == 0:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the async app could not complete a request: {self.errors}")
            time.sleep(0.01)

    def check(self) -> None:
        """Raise the error a worker task died of (they only end on stop()), or the loop's."""
        self.app.check()
        if self._future is not None and self._future.done() and not self._stop:
            self._future.result()  # raises what ended it
            raise RuntimeError("the async app's workers ended before stop()")

    def stop(self) -> None:
        self._stop = True
        self._future.result(30)


@contextmanager
def async_app(make_engine: Callable[[], Any]) -> Iterator[AsyncApp]:
    app = AsyncApp(make_engine)
    try:
        yield app
    finally:
        app.close()
