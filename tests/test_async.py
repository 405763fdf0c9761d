"""create_async_engine follows rotations: an asyncio app of many tasks, per driver.

The app runs its own event loop in a thread; credflip rotates from the test's
thread, as a scheduled rotator would from elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from apps import App, MyApp, make_app, make_my_app
from faults import reopen, wait_for
from following import Rotations, SessionMonitor, change_password_behind_the_back, initialised

from credflip.errors import UsageError
from credflip.layout import Color, Layout
from credflip.resolver import Endpoints, Resolver
from credflip.sqlalchemy import create_async_engine
from credflip.stores.sqlite import SqliteStore

TTL = 1.0
DRIVERS = [("postgresql", "psycopg"), ("postgresql", "asyncpg"), ("mysql", "aiomysql")]
WHO = {
    "postgresql": "SELECT session_user",
    "mysql": "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)",
}


class LoopWatchingResolver(Resolver):
    """A resolver that counts the store reads made on a running event loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_loop = 0

    def _read(self, env: str, *, max_age: float) -> tuple[Endpoints, float]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # a worker thread, the watcher, or before the loop started
        else:
            self.on_loop += 1
        return super()._read(env, max_age=max_age)


class AsyncApp:
    """An event loop in a thread with *tasks* tasks, each running requests in a loop."""

    def __init__(self, make_engine: Callable[[], Any], family: str, tasks: int = 16) -> None:
        # Made before the loop runs, as an app does at import.
        self.engine = make_engine()
        self.who = WHO[family]
        self.tasks = tasks
        self.ok = 0
        self.failed: list[str] = []
        self.users: Counter[str] = Counter()
        self._traffic = threading.Event()
        self._traffic.set()
        self._idle = threading.Event()
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _request(self, engine: Any, worker: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                sqlalchemy.text("INSERT INTO orders (worker) VALUES (:w)"), {"w": worker}
            )
            user = (await conn.execute(sqlalchemy.text(self.who))).scalar()
        self.ok += 1
        self.users[str(user)] += 1

    async def _work(self, engine: Any, worker: int) -> None:
        while self._traffic.is_set():
            try:
                await self._request(engine, worker)
            except Exception as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.005)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        engine = self.engine
        workers = [asyncio.create_task(self._work(engine, n)) for n in range(self.tasks)]
        await asyncio.gather(*workers)
        self._idle.set()
        await self._done.wait()  # idle: the pool keeps its connections
        await engine.dispose()

    def stop_traffic(self) -> None:
        self._traffic.clear()
        wait_for(self._idle.is_set, what="the tasks to finish")

    def __enter__(self) -> AsyncApp:
        self._thread.start()
        wait_for(lambda: self.ok > 0 or bool(self.failed), what="a first request")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._traffic.clear()
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(30)


def new_app(request: pytest.FixtureRequest, family: str) -> App | MyApp:
    if family == "postgresql":
        return make_app(request.getfixturevalue("clusters").get(15), rich=False)
    return make_my_app(request.getfixturevalue("mariadb"), rich=False)


@pytest.mark.parametrize(("family", "driver"), DRIVERS, ids=[d for _f, d in DRIVERS])
def test_async_engine_follows_rotations(
    request: pytest.FixtureRequest, family: str, driver: str, tmp_path: Path
) -> None:
    app = new_app(request, family)
    store, layout = initialised(app, tmp_path, "api")
    resolver = LoopWatchingResolver(store=reopen(store), prefix=layout.prefix, ttl=TTL)

    def make_engine() -> Any:
        return create_async_engine(
            layout.env, driver=driver, resolver=resolver, pool_size=4, max_overflow=0
        )

    rotations = Rotations(app, store, layout, ttl=TTL)
    with SessionMonitor(app) as monitor, AsyncApp(make_engine, family) as api:
        rotations.run(3)
        rotations.wait_past_last_switch(monitor)
        api.stop_traffic()
        assert not api.failed, api.failed[:3]
        assert set(api.users) == {app.user, app.green}, api.users
        rotations.assert_left_in_time(monitor)

        # Idle: the pool keeps its connections, the loop runs on. The next
        # rotation does not wait for them: they are closed on the loop.
        assert monitor.now().get(app.green, 0) >= 1
        rotations.run(1)
        assert monitor.now().get(app.green, 0) == 0
        rotations.assert_left_in_time(monitor)
    # The store was read again and again, never on the event loop.
    assert resolver.reads > 3 and resolver.on_loop == 0


@pytest.mark.parametrize(("family", "driver"), DRIVERS, ids=[d for _f, d in DRIVERS])
def test_async_engine_logs_in_again_after_a_refused_login(
    request: pytest.FixtureRequest, family: str, driver: str, tmp_path: Path
) -> None:
    app = new_app(request, family)
    store, layout = initialised(app, tmp_path, "api")
    resolver = LoopWatchingResolver(store=store, prefix=layout.prefix, ttl=3600)

    engine = create_async_engine(
        layout.env, driver=driver, resolver=resolver, poolclass=sqlalchemy.pool.NullPool
    )

    async def main() -> list[Any]:
        users = []
        async with engine.connect() as conn:
            users.append((await conn.execute(sqlalchemy.text(WHO[family]))).scalar())
        change_password_behind_the_back(app, store, layout)
        async with engine.connect() as conn:  # the cached password is refused once
            users.append((await conn.execute(sqlalchemy.text(WHO[family]))).scalar())
        await engine.dispose()
        return users

    assert asyncio.run(main()) == [app.user, app.user]
    # The first resolve and exactly one refresh, in a worker thread.
    assert resolver.reads == 2 and resolver.on_loop == 0


def test_async_engine_refuses_an_unknown_driver(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("api")
    store.put(layout.pointer, "blue")
    for role in ("writer", "reader"):
        store.put(layout.url(Color.BLUE, role), "postgresql://app:pw@db/shop")  # type: ignore[arg-type]
    resolver = Resolver(store=store, prefix=layout.prefix)
    with pytest.raises(
        UsageError, match="'aiomysql' is not supported for postgresql: use 'psycopg' or 'asyncpg'"
    ):
        create_async_engine(layout.env, driver="aiomysql", resolver=resolver)
