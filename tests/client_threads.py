"""Client threads that run until stopped, counting what they got: the base of the
tests' load generators (HTTP clients of a test app, clients through PgBouncer)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Self

from faults import wait_for


class ClientThreads:
    """*workers* threads running :meth:`work` until the ``with`` block ends.

    ``ok`` counts the requests served, ``users`` the login users that served
    them, ``failed`` keeps every failure's message. Entering waits for a first
    outcome, so the load is on when the block starts.
    """

    #: How long leaving waits for each thread (None: as long as it takes).
    join_timeout: float | None = None

    def __init__(self, workers: int) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self.users: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.work, args=(n,), daemon=True) for n in range(workers)
        ]

    def work(self, worker: int) -> None:
        """One thread's loop: ``while self.running(pause)``, then :meth:`served` or
        :meth:`failure` per request."""
        raise NotImplementedError

    def running(self, pause: float) -> bool:
        """Wait *pause* seconds; False once the block ended."""
        return not self._stop.wait(pause)

    def served(self, *users: Any) -> None:
        """One request served, by login *users* (one per connection it used)."""
        with self._lock:
            self.ok += 1
            self.users.update(str(u) for u in users)

    def failure(self, message: str) -> None:
        """One request failed with *message*."""
        with self._lock:
            self.failed.append(message)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.ok > 0 or bool(self.failed), what="a first request")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.join_timeout)
