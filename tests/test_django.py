"""Django (credflip.django) follows rotations: a real project served by waitress.

The project in ``tests/shopsite`` runs in its own process with CONN_MAX_AGE=60
and CONN_HEALTH_CHECKS, a writer alias and a reader alias behind a router.
Clients hit it over HTTP (keep-alive) from threads while credflip rotates.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import App, MyApp, make_app, make_my_app
from faults import wait_for
from following import Rotations, SessionMonitor, change_password_behind_the_back, initialise

from credflip.layout import Layout
from credflip.stores.sqlite import SqliteStore

pytest.importorskip("django")

TTL = 1.0
TESTS = Path(__file__).parent


class Site:
    """The shopsite project in a waitress process of its own."""

    def __init__(self, store: SqliteStore, layout: Layout, *, ttl: float, threads: int) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "shopsite.settings",
            "SHOP_ENV": layout.env,
            "CREDFLIP_STORE": store.url,
            "CREDFLIP_PREFIX": layout.prefix,
            "CREDFLIP_TTL": str(ttl),
        }
        self.log = store.path.with_suffix(".site.log")
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopsite.serve", str(threads)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"the site did not start: {self.log.read_text()}"
        self.port = int(line)

    def get(self, conn: http.client.HTTPConnection, worker: int) -> dict[str, Any]:
        conn.request("GET", f"/order?worker={worker}")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()
        return self.log.read_text()


@contextmanager
def site(store: SqliteStore, layout: Layout, *, ttl: float, threads: int = 4) -> Iterator[Site]:
    running = Site(store, layout, ttl=ttl, threads=threads)
    try:
        yield running
    finally:
        running.stop()


class Load:
    """Client threads with keep-alive HTTP connections, counting outcomes."""

    def __init__(self, running: Site, workers: int = 8) -> None:
        self.site = running
        self.ok = 0
        self.failed: list[str] = []
        self.users: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(workers)
        ]

    def _work(self, worker: int) -> None:
        conn = self.site.connection()
        while not self._stop.wait(0.005):
            try:
                body = self.site.get(conn, worker)
            except Exception as exc:
                conn.close()
                conn = self.site.connection()
                with self._lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.ok += 1
                    self.users[body["writer"]] += 1
                    self.users[body["reader"]] += 1
        conn.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.ok > 0 or self.failed, what="a first request")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@pytest.fixture(params=["postgresql", "mysql"])
def web_app(request: pytest.FixtureRequest) -> App | MyApp:
    """An app database on PostgreSQL 15 and on MariaDB."""
    if request.param == "postgresql":
        return make_app(request.getfixturevalue("clusters").get(15), rich=False)
    return make_my_app(request.getfixturevalue("mariadb"), rich=False)


def test_django_site_follows_rotations(web_app: App | MyApp, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("shop")
    initialise(web_app, store, layout)
    rotations = Rotations(web_app, store, layout, ttl=TTL)
    with site(store, layout, ttl=TTL) as running, SessionMonitor(web_app) as monitor:
        with Load(running) as load:
            rotations.run(3)
            rotations.wait_past_last_switch(monitor)
        assert not load.failed, load.failed[:3]
        assert set(load.users) == {web_app.user, web_app.green}, load.users
        rotations.assert_left_in_time(monitor)

        # Idle: the worker threads keep their (now current) connections open
        # between requests. A rotation without any request must not wait for
        # them: the watcher closes them once the color has changed.
        held = monitor.now()
        current = web_app.green  # three switches: blue -> green -> blue -> green
        assert held.get(current, 0) >= 2, held  # a writer and a reader connection at least
        rotations.run(1)
        assert monitor.now().get(current, 0) == 0
        rotations.assert_left_in_time(monitor)

        # And the next request, on a new connection, is the new color's.
        conn = running.connection()
        assert running.get(conn, 99)["writer"] == web_app.user
        conn.close()
    log = running.log.read_text()
    for password in (web_app.password,):
        assert password not in log


def test_django_logs_in_again_after_a_refused_login(web_app: App | MyApp, tmp_path: Path) -> None:
    """A connection lost after someone changed the password by hand: the health check
    reconnects, the cached password is refused, one refresh and the request succeeds."""
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("shop")
    initialise(web_app, store, layout)
    with site(store, layout, ttl=3600, threads=1) as running:
        conn = running.connection()
        assert running.get(conn, 1)["writer"] == web_app.user
        change_password_behind_the_back(web_app, store, layout)
        body = running.get(conn, 2)  # the same worker thread, whose connections died
        assert body["writer"] == body["reader"] == web_app.user
        conn.close()
    log = running.log.read_text()
    # One refused login (the writer's); the refresh served the reader's too.
    assert log.count("was refused; retrying once as blue") == 1, log
    assert web_app.password not in log
