"""Assertions shared by the end-to-end tests."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg
import pymysql

from credflip.engines import engine_class
from credflip.layout import Color, Layout
from credflip.resolver import Endpoints, Resolver
from credflip.state import Phase, load_state
from credflip.stores.base import Store
from credflip.urls import DbUrl

if TYPE_CHECKING:
    from credflip.stores.ssm import SsmStore


#: The password in the URLs :func:`seed` writes: no log, repr or message may show it.
SECRET = "pw-not-to-be-logged"


class Clock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seed(store: Store, env: str = "prod", color: Color = Color.BLUE) -> Layout:
    """Both colors' URLs (password :data:`SECRET`) and the pointer at *color*."""
    layout = Layout(env)
    for c in Color:
        for role in ("writer", "reader"):
            store.put(
                layout.url(c, role),
                f"postgresql://app_{c}:{SECRET}@{role}.db/app",  # type: ignore[arg-type]
                secure=True,
            )
    store.put(layout.pointer, color.value)
    return layout


def wait_until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll *check* until it holds, for at most *within* seconds (:func:`faults.wait_for`).

    For effects a server makes visible asynchronously (a reload, a statistic
    written after the reply went out), never as a stand-in for synchronisation
    the test could have.
    """
    from faults import wait_for

    wait_for(check, timeout=within, what=what)


def waiting_on_the_read(threads: list[threading.Thread]) -> bool:
    """True when every thread is inside Resolver._update, past noting the generation."""
    import inspect

    lines, start = inspect.getsourcelines(Resolver._update)
    lock_line = start + next(i for i, text in enumerate(lines) if "with entry.lock" in text)
    frames = sys._current_frames()
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        while frame is not None and frame.f_code.co_name != "_update":
            frame = frame.f_back
        if frame is None or frame.f_lineno < lock_line:
            return False
    return True


def leaks(secrets: Iterable[str], texts: Iterable[str]) -> list[str]:
    """Where any of *secrets* shows in *texts*: each place with 60 characters around it and
    the secret itself written ``<secret N>`` (N its position), so that a failing test
    does not print it either (``found = leaks(...)`` then ``assert not found, found``:
    an assertion on the call itself would print its arguments). Empty when none shows."""
    wanted = list(secrets)
    assert all(wanted), "an empty secret is in every text"
    found: list[str] = []
    for text in texts:
        for secret in wanted:
            at = text.find(secret)
            if at >= 0:
                around = text[max(0, at - 60) : at + len(secret) + 60]
                for m, other in enumerate(wanted):
                    around = around.replace(other, f"<secret {m}>")
                found.append(around)
    return found


#: A rotate run that fails, also one refused before it changes anything, counts itself in
#: the env's state (``"failures"``, first, for halting: :mod:`credflip.halt`); what shows
#: that a command changed nothing leaves that count out.
_TALLY = re.compile(r'^\{"failures":\d+,')


def _untallied(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(
        (name, _TALLY.sub("{", value) if name.endswith("/rotation") else value)
        for name, value in params
    )


def dump(store: Store, under: str = "/") -> list[tuple[str, str]]:
    """Every parameter in the store (*under* a path), sorted, but for the count of failed
    rotations: to show that a command changed nothing."""
    import sqlite3

    from credflip.stores.sqlite import SqliteStore
    from credflip.stores.ssm import SsmStore

    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute("SELECT name, value FROM params").fetchall()
        return _untallied([(n, v) for n, v in rows if n.startswith(under)])
    assert isinstance(store, SsmStore)
    out = []
    pages = store.client.get_paginator("get_parameters_by_path").paginate(
        Path=under, Recursive=True, WithDecryption=True
    )
    for page in pages:
        out += [(p["Name"], p["Value"]) for p in page["Parameters"]]
    return _untallied(out)


def env_params(store: Store, layout: Layout) -> list[tuple[str, str]]:
    """The env's parameters as :func:`dump` shows them (moto's server holds every test's)."""
    return dump(store, layout.base)


def count_calls(store: SsmStore) -> list[str]:
    """Record every API call the SSM store's client sends (including retries)."""
    calls: list[str] = []
    store.client.meta.events.register(
        "before-send.ssm.*",
        lambda request, **_: calls.append(request.headers["X-Amz-Target"].decode().split(".")[-1]),
    )
    return calls


