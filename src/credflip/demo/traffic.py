"""Live traffic for the demo, the tests and the benchmarks: worker threads in a loop.

Each worker calls a request function over and over and counts what happened;
:func:`resolve_and_insert` is the request a Lambda makes. A request that fails
is data (counted by error type); a worker that dies of anything else, a bug
in the request code or in the counting, is a crash: its owner hears of it
(:meth:`Traffic.check`, :meth:`Traffic.stop`) instead of losing the worker.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable

from ..engines import engine_class
from ..errors import ConfigurationError, CredflipError
from ..resolver import Resolver
from ..urls import DbUrl

__all__ = ["CRASHES", "Traffic", "Worker", "WorkerCrashed", "resolve_and_insert"]

#: Errors that mean the request code is broken, not that a request failed.
CRASHES: tuple[type[BaseException], ...] = (
    AssertionError,
    AttributeError,
    ImportError,
    NameError,
    TypeError,
)


class WorkerCrashed(CredflipError):
    """A worker thread died of an error that is not a failed request."""


class Worker(threading.Thread):
    """A daemon thread that keeps the error it died of, for its owner to raise.

    *on_crash* runs in the thread, right after it died of an error.
    """

    def __init__(
        self,
        target: Callable[[], object],
        *,
        name: str,
        on_crash: Callable[[Worker], None] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._call = target
        self._on_crash = on_crash
        self.error: BaseException | None = None
        self._reported = False

    def run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # kept for check(), which raises it in the owner
            self.error = exc
            if self._on_crash is not None:
                self._on_crash(self)

    def check(self) -> None:
        """Raise :class:`WorkerCrashed`, chained to the thread's error, once it died of one.

        It is raised once: after that the owner knows, and stopping stays quiet.
        """
        if self.error is None or self._reported:
            return
        self._reported = True
        what = type(self.error).__name__ + (f": {self.error}" if str(self.error) else "")
        raise WorkerCrashed(f"{self.name} crashed: {what}") from self.error


class Traffic:
    """Worker threads that each run ``request(worker)`` in a loop and count outcomes.

    ``request`` returns the color it used; an exception counts as a failed
    request, unless it is one of *crashes*: then the worker crashes, the
    others stop, and :meth:`start`, :meth:`check` or :meth:`stop` raises
    :class:`WorkerCrashed` with its error. With *record*, every request's
    start, duration and outcome is kept for benchmarks.
    """

    def __init__(
        self,
        request: Callable[[int], str],
        *,
        workers: int,
        pause: float = 0.02,
        record: bool = False,
        crashes: tuple[type[BaseException], ...] = CRASHES,
    ) -> None:
        self.request = request
        self.workers = workers
        self.pause = pause
        self.record = record
        self.crashes = crashes
        self.ok = 0
        self.failed = 0
        self.by_color: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._settled = threading.Event()  # a first request succeeded, or a worker crashed
        self._threads: list[Worker] = []
        self._crashed: Worker | None = None

    def start(self) -> None:
        """Start the workers and wait until one request succeeded."""
        for n in range(self.workers):
            thread = Worker(
                functools.partial(self._work, n),
                name=f"traffic worker {n}",
                on_crash=self._on_crash,
            )
            thread.start()
            self._threads.append(thread)
        settled = self._settled.wait(30)
        self.check()
        if not settled:
            raise ConfigurationError(
                f"demo traffic could not complete a request: {self.errors.most_common(1)}"
            )

    def check(self) -> None:
        """Raise :class:`WorkerCrashed` (once) when a worker crashed: cheap, call it often."""
        if self._crashed is not None:
            self._crashed.check()

    def stop(self) -> None:
        """Stop and join the workers; raise :class:`WorkerCrashed` if one crashed unseen."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.check()

    def snapshot(self) -> tuple[int, int]:
        """``(ok, failed)`` so far."""
        with self._lock:
            return self.ok, self.failed

    def _on_crash(self, worker: Worker) -> None:
        with self._lock:
            self._crashed = self._crashed or worker  # the first crash is the cause
        self._stop.set()
        self._settled.set()

    def _work(self, worker: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                color = self.request(worker)
            except self.crashes:
                raise
            except Exception as exc:
                self._count(started, error=type(exc).__name__)
            else:
                self._count(started, color=color)
                self._settled.set()
            self._stop.wait(self.pause)

    def _count(self, started: float, *, color: str = "", error: str = "") -> None:
        with self._lock:
            if error:
                self.failed += 1
                self.errors[error] += 1
            else:
                self.ok += 1
                self.by_color[color] += 1
            if self.record:
                self.samples.append((started, time.monotonic() - started, not error))


def resolve_and_insert(resolver: Resolver, env: str) -> Callable[[int], str]:
    """A request as a Lambda makes it: resolve, connect, insert one row, disconnect.

    A fresh connection per request is the harshest client for a rotation:
    every request authenticates with whatever URL the resolver returns.
    """

    def request(worker: int) -> str:
        endpoints = resolver.resolve(env)
        url = DbUrl.parse(endpoints.writer_url)
        conn = engine_class(url.scheme).client_connect(url)
        try:
            cur = conn.cursor()
            cur.execute(
                "INSERT INTO orders (worker, color) VALUES (%s, %s)",
                (worker, endpoints.color.value),
            )
            conn.commit()
        finally:
            conn.close()
        return endpoints.color.value

    return request
