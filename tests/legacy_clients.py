"""Clients that never follow the pointer, run in the background of a drain test.

A :class:`LegacyJob` runs a session (one connection, a few requests) over
and over until stopped, counting what it served and the errors it met;
:class:`Legacy` is the simplest one: one short connection per request, with
one URL, every *period* seconds, as a Lambda that resolved at cold start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Self

from apps import App, MyApp

from credflip.urls import DbUrl


class LegacyJob:
    """Runs *session* over and over until stopped: one connection, a few requests."""

    def __init__(self, session: Callable[[LegacyJob], None], *, retry_after: float = 0.5) -> None:
        self.session = session
        #: Seconds to wait after a session that failed.
        self.retry_after = retry_after
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def served(self) -> None:
        self.ok += 1
        self._first.set()

    def pause(self, seconds: float) -> bool:
        """Wait; True when the job is being stopped."""
        return self._stop.wait(seconds)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.session(self)
            except Exception as exc:
                self.errors.append(str(exc).splitlines()[0])
                self._stop.wait(self.retry_after)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._first.wait(30), self.errors[:3]
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


class Legacy(LegacyJob):
    """A client that keeps using one URL, one short connection per request."""

    def __init__(self, app: App | MyApp, url: DbUrl, period: float) -> None:
        self.app, self.url, self.period = app, url, period
        super().__init__(self._request, retry_after=period)

    def _request(self, _job: LegacyJob) -> None:
        started = time.monotonic()
        self.app.execute(self.url, "SELECT 1")
        self.served()
        self.pause(max(0.0, self.period - (time.monotonic() - started)))