def fresh(store: Store, layout: Layout) -> Endpoints:
    """What a client resolving right now (no cache) gets."""
    return Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env)


def stored_url(store: Store, layout: Layout, color: Color, role: str = "writer") -> DbUrl:
    value = store.get(layout.url(color, role))  # type: ignore[arg-type]
    assert value is not None, f"{color} {role} URL missing"
    return DbUrl.parse(value)


def on(url: DbUrl, port: int) -> DbUrl:
    """*url* on another port of the same host: a replica's."""
    return dataclasses.replace(url, port=port)


def _client(url: DbUrl | str) -> Any:
    parsed = DbUrl.parse(url) if isinstance(url, str) else url
    return engine_class(parsed.scheme).client_connect(parsed)


def connects(url: DbUrl | str) -> bool:
    """True when *url* logs in and runs a query (either engine)."""
    try:
        conn = _client(url)
    except (psycopg.OperationalError, pymysql.err.OperationalError):
        return False
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
    finally:
        conn.close()
    return True


def login_error(url: DbUrl | str) -> str:
    """The server's reason for refusing *url* (fails the test if it logs in)."""
    try:
        _client(url).close()
    except (psycopg.OperationalError, pymysql.err.OperationalError) as exc:
        return str(exc)
    raise AssertionError(f"{url} logged in but should have been refused")


def assert_pointer_connects(store: Store, layout: Layout) -> Color:
    """The invariant: the color the pointer names has URLs that connect."""
    endpoints = fresh(store, layout)
    assert connects(endpoints.writer_url), f"{endpoints.color} writer URL does not connect"
    assert connects(endpoints.reader_url), f"{endpoints.color} reader URL does not connect"
    return endpoints.color


_TABLE_PRIVS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def privileges(conn: psycopg.Connection[Any], role: str) -> dict[str, Any]:
    """Every privilege *role* has on every object of the current database, by name."""
    out: dict[str, Any] = {}
    for oid, name, kind in conn.execute(
        "SELECT c.oid, n.nspname || '.' || c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
        "AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f') ORDER BY 2"
    ).fetchall():
        privs = ("USAGE", "SELECT", "UPDATE") if kind == "S" else _TABLE_PRIVS
        func = "has_sequence_privilege" if kind == "S" else "has_table_privilege"
        out[f"rel {name}"] = tuple(
            conn.execute(f"SELECT {func}(%s, %s::oid, %s)", (role, oid, p)).fetchone()[0]  # type: ignore[index]
            for p in privs
        )
    for oid, name in conn.execute(
        "SELECT p.oid, p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 2"
    ).fetchall():
        out[f"fn {name}"] = conn.execute(
            "SELECT has_function_privilege(%s, %s::oid, 'EXECUTE')", (role, oid)
        ).fetchone()[0]  # type: ignore[index]
    for (name,) in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
        "AND nspname <> 'information_schema' ORDER BY 1"
    ).fetchall():
        out[f"schema {name}"] = conn.execute(
            "SELECT has_schema_privilege(%s, %s, 'USAGE'), has_schema_privilege(%s, %s, 'CREATE')",
            (role, name, role, name),
        ).fetchone()
    out["database"] = conn.execute(
        "SELECT has_database_privilege(%s, current_database(), 'CONNECT'), "
        "has_database_privilege(%s, current_database(), 'CREATE'), "
        "has_database_privilege(%s, current_database(), 'TEMP')",
        (role, role, role),
    ).fetchone()
    out.update(_column_privileges(conn, role))
    # With their options: ADMIN, and on PostgreSQL 16+ INHERIT and SET too.
    options = (
        "bool_or(m.admin_option), bool_or(m.inherit_option), bool_or(m.set_option)"
        if conn.info.server_version >= 160000
        else "bool_or(m.admin_option)"
    )
    out["memberships"] = conn.execute(
        f"SELECT g.rolname, {options} FROM pg_auth_members m JOIN pg_roles g "
        "ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s "
        "GROUP BY 1 ORDER BY 1",
        (role,),
    ).fetchall()
    return out


_COLUMN_PRIVS = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


