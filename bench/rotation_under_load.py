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
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from children import ChildDied
from load_clients import (
    ASYNC_POOL,
    POOL,
    WORKERS,
    AsyncApp,
    AsyncTraffic,
    async_app,
    django_request,
    django_site,
    lambda_request,
    server_request,
)
from load_report import Scenario, plot, report
from private_servers import Postgres
from psycopg import sql
from sqlalchemy.ext.asyncio import create_async_engine as plain_async_engine

from credflip import commands
from credflip.demo import CRASHES, Traffic, Worker
from credflip.demo.cluster import EmbeddedPostgres
from credflip.engines.postgres import scram_verifier
from credflip.errors import DrainTimeout
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import RotateOptions, new_password, rotate
from credflip.sqlalchemy import create_async_engine, create_engine
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl
from credflip.urls import libpq_kwargs as connect_kwargs

OUT = Path(__file__).parent / "out"


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


def make_app(server: Postgres, name: str) -> tuple[DbUrl, DbUrl]:
    """A database owned by its single user, with the orders table; returns (admin URL,
    app URL)."""
    admin, app_url = server.app(name=name)
    with psycopg.connect(**connect_kwargs(app_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, worker int, kind text)")
    return admin, app_url


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


def env_store(stack: ExitStack, env: str) -> tuple[SqliteStore, Layout]:
    """A store of its own in a temporary folder, for one scenario's *env*; both go with
    *stack*."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    store = SqliteStore(Path(tmp) / "params.db")
    stack.callback(store.close)
    return store, Layout(env)


def run_credflip(server: Postgres, rotations: int, ttl: float) -> Scenario:
    pg = server.pg
    scenario = Scenario("a) credflip")
    admin, app = make_app(server, "bench_credflip")
    scenario.users = (app.user, f"{app.user}_green")
    with ExitStack() as stack:
        store, layout = env_store(stack, "bench")
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


def run_naive(server: Postgres, rotations: int, ttl: float, period: float) -> Scenario:
    pg = server.pg
    scenario = Scenario("b) naive in place")
    _admin, app = make_app(server, "bench_naive")
    scenario.users = (app.user,)
    with ExitStack() as stack:
        store, layout = env_store(stack, "naive")
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


def run_original(server: Postgres, ttl: float, budget: float) -> Scenario:
    pg = server.pg
    scenario = Scenario("c) resolve once")
    admin, app = make_app(server, "bench_original")
    scenario.users = (app.user, f"{app.user}_green")
    with ExitStack() as stack:
        store, layout = env_store(stack, "original")
        commands.init(store, layout, admin_url=admin, writer_url=app)
        # Clients read the URL once at start (cold start) and never again.
        once = Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env).writer_url
        driver_url = once.replace("postgresql://", "postgresql+psycopg://")
        engine = sqlalchemy.create_engine(driver_url, **POOL)
        stack.callback(engine.dispose)
        port, site = stack.enter_context(django_site("static", {"BENCH_DB_URL": once}))
        scenario.checks.append(site)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    server = Postgres()
    try:
        a = run_credflip(server, args.rotations, args.ttl)
        period = (a.windows[-1][1] - a.windows[0][0]) / len(a.windows)
        b = run_naive(server, args.rotations, args.ttl, period)
        c = run_original(server, args.ttl, budget=min(60.0, 4 * period))
    except ChildDied as exc:
        sys.exit(f"rotation_under_load: error: {exc}")
    finally:
        server.close()
    scenarios = [a, b, c]
    print("\n".join(report(scenarios, args.ttl)))
    png = OUT / "rotation_under_load.png"
    plot(scenarios, png)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
