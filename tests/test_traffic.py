"""The demo's traffic: a failed request is counted, a crashed worker is never lost."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from credflip.demo import Traffic
from credflip.errors import CredflipError


def test_a_worker_that_crashes_before_any_request_succeeds_fails_start_at_once() -> None:
    def broken(_worker: int) -> str:
        raise TypeError("broken request code")

    traffic = Traffic(broken, workers=2, pause=0.01)
    began = time.monotonic()
    with pytest.raises(CredflipError, match=r"worker \d crashed: TypeError: broken request code"):
        traffic.start()
    # At once: generous for a busy machine, and not the 30 s allowed for a first success.
    assert time.monotonic() - began < 15
    traffic.stop()  # the crash was reported once: stopping is quiet


def test_a_worker_that_crashes_later_fails_stop_with_its_error() -> None:
    started, crashed = threading.Event(), threading.Event()

    def request(_worker: int) -> str:
        if not started.is_set():
            return "blue"
        crashed.set()
        raise AttributeError("'NoneType' object has no attribute 'cursor'")

    traffic = Traffic(request, workers=1, pause=0.001)
    traffic.start()
    started.set()  # from now on the request code is broken
    assert crashed.wait(10)
    with pytest.raises(CredflipError, match="crashed: AttributeError: 'NoneType' object"):
        traffic.stop()
    assert traffic.ok > 0 and traffic.failed == 0  # the crash is not a failed request


def test_failed_requests_are_counted_and_never_a_crash() -> None:
    calls = itertools.count()
    enough = threading.Event()

    def flaky(_worker: int) -> str:
        n = next(calls)
        if n >= 40:
            enough.set()
        if n % 2:
            raise ConnectionRefusedError("the database is restarting")
        return "blue"

    traffic = Traffic(flaky, workers=2, pause=0.001)
    traffic.start()
    assert enough.wait(10)
    traffic.stop()
    assert traffic.ok > 0 and traffic.failed > 0
    assert set(traffic.errors) == {"ConnectionRefusedError"}
