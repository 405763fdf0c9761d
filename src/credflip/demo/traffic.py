"""Live traffic for the demo, the tests and the benchmarks: worker threads in a loop.

Each worker calls a request function over and over and counts what happened;
:func:`resolve_and_insert` is the request a Lambda makes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from ..engines import engine_class
from ..errors import ConfigurationError
from ..resolver import Resolver
from ..urls import DbUrl

__all__ = ["Traffic", "resolve_and_insert"]


class Traffic:
    """Worker threads that each run ``request(worker)`` in a loop and count outcomes.

    ``request`` returns the color it used; any exception counts as a failed
    request. With *record*, every request's start, duration and outcome is
    kept for benchmarks.
    """

    def __init__(
        self,
        request: Callable[[int], str],
        *,
        workers: int,
        pause: float = 0.02,
        record: bool = False,
    ) -> None:
        self.request = request
        self.workers = workers
        self.pause = pause
        self.record = record
        self.ok = 0
        self.failed = 0
        self.by_color: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first_ok = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers and wait until one request succeeded."""
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._first_ok.wait(30):
            raise ConfigurationError(
                f"demo traffic could not complete a request: {self.errors.most_common(1)}"
            )

    def stop(self) -> None:
        """Stop and join the workers."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def snapshot(self) -> tuple[int, int]:
        """``(ok, failed)`` so far."""
        with self._lock:
            return self.ok, self.failed

    def _work(self, worker: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                color = self.request(worker)
            except Exception as exc:
                with self._lock:
                    self.failed += 1
                    self.errors[type(exc).__name__] += 1
                    if self.record:
                        self.samples.append((started, time.monotonic() - started, False))
            else:
                with self._lock:
                    self.ok += 1
                    self.by_color[color] += 1
                    if self.record:
                        self.samples.append((started, time.monotonic() - started, True))
                self._first_ok.set()
            self._stop.wait(self.pause)


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
