"""Django (credflip.django) follows rotations: a real project served by waitress.

The project in ``tests/shopsite`` runs in its own process with CONN_MAX_AGE=60
and CONN_HEALTH_CHECKS, a writer alias and a reader alias behind a router.
Clients hit it over HTTP (keep-alive) from threads while credflip rotates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from apps import App, MyApp, make_app, make_my_app
from following import (
    HttpLoad,
    Rotations,
    SessionMonitor,
    change_password_behind_the_back,
    connection,
    get,
    initialised,
)
from helpers import stored_url

from credflip.layout import Color, Layout
from credflip.stores.sqlite import SqliteStore

TTL = 1.0
TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"


def project_env(store: SqliteStore, layout: Layout, *, ttl: float) -> dict[str, str]:
    """The environment of a process that runs the shopsite project."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(EXAMPLES)]),
        "DJANGO_SETTINGS_MODULE": "shopsite.settings",
        "DB_ENV": layout.env,
        "CREDFLIP_STORE": store.url,
        "CREDFLIP_PREFIX": layout.prefix,
        "CREDFLIP_TTL": str(ttl),
    }


class Site:
    """The shopsite project in a waitress process of its own."""

    def __init__(self, store: SqliteStore, layout: Layout, *, ttl: float, threads: int) -> None:
        env = project_env(store, layout, ttl=ttl)
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


@pytest.fixture(params=["postgresql", "mysql"])
def web_app(request: pytest.FixtureRequest) -> App | MyApp:
    """An app database on PostgreSQL 15 and on MariaDB."""
    if request.param == "postgresql":
        return make_app(request.getfixturevalue("clusters").get(15), rich=False)
    return make_my_app(request.getfixturevalue("mariadb"), rich=False)


def test_django_site_follows_rotations(web_app: App | MyApp, tmp_path: Path) -> None:
    store, layout = initialised(web_app, tmp_path, "shop")
    rotations = Rotations(web_app, store, layout, ttl=TTL)
    with site(store, layout, ttl=TTL) as running, SessionMonitor(web_app) as monitor:
        with HttpLoad(running.port) as load:
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
        assert get(running.port, 99)["writer"] == web_app.user
    log = running.log.read_text()
    # Neither the first password nor the two the rotations left behind.
    for password in [web_app.password] + [stored_url(store, layout, c).password for c in Color]:
        assert password and password not in log


def test_django_logs_in_again_after_a_refused_login(web_app: App | MyApp, tmp_path: Path) -> None:
    """A connection lost after someone changed the password by hand: the health check
    reconnects, the cached password is refused, one refresh and the request succeeds."""
    store, layout = initialised(web_app, tmp_path, "shop")
    with site(store, layout, ttl=3600, threads=1) as running:
        conn = connection(running.port)
        assert get(running.port, 1, conn)["writer"] == web_app.user
        change_password_behind_the_back(web_app, store, layout)
        body = get(running.port, 2, conn)  # the same worker thread, whose connections died
        assert body["writer"] == body["reader"] == web_app.user
        conn.close()
    log = running.log.read_text()
    # One refused login (the writer's); the refresh served the reader's too.
    assert log.count("was refused; retrying once as blue") == 1, log
    assert web_app.password not in log


def test_database_settings_hold_no_password_and_refuse_what_cannot_follow(
    tmp_path: Path,
) -> None:
    from credflip.django import database
    from credflip.errors import UsageError

    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("shop")
    secret = "s3cret-Pa55word"
    store.put(layout.pointer, "blue")
    store.put(layout.url(Color.BLUE, "writer"), f"postgresql://app:{secret}@db:6432/shop")
    store.put(layout.url(Color.BLUE, "reader"), f"mysql://app:{secret}@ro:3306/shop")
    entry = database("shop", store=store, prefix=layout.prefix, CONN_MAX_AGE=60)
    assert entry["ENGINE"] == "credflip.django.postgresql"
    assert (entry["NAME"], entry["HOST"], entry["PORT"], entry["PASSWORD"]) == (
        "shop",
        "db",
        "6432",
        "",
    )
    assert entry["CONN_MAX_AGE"] == 60 and secret not in repr(entry)
    assert entry["CREDFLIP"]["store"] == store.url  # plain data: Django deep-copies settings
    reader = database("shop", role="reader", store=store, prefix=layout.prefix)
    assert reader["ENGINE"] == "credflip.django.mysql" and reader["HOST"] == "ro"
    for kwargs, message in [
        ({"role": "primary"}, "role 'primary' is not known"),
        ({"PASSWORD": "x"}, "takes no USER or PASSWORD"),
        ({"OPTIONS": {"pool": True}}, "does not follow Django's connection pool"),
    ]:
        with pytest.raises(UsageError, match=message):
            database("shop", store=store, prefix=layout.prefix, **kwargs)


def test_dbshell_logs_in_as_the_active_color(web_app: App | MyApp, tmp_path: Path) -> None:
    """manage.py dbshell (psql / mariadb) gets the active color's credentials through
    the environment, never on its command line."""
    store, layout = initialised(web_app, tmp_path, "shop")
    Rotations(web_app, store, layout, ttl=0.2).run(1)  # green is active now
    query = (
        ["-tAc", "SELECT session_user"]
        if isinstance(web_app, App)
        else ["-N", "-e", "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"]
    )
    shell = subprocess.run(
        [sys.executable, "-m", "django", "dbshell", "--", *query],
        env=project_env(store, layout, ttl=60),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == web_app.green
    # What dbshell runs: the password is in the environment, not in the arguments.
    show = (
        "import django, json; django.setup(); from django.db import connection as c; "
        "args, env = c.client.settings_to_cmd_args_env(c.credflip_settings(), []); "
        "print(json.dumps([args, sorted(env or {})]))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", show],
        env=project_env(store, layout, ttl=60),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    args, env_names = json.loads(shown.stdout)
    password = stored_url(store, layout, Color.GREEN).password
    assert password and password not in " ".join(args)
    assert env_names == (["PGPASSWORD"] if isinstance(web_app, App) else ["MYSQL_PWD"])
