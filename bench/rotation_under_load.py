"""Rotations under load: credflip vs a naive in-place rotation vs the original design.

One command, one private PostgreSQL that enforces passwords, three scenarios
under the same load, side by side:

  a) credflip: back-to-back rotations with client TTL 2 s, four client kinds
     side by side: Lambda-like workers resolve per request; server-like
     workers use the SQLAlchemy integration with a pool; a Django site
     (credflip.django, CONN_MAX_AGE=60, waitress) takes HTTP requests; an
     asyncio app runs tasks on create_async_engine (psycopg async);
  b) naive: one user, ``ALTER ROLE ... PASSWORD`` then the stored URL is
     updated, as often as (a) rotates, same clients;
  c) original design: clients resolve once at start and never again (Django
     with the password in its settings), while
     credflip rotates: the drain waits for them, nothing fails, and the old
     password stays valid.

Prints a table and writes ``bench/out/rotation_under_load.png`` (sessions per
user over time, switches, failures; one panel per scenario).

    python bench/rotation_under_load.py [--rotations 10] [--ttl 2]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from children import ChildDied, Server
from psycopg import sql

from credflip import commands
from credflip.demo import CRASHES, Traffic, Worker
from credflip.demo.cluster import EmbeddedPostgres
from credflip.engines.postgres import scram_verifier
from credflip.errors import DrainTimeout
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import (
    Event,
    PhaseFinished,
    RotateOptions,
    new_password,
    rotate,
)
from credflip.sqlalchemy import create_engine
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

OUT = Path(__file__).parent / "out"
HERE = Path(__file__).parent
#: Workers (threads, or tasks for async) per client kind.
WORKERS = 4
KINDS = ("lambda", "server", "django", "async")
#: The kinds whose connections outlive a request: their old-color sessions are timed.
POOLED = ("server", "django", "async")
#: The server-like workers' pool, the same in every scenario.
POOL: dict[str, Any] = {
    "pool_size": WORKERS,
    "max_overflow": 0,
    "connect_args": {"application_name": "server"},
}
ASYNC_POOL: dict[str, Any] = {**POOL, "connect_args": {"application_name": "async"}}


@dataclass
class Scenario:
    name: str
    traffic: dict[str, Traffic | AsyncTraffic] = field(default_factory=dict)
    switches: list[float] = field(default_factory=list)
    retires: list[float] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    rows: int = 0
    samples: list[tuple[float, dict[tuple[str, str], int]]] = field(default_factory=list)
    users: tuple[str, ...] = ()
    began: float = 0.0
    ended: float = 0.0
    note: str = ""
    #: Whatever else must stay alive (the Django site, the monitor): each raises if not.
    checks: list[Callable[[], None]] = field(default_factory=list)

    def check(self) -> None:
        """Raise when a client worker crashed or a process or thread it needs died."""
        for traffic in self.traffic.values():
            traffic.check()
        for check in self.checks:
            check()

    def on_event(self, event: Event) -> None:
        """Record when the pointer moved and when the old user was retired; and stop
        the rotation (within a drain sample) when something it measures died."""
        self.check()
        if isinstance(event, PhaseFinished) and event.phase.value == "switch":
            self.switches.append(time.monotonic())
        if isinstance(event, PhaseFinished) and event.phase.value == "retire":
            self.retires.append(time.monotonic())


class Monitor:
    """Samples pg_stat_activity every 100 ms: sessions per (user, application)."""

    def __init__(self, pg: EmbeddedPostgres, database: str, scenario: Scenario) -> None:
        self.url = pg.url("postgres", pg.superuser_password, database)
        self.scenario = scenario
        self.stop = threading.Event()
        self.thread = Worker(self.run, name="the session monitor")
        scenario.checks.append(self.thread.check)

    def run(self) -> None:
        with psycopg.connect(**connect_kwargs(self.url), autocommit=True) as conn:
            while not self.stop.wait(0.1):
                rows = conn.execute(
                    "SELECT usename, application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND usename IS NOT NULL GROUP BY 1, 2"
                ).fetchall()
                self.scenario.samples.append(
                    (time.monotonic(), {(str(u), str(a)): int(n) for u, a, n in rows})
                )

    def __enter__(self) -> Monitor:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def make_app(pg: EmbeddedPostgres, name: str) -> tuple[DbUrl, DbUrl]:
    """A database owned by its single user; returns (admin URL, app URL)."""
    password = new_password()
    pg.create_role(name, password)
    with psycopg.connect(**connect_kwargs(pg.superuser_url), autocommit=True) as su:
        su.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
    # The drain's login counter, as on RDS/Aurora (the server preloads it).
    su_url = pg.url("postgres", pg.superuser_password, name)
    with psycopg.connect(**connect_kwargs(su_url), autocommit=True) as su:
        su.execute("CREATE EXTENSION pg_stat_statements")
    app_url = pg.url(name, password, name)
    with psycopg.connect(**connect_kwargs(app_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, worker int, kind text)")
    return pg.url("credflip_admin", ADMIN_PW, name), app_url


ADMIN_PW = new_password()


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


#: Seconds of steady load before the first and after the last rotation, so that
#: "outside rotations" latencies are measured on the same load.
SETTLE = 5.0


def start(scenario: Scenario, requests: dict[str, Any]) -> None:
    for kind, request in requests.items():
        pause = 0.02 if kind == "lambda" else 0.01
        scenario.traffic[kind] = (
            AsyncTraffic(request, workers=WORKERS, pause=pause)
            if isinstance(request, AsyncApp)
            else Traffic(
                request, workers=WORKERS, pause=pause, record=True, crashes=(*CRASHES, ChildDied)
            )
        )
    scenario.began = time.monotonic()
    for traffic in scenario.traffic.values():
        traffic.start()
    threading.Event().wait(SETTLE)
    scenario.check()


def finish(scenario: Scenario, pg: EmbeddedPostgres, database: str) -> None:
    threading.Event().wait(SETTLE)
    scenario.check()
    for traffic in scenario.traffic.values():
        traffic.stop()
    scenario.ended = time.monotonic()
    url = pg.url("postgres", pg.superuser_password, database)
    with psycopg.connect(**connect_kwargs(url)) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    scenario.rows = int(row[0]) if row else 0


def site_env(store: SqliteStore, layout: Layout, ttl: float) -> dict[str, str]:
    return {
        "DB_ENV": layout.env,
        "CREDFLIP_STORE": store.url,
        "CREDFLIP_PREFIX": layout.prefix,
        "CREDFLIP_TTL": str(ttl),
    }


def following_clients(
    scenario: Scenario,
    stack: ExitStack,
    store: SqliteStore,
    layout: Layout,
    resolver: Resolver,
    ttl: float,
) -> dict[str, Any]:
    """The four client kinds, each following the store through credflip."""
    from credflip.sqlalchemy import create_async_engine

    engine = create_engine(layout.env, resolver=resolver, **POOL)
    stack.callback(engine.dispose)
    port, site = stack.enter_context(django_site("follow", site_env(store, layout, ttl)))
    scenario.checks.append(site)
    app = stack.enter_context(
        async_app(lambda: create_async_engine(layout.env, resolver=resolver, **ASYNC_POOL))
    )
    return {
        "lambda": lambda_request(lambda: resolver.resolve(layout.env).writer_url),
        "server": server_request(engine),
        "django": django_request(port, site),
        "async": app,
    }


def run_credflip(pg: EmbeddedPostgres, rotations: int, ttl: float) -> Scenario:
    scenario = Scenario("a) credflip")
    admin, app = make_app(pg, "bench_credflip")
    scenario.users = (app.user, f"{app.user}_green")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        store = SqliteStore(Path(tmp) / "params.db")
        stack.callback(store.close)
        layout = Layout("bench")
        commands.init(store, layout, admin_url=admin, writer_url=app)
        resolver = Resolver(store=store, prefix=layout.prefix, ttl=ttl)
        requests = following_clients(scenario, stack, store, layout, resolver, ttl)
        with Monitor(pg, app.database, scenario):
            start(scenario, requests)
            options = RotateOptions(client_ttl=ttl, quiet=ttl, drain_timeout=60)
            for _ in range(rotations):
                begin = time.monotonic()
                rotate(store, layout, admin_url=admin, options=options, on_event=scenario.on_event)
                scenario.windows.append((begin, time.monotonic()))
            finish(scenario, pg, app.database)
    return scenario


def run_naive(pg: EmbeddedPostgres, rotations: int, ttl: float, period: float) -> Scenario:
    scenario = Scenario("b) naive in place")
    _admin, app = make_app(pg, "bench_naive")
    scenario.users = (app.user,)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        store = SqliteStore(Path(tmp) / "params.db")
        stack.callback(store.close)
        layout = Layout("naive")
        # Same store layout and clients as credflip, but only ever one user.
        for role in ("writer", "reader"):
            store.put(layout.url(Color.BLUE, role), app.secret, secure=True)  # type: ignore[arg-type]
        store.put(layout.pointer, "blue")
        resolver = Resolver(store=store, prefix=layout.prefix, ttl=ttl)
        requests = following_clients(scenario, stack, store, layout, resolver, ttl)
        su_url = pg.url("postgres", pg.superuser_password, app.database)
        with (
            Monitor(pg, app.database, scenario),
            psycopg.connect(**connect_kwargs(su_url), autocommit=True) as su,
        ):
            start(scenario, requests)
            stop = threading.Event()
            for _ in range(rotations):
                stop.wait(period / 2)
                scenario.check()
                begin = time.monotonic()
                password = new_password()
                su.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(app.user),
                        sql.Literal(scram_verifier(su, app.user, password)),
                    )
                )
                scenario.switches.append(time.monotonic())
                scenario.retires.append(time.monotonic())  # the old password dies at once
                fresh = app.with_credentials(app.user, password).secret
                for role in ("writer", "reader"):
                    store.put(layout.url(Color.BLUE, role), fresh, secure=True)  # type: ignore[arg-type]
                stop.wait(period / 2)
                scenario.windows.append((begin, time.monotonic()))
            finish(scenario, pg, app.database)
    return scenario


def run_original(pg: EmbeddedPostgres, ttl: float, budget: float) -> Scenario:
    scenario = Scenario("c) resolve once")
    admin, app = make_app(pg, "bench_original")
    scenario.users = (app.user, f"{app.user}_green")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        store = SqliteStore(Path(tmp) / "params.db")
        stack.callback(store.close)
        layout = Layout("original")
        commands.init(store, layout, admin_url=admin, writer_url=app)
        # Clients read the URL once at start (cold start) and never again.
        once = Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env).writer_url
        driver_url = once.replace("postgresql://", "postgresql+psycopg://")
        engine = sqlalchemy.create_engine(driver_url, **POOL)
        stack.callback(engine.dispose)
        port, site = stack.enter_context(django_site("static", {"BENCH_DB_URL": once}))
        scenario.checks.append(site)
        from sqlalchemy.ext.asyncio import create_async_engine as plain_async_engine

        aio = stack.enter_context(async_app(lambda: plain_async_engine(driver_url, **ASYNC_POOL)))
        requests = {
            "lambda": lambda_request(lambda: once),
            "server": server_request(engine),
            "django": django_request(port, site),
            "async": aio,
        }
        with Monitor(pg, app.database, scenario):
            start(scenario, requests)
            begin = time.monotonic()
            try:
                rotate(
                    store,
                    layout,
                    admin_url=admin,
                    on_event=scenario.on_event,
                    options=RotateOptions(client_ttl=ttl, quiet=ttl, drain_timeout=budget),
                )
                scenario.note = "drain finished (unexpected)"
            except DrainTimeout:
                scenario.note = (
                    f"drain waited {budget:.0f}s for clients that never re-resolve; "
                    "rotation left resumable, old user never locked"
                )
            scenario.windows.append((begin, time.monotonic()))
            finish(scenario, pg, app.database)
    return scenario


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency(scenario: Scenario, kind: str, *, during: bool) -> tuple[float, float]:
    samples = []
    for began, took, ok in scenario.traffic[kind].samples:
        inside = any(a <= began <= b for a, b in scenario.windows)
        if ok and inside == during:
            samples.append(took * 1000)
    return percentiles(samples)


def old_sessions_gone(scenario: Scenario, app: str) -> list[float]:
    """Seconds from each switch until the old user has no session of *app*."""
    gone = []
    for n, switched in enumerate(scenario.switches):
        old = scenario.users[n % len(scenario.users)] if len(scenario.users) > 1 else None
        if old is None:
            continue
        for at, counts in scenario.samples:
            if at >= switched and counts.get((old, app), 0) == 0:
                gone.append(at - switched)
                break
        else:
            gone.append(float("inf"))
    return gone


def report(scenarios: list[Scenario], ttl: float) -> list[str]:
    head = (
        f"{'scenario':<18} {'kind':<7} {'ok':>7} {'failed':>7} "
        f"{'p50 out':>8} {'p99 out':>8} {'p50 rot':>8} {'p99 rot':>8} {'old gone':>10}"
    )
    lines = [head, "-" * len(head)]
    for sc in scenarios:
        for n, (kind, traffic) in enumerate(sc.traffic.items()):
            out50, out99 = latency(sc, kind, during=False)
            in50, in99 = latency(sc, kind, during=True)
            gone = old_sessions_gone(sc, kind) if kind in POOLED else []
            gone_text = (
                "-"
                if not gone
                else "never"
                if max(gone) == float("inf")
                else f"max {max(gone):.1f}s"
            )
            lines.append(
                f"{sc.name if n == 0 else '':<18} {kind:<7} {traffic.ok:>7} {traffic.failed:>7} "
                f"{out50:>7.1f}ms {out99:>7.1f}ms {in50:>7.1f}ms {in99:>7.1f}ms {gone_text:>10}"
            )
    lines.append("")
    for sc in scenarios:
        ok = sum(t.ok for t in sc.traffic.values())
        if sc.retires and sc.switches and sc.name.startswith("a"):
            valid = max(r - s for s, r in zip(sc.switches, sc.retires, strict=False))
            valid_text = f"at most {valid:.1f}s after each switch"
        elif sc.name.startswith("b"):
            valid_text = "0s (dies at the change)"
        else:
            valid_text = f"> {sc.ended - sc.switches[0]:.0f}s (to the end)" if sc.switches else "-"
        errors = {k: dict(t.errors) for k, t in sc.traffic.items() if t.errors}
        lines.append(
            f"{sc.name}: {len(sc.windows)} rotation(s); rows {sc.rows}, "
            f"lost {max(0, ok - sc.rows)}; old password valid {valid_text}"
            + (f"; errors {errors}" if errors else "")
            + (f"; {sc.note}" if sc.note else "")
        )
    lines.append(
        f"client TTL {ttl:g}s; {WORKERS} workers per kind; old gone: seconds from a switch "
        f"until that kind holds no session of the old user (acceptance: TTL + 2 s = {ttl + 2:g}s)"
    )
    return lines


def plot(scenarios: list[Scenario], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scenarios), 1, figsize=(12, 3.2 * len(scenarios)), sharex=False)
    for ax, sc in zip(axes, scenarios, strict=True):
        t0 = sc.began
        for user in sc.users:
            color = "tab:green" if user.endswith("_green") else "tab:blue"
            xs = [at - t0 for at, _ in sc.samples]
            ys = [sum(n for (u, _a), n in counts.items() if u == user) for _, counts in sc.samples]
            ax.plot(xs, ys, color=color, label=f"sessions of {user}")
        for switched in sc.switches:
            ax.axvline(switched - t0, color="grey", linestyle="--", linewidth=0.8)
        fails = [
            began - t0
            for traffic in sc.traffic.values()
            for began, _took, ok in traffic.samples
            if not ok
        ]
        if fails:
            ax.plot(
                fails, [0] * len(fails), "x", color="red", label=f"failed requests ({len(fails)})"
            )
        ax.set_title(sc.name + (f" — {sc.note}" if sc.note else ""), fontsize=10)
        ax.set_ylabel("sessions")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds (dashed: switch / password change)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    pg = EmbeddedPostgres(
        log_statement="none", settings={"shared_preload_libraries": "pg_stat_statements"}
    ).start()
    try:
        pg.create_role("credflip_admin", ADMIN_PW, "CREATEROLE CREATEDB")
        with psycopg.connect(**connect_kwargs(pg.superuser_url), autocommit=True) as su:
            su.execute("GRANT pg_read_all_stats, pg_signal_backend TO credflip_admin")
        a = run_credflip(pg, args.rotations, args.ttl)
        period = (a.windows[-1][1] - a.windows[0][0]) / len(a.windows)
        b = run_naive(pg, args.rotations, args.ttl, period)
        c = run_original(pg, args.ttl, budget=min(60.0, 4 * period))
    except ChildDied as exc:
        sys.exit(f"rotation_under_load: error: {exc}")
    finally:
        pg.stop()
    scenarios = [a, b, c]
    print("\n".join(report(scenarios, args.ttl)))
    png = OUT / "rotation_under_load.png"
    plot(scenarios, png)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