def _column_privileges(conn: psycopg.Connection[Any], role: str) -> dict[str, Any]:
    """What *role* may do with each column (through its table's rights too), by table, and
    the column rights granted to it directly: a table-level REVOKE takes those too."""
    out: dict[str, Any] = {}
    check = "has_column_privilege(%(r)s, c.oid, a.attnum, '{}')"
    checks = ", ".join(check.format(p) for p in _COLUMN_PRIVS)
    for name, column, *allowed in conn.execute(
        f"SELECT n.nspname || '.' || c.relname, a.attname, {checks} FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
        "AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY 1, a.attnum",
        {"r": role},
    ).fetchall():
        out.setdefault(f"columns {name}", []).append((column, *allowed))
    out["column grants"] = conn.execute(
        "SELECT DISTINCT n.nspname || '.' || c.relname, a.attname, x.privilege_type, "
        "x.is_grantable FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(a.attacl) x "
        "WHERE x.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1, 2, 3, 4",
        (role,),
    ).fetchall()
    return out


def command(cmd: str, app: Any, store: Store, layout: Layout, *extra: str) -> list[str]:
    """CLI arguments for *cmd* on *app*'s env, with its admin URL."""
    return [
        cmd,
        "--env",
        layout.env,
        "--store",
        store.url,
        "--admin-url",
        app.admin_url.secret,
        *extra,
    ]


#: Short waits, where the drain's length is not what a test is about.
FAST = ("--client-ttl", "200ms", "--quiet", "200ms")


def rotate_args(app: Any, store: Store, layout: Layout, *extra: str) -> list[str]:
    """``credflip rotate --yes`` for *app*'s env, with *extra* options."""
    return command("rotate", app, store, layout, "--yes", *extra)


#: The function's ARN in the tests' Lambda context (the history's when STS cannot answer).
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:credflip-rotator-x"


class LambdaContext:
    """Just what the rotation handler reads of AWS's context object: the time left, the
    function's ARN."""

    invoked_function_arn = FUNCTION_ARN

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.until - time.monotonic()) * 1000)


class Listener:
    """A TCP port that accepts connections and never answers: where a URL points to show
    that nothing connected (:meth:`attempts` counts who did)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.seen = 0

    def url(self, template: DbUrl) -> DbUrl:
        """*template* (an admin URL) pointed at this port."""
        return dataclasses.replace(template, host="127.0.0.1", port=self.port)

    def attempts(self) -> int:
        """Connections made to the port so far (the kernel queues them for accept)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.seen
            conn.close()
            self.seen += 1

    def close(self) -> None:
        self.sock.close()


def window_from_now(start_hours: float, end_hours: float) -> str:
    """A daily UTC rotation window from *start_hours* to *end_hours* after now (negative:
    before), in whole minutes: open now for (-1, 2), closed for (3, 4)."""
    now = time.time()
    first, last = (time.gmtime(now + hours * 3600) for hours in (start_hours, end_hours))
    return f"daily {time.strftime('%H:%M', first)}-{time.strftime('%H:%M', last)} UTC"


def emitted(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The embedded-metric-format records and the JSON lines the rotation handler printed."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [r for r in records if "_aws" in r], [r for r in records if "_aws" not in r]


def rotate_process(app: Any, store: Store, layout: Layout, *extra: str) -> subprocess.Popen[str]:
    """``credflip rotate --yes`` for *app*'s env in a process of its own, the admin URL in
    its environment (never its argv), its output piped."""
    where = ["--env", layout.env, "--prefix", layout.prefix, "--store", store.url]
    return subprocess.Popen(
        [sys.executable, "-m", "credflip", "rotate", *where, "--yes", *extra],
        env={**os.environ, "CREDFLIP_ADMIN_URL": app.admin_url.secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def draining(store: Store, layout: Layout) -> bool:
    """Whether the env's rotation is in its drain."""
    current = load_state(store, layout).current
    return current is not None and current.phase is Phase.DRAIN


def observe_with(eng: Any, user: str, before: int, act: Callable[[], None]) -> tuple[Any, int]:
    """*eng*'s observation of *user* with *act* run right before the *before*-th
    statement it sends (0: before the first; none if it sends fewer), and how many it sent:
    what a client does while a drain sample reads (the engine's own statements, watched)."""
    run = eng._run
    sent = 0

    def watched(*args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        if sent == before:
            act()
        sent += 1
        return run(*args, **kwargs)

    eng._run = watched
    try:
        return eng.observe(user), sent
    finally:
        del eng._run
