"""What the client-integration tests share: rotations with their switch times, and
a monitor of the server's sessions per user, to check that every client kind
leaves the old color within one TTL + 2 s of each switch."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps import App, MyApp, my_hash
from client_threads import ClientThreads
from faults import wait_for

from credflip import commands
from credflip.layout import Layout
from credflip.rotation import Event, PhaseFinished, RotateOptions, RotationResult, rotate
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore

#: Slack after one TTL within which no session of the old color may remain.
SLACK = 2.0

#: A drain that no client holds lasts the cache wait (1.1 TTL) and one quiet window:
#: the product's promise, which ``bench/rotation_under_load.py`` prints (how long the
#: old password stays valid after each switch). The tests bound it generously, for a
#: busy 2-core machine: a client that kept the old color would hold the drain to its
#: timeout (20-30 s here) instead.
DRAIN_SLACK = 5.0


def assert_drain_unheld(result: RotationResult, ttl: float) -> None:
    """*result* finished, its drain held by no client (see :data:`DRAIN_SLACK`)."""
    assert result.finished and result.drain_seconds is not None, result
    assert result.drain_seconds < ttl * 1.1 + ttl + DRAIN_SLACK, result.drain_seconds


def initialised(app: App | MyApp, tmp_path: Path, env: str) -> tuple[SqliteStore, Layout]:
    """A SQLite store in *tmp_path* where *env* is initialised on *app*."""
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout(env)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    return store, layout


class SessionMonitor:
    """Samples the server's sessions of both colors' users every 100 ms."""

    def __init__(self, app: App | MyApp) -> None:
        self.app = app
        self.users = (app.user, app.green)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, conn: Any) -> dict[str, int]:
        if isinstance(self.app, App):
            rows = conn.execute(
                "SELECT usename, count(*) FROM pg_stat_activity WHERE usename = ANY(%s) GROUP BY 1",
                (list(self.users),),
            ).fetchall()
        else:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT USER, count(*) FROM information_schema.PROCESSLIST "
                    "WHERE USER IN (%s, %s) GROUP BY 1",
                    self.users,
                )
                rows = cur.fetchall()
        return {str(user): int(n) for user, n in rows}

    def _run(self) -> None:
        conn = self.app.su() if isinstance(self.app, App) else self.app.mariadb.root()
        with conn:
            while not self._stop.wait(0.1):
                self.samples.append((time.monotonic(), self._count(conn)))

    def now(self) -> dict[str, int]:
        """The latest sample (waiting for one taken from now on)."""
        start = time.monotonic()
        deadline = start + 10
        while time.monotonic() < deadline:
            if self.samples and self.samples[-1][0] > start:
                return self.samples[-1][1]
            time.sleep(0.05)
        raise AssertionError("the session monitor took no sample")

    def __enter__(self) -> SessionMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Rotations:
    """Back-to-back rotations at client TTL *ttl*, with the time of each switch."""

    app: App | MyApp
    store: Store
    layout: Layout
    ttl: float
    switches: list[tuple[float, str]] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    results: list[RotationResult] = field(default_factory=list)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PhaseFinished) and event.phase.value == "switch":
            # The old user: blue's is the app's own, green's carries _green.
            old = self.app.user if len(self.switches) % 2 == 0 else self.app.green
            self.switches.append((time.monotonic(), old))

    def run(self, times: int) -> list[RotationResult]:
        for _ in range(times):
            self.starts.append(time.monotonic())
            self.results.append(
                rotate(
                    self.store,
                    self.layout,
                    admin_url=self.app.admin_url,
                    options=RotateOptions(client_ttl=self.ttl, quiet=self.ttl, drain_timeout=30),
                    on_event=self._on_event,
                )
            )
        return self.results

    def assert_left_in_time(self, monitor: SessionMonitor) -> None:
        """Within one TTL + 2 s of each switch the old user has no session left, and
        none comes back until the next switch; the drains were as short as the
        rules allow."""
        assert len(self.switches) == len(self.results) > 0
        # Until the next rotation begins: its verify logs in as the old user.
        ends = [*self.starts[1:], monitor.samples[-1][0]]
        for (switched, old), end in zip(self.switches, ends, strict=True):
            window = [
                (at, counts.get(old, 0)) for at, counts in monitor.samples if switched <= at <= end
            ]
            busy = [at for at, n in window if n]
            quiet_from = max(busy, default=switched)
            assert any(at > quiet_from for at, _n in window), f"{old} never left: {window[-3:]}"
            assert quiet_from - switched <= self.ttl + SLACK, (
                f"{old} still had sessions {quiet_from - switched:.1f}s after the switch"
            )
        for result in self.results:
            assert_drain_unheld(result, self.ttl)

    def wait_past_last_switch(self, monitor: SessionMonitor) -> None:
        """Keep the clients going until the monitor has sampled past the last window."""
        last = self.switches[-1][0] + self.ttl + SLACK + 0.3
        wait_for(lambda: monitor.samples[-1][0] > last, what="samples after the last switch")


def change_password_behind_the_back(
    app: App | MyApp, store: Store, layout: Layout, *, end_sessions: bool = True
) -> None:
    """What a hand-made rotation does: a new password for the active (blue) user and
    its URLs stored; with *end_sessions* every session of the user is ended too, so
    clients must log in anew."""
    from psycopg import sql

    from credflip.engines.postgres import scram_verifier
    from credflip.layout import Color
    from credflip.rotation import new_password

    password = new_password()
    if isinstance(app, App):
        with app.su() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(app.user),
                    sql.Literal(scram_verifier(conn, app.user, password)),
                )
            )
            if end_sessions:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (app.user,),
                )
    else:
        app.mariadb.sql(
            "ALTER USER %s@'%%' IDENTIFIED BY PASSWORD %s", args=(app.user, my_hash(password))
        )
        if end_sessions:
            for (pid,) in app.mariadb.sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", args=(app.user,)
            ):
                app.mariadb.sql(f"KILL {int(pid)}")
    url = app.url.with_credentials(app.user, password).secret
    for role in ("writer", "reader"):
        store.put(layout.url(Color.BLUE, role), url)  # type: ignore[arg-type]


def connection(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def get(port: int, worker: int, conn: http.client.HTTPConnection | None = None) -> dict[str, Any]:
    """``GET /order?worker=N`` on a test app (on *conn*, kept alive, if given)."""
    own = conn is None
    conn = connection(port) if conn is None else conn
    try:
        conn.request("GET", f"/order?worker={worker}")
        response = conn.getresponse()
        body = response.read()
    finally:
        if own:
            conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


class HttpLoad(ClientThreads):
    """Client threads with keep-alive HTTP connections to a test app, counting
    outcomes and the login users that served them."""

    def __init__(self, port: int, workers: int = 8) -> None:
        self.port = port
        super().__init__(workers)

    def work(self, worker: int) -> None:
        conn = connection(self.port)
        while self.running(0.005):
            try:
                body = get(self.port, worker, conn)
            except Exception as exc:
                conn.close()
                conn = connection(self.port)
                self.failure(f"{type(exc).__name__}: {exc}")
            else:
                self.served(*(body[alias] for alias in ("writer", "reader") if alias in body))
        conn.close()
