"""PgBouncer in front of an env: registering it, what its console shows, verify through it
(auth_file mode, where it fails until the operator reloads the colors' lines), and
``pooler-userlist``. The rotations under load are in test_pgbouncer_e2e."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

import psycopg
import pytest
from apps import App, make_app
from clusters import Cluster
from helpers import dump
from poolers import PrivatePgbouncer, client, pooled

from credflip.drain import DrainPolicy, DrainStatus, DrainTracker, Evidence, Reading, Verdict
from credflip.engines import PooledBackend
from credflip.errors import UsageError
from credflip.layout import Color, Layout
from credflip.poolers import parse_pooler_url
from credflip.poolers.view import SIGNAL, parse_time, user_view
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

# -- what the console says, read without a PgBouncer --------------------------------


def row(user: str, request: str, **more: Any) -> dict[str, Any]:
    return {"user": user, "request_time": f"2026-11-30 {request} UTC", **more}


def test_the_newest_request_on_the_users_server_connections_and_the_poolers_clock() -> None:
    me = row("stats", "10:00:06")  # the console's own SHOW CLIENTS: the pooler's clock
    servers = [
        row("app", "10:00:05", remote_pid=7, addr="10.0.0.2", local_port=4000),
        row("app", "09:59:00", remote_pid=8, addr="10.0.0.2", local_port=4001),
    ]
    view = user_view("app", [me], servers, wall_now=0.0)
    assert view.newest == dt.datetime(2026, 11, 30, 10, 0, 5)
    assert view.now == dt.datetime(2026, 11, 30, 10, 0, 6)
    assert user_view("app", [me], [], wall_now=0.0).newest is None


def test_server_connections_are_named_as_the_server_sees_them() -> None:
    servers = [
        row("app", "10:00:00", remote_pid=11, addr="10.0.0.2", local_port=4001),
        row("app", "10:00:00", remote_pid=12, addr="unix", local_port=5432),
        row("app", "10:00:00", remote_pid=0, addr="10.0.0.2", local_port=4003),
        row("other", "10:00:09", remote_pid=13, addr="10.0.0.2", local_port=4004),
    ]
    view = user_view("app", [row("stats", "10:00:01")], servers, wall_now=0.0)
    # By pid and the TCP port they come from; a Unix socket has none; no pid, no match.
    assert view.backends == (PooledBackend(11, 4001), PooledBackend(12, None))
    assert view.newest == dt.datetime(2026, 11, 30, 10, 0, 0)  # another user's is not its


def test_clients_are_grouped_like_sessions_and_dated_on_this_machines_clock() -> None:
    clients = [
        row("app", "10:00:09", addr="10.0.0.7", application_name="api", database="shop",
            connect_time="2026-11-30 10:00:00 UTC"),
        row("app", "10:00:08", addr="10.0.0.7", application_name="api", database="shop",
            connect_time="2026-11-30 10:00:04 UTC"),
        row("app", "10:00:07", addr="10.0.0.9", application_name="", database="shop"),
        row("stats", "10:00:10", addr="127.0.0.1", database="pgbouncer"),
    ]  # fmt: skip
    view = user_view("app", clients, [], wall_now=1000.0)
    assert view.clients.count == 3
    first = view.clients.groups[0]
    assert (first.client, first.application, first.database, first.count) == (
        "10.0.0.7",
        "api",
        "shop",
        2,
    )
    assert first.started == 990.0  # ten seconds before the pooler's "now"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30 10:00:05 UTC", dt.datetime(2026, 11, 30, 10, 0, 5)),
        ("2026-11-30 10:00:05.250 CET", dt.datetime(2026, 11, 30, 10, 0, 5, 250000)),
        ("", None),
        (None, None),
        ("not a time", None),
    ],
)
def test_pgbouncer_times(text: str | None, expected: dt.datetime | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("postgresql://u:secret-pw@h:6432/pgbouncer", "must be PgBouncer's console"),
        ("pgbouncer://u:secret-pw@h:6432/app", "console database 'pgbouncer'"),
        ("pgbouncer://:secret-pw@h:6432/pgbouncer", "has no user"),
        ("pgbouncer//u:secret-pw@h", "not a database URL"),
    ],
)
def test_pooler_urls_that_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_pooler_url(text)
    assert "secret-pw" not in str(caught.value)


def test_pooler_url_defaults() -> None:
    url = parse_pooler_url("pgbouncer://stats:pw@Pool.internal")
    assert (url.host, url.port, url.database, url.user) == (
        "pool.internal",
        6432,
        "pgbouncer",
        "stats",
    )


# -- the drain across runs, on a fake clock ---------------------------------------------

POOLER = "pgbouncer 10.0.0.5:6432"


def server(pid: int, request: str, database: str = "shop") -> dict[str, Any]:
    """One of app_blue's server connections as SHOW SERVERS lists it (opened at 09:00)."""
    return row(
        "app_blue", request, database=database, addr="10.0.0.2", port=5432,
        local_port=40000 + pid, remote_pid=pid, connect_time="2026-11-30 09:00:00 UTC",
        state="idle",
    )  # fmt: skip


def bouncer(*servers: dict[str, Any]) -> list[Reading]:
    """The drain's reading of PgBouncer with *servers* (what instances/pooled.py makes of
    its observation): no clients, the newest request as its counter."""
    view = user_view("app_blue", [row("stats", "10:30:00")], servers, wall_now=0.0)
    newest = "" if view.newest is None else view.newest.isoformat()
    return [Reading(POOLER, view.clients, {SIGNAL: newest}, servers=view.servers)]


def after_a_run(*servers: dict[str, Any]) -> Evidence:
    """The evidence a run kept that saw *servers* from t=2 to t=4 (a 3 s window needed:
    it paused before the end), stored and read back as in the state."""
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=5.0)
    statuses = [trk.observe(t, bouncer(*servers)) for t in (2.0, 3.0, 4.0)]
    assert statuses[-1].verdict is Verdict.QUIET and statuses[-1].quiet == 1.0
    return Evidence.from_dict(trk.evidence("app_blue").to_dict())


def next_run(kept: Evidence, *servers: dict[str, Any]) -> list[DrainStatus]:
    """A run from t=30 on (past the timeout) that sees *servers*: its samples until DONE."""
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=5.0, evidence=kept)
    out = []
    for t in (30.0, 31.0, 34.0):
        out.append(trk.observe(t, bouncer(*servers)))
        if out[-1].verdict is Verdict.DONE:
            break
    return out


POLICY = DrainPolicy(client_ttl=1.0, quiet=3.0)
#: A used long ago, B last (the newest request, in another database).
A, B = server(7, "09:59:00"), server(8, "10:00:05", "reports")


def test_a_server_connection_closed_or_used_between_two_runs_is_no_quiet() -> None:
    """Between two runs the counters compare only the newest request: A serving one and
    closing, while B (newer) stays open, leaves them as they were. The marks the evidence
    keeps of each connection tell: the window the last run began does not carry over
    (unknown, not use: past the timeout the run goes on and reports no use)."""
    kept = after_a_run(A, B)
    assert len(kept.servers[POOLER]) == 16  # two marks of 8 characters
    # Unchanged: the window the last run began carries over, DONE at once.
    assert [s.verdict for s in next_run(kept, A, B)] == [Verdict.DONE]
    assert [s.verdict for s in next_run(kept, B, A)] == [Verdict.DONE]  # in any order
    for servers in ([B], [server(7, "10:00:05"), B]):  # A closed; A served a request
        first, *rest = next_run(kept, *servers)
        assert first.reasons == (
            f"1 server connection(s) of the old user on {POOLER} closed or served a request "
            f"since the last run: what they ran cannot be told",
        )
        assert first.verdict is Verdict.IN_USE and first.quiet == 0.0
        assert first.used_late == ()  # no use
        assert [s.verdict for s in rest] == [Verdict.QUIET, Verdict.DONE]
    # Both gone (PgBouncer restarted, or closed them all): the same, counted.
    assert next_run(kept)[0].reasons[-1].startswith("2 server connection(s) of the old user")
    # One opened since is a login: its request is newer than any, which the counter sees
    # (use); it takes none of the kept ones away.
    first = next_run(kept, A, B, server(9, "10:20:00"))[0]
    assert first.reasons == (f"the counters on {POOLER} changed since the last run",)
    # A run that did not read PgBouncer keeps the earlier run's marks for the next one.
    trk = DrainTracker(POLICY, switched_at=0.0, timeout_at=5.0, evidence=kept)
    trk.observe(30.0, [Reading(POOLER, error="connection refused")])
    assert trk.evidence("app_blue").servers == kept.servers
    # An evidence without marks (kept before them, or the drain ended the connections
    # itself): nothing to compare.
    kept.servers = {}
    assert [s.verdict for s in next_run(kept, B)] == [Verdict.DONE]


def test_many_server_connections_are_kept_as_one_digest() -> None:
    """The state holds 4 KB: 32 connections are 32 marks (256 characters), more one
    digest of all of them, which any change makes unknown."""
    many = [server(100 + n, "09:30:00") for n in range(33)]
    assert len(after_a_run(*many[:32]).servers[POOLER]) == 32 * 8
    kept = after_a_run(*many)
    assert kept.servers[POOLER].startswith("*") and len(kept.servers[POOLER]) == 9
    assert len(json.dumps(kept.to_dict())) < 200
    assert [s.verdict for s in next_run(kept, *reversed(many))] == [Verdict.DONE]
    first = next_run(kept, *many[1:])[0]
    assert first.reasons == (
        f"some server connections of the old user on {POOLER} closed or served a request "
        f"since the last run: what they ran cannot be told",
    )


# -- a real PgBouncer -----------------------------------------------------------------


def test_init_registers_pgbouncer_with_its_secret_off_the_command_line(
    app: App,
    pgbouncer: PrivatePgbouncer,
    sqlite_store: SqliteStore,
    layout: Layout,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    console = pgbouncer.console_url()
    monkeypatch.setenv("CREDFLIP_POOLER_URL", console.secret)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    monkeypatch.setenv("CREDFLIP_WRITER_URL", pooled(pgbouncer, app).secret)
    result = cli("init", "--env", layout.env, "--store", sqlite_store.url)
    assert result.code == 0, result.err
    assert not result.argv_warnings
    assert f"PgBouncer console stored in {layout.pooler_url} ({console})" in result.out
    stored = dict(dump(sqlite_store))
    assert DbUrl.parse(stored[layout.pooler_url]) == console
    with sqlite3.connect(sqlite_store.path) as conn:
        secure = conn.execute("SELECT secure FROM params WHERE name = ?", (layout.pooler_url,))
        assert secure.fetchone() == (1,)
    # PgBouncer's address is the pooler, not an instance the drain logs in to.
    address = f"{pgbouncer.host}:{pgbouncer.port}"
    drain_view = result.out.split("drain signals:")[1].splitlines()
    assert [line for line in drain_view if address in line] == [
        f"  {address} (pgbouncer pooler): pgbouncer clients, pgbouncer server requests"
    ]
    status = cli("status", "--env", layout.env, "--store", sqlite_store.url, "--json")
    assert status.code == 0, status.err
    found = json.loads(status.out)["drain"]["instances"]
    assert [(i["address"], i["role"]) for i in found] == [
        (f"{app.admin_url.host}:{app.admin_url.port}", "primary"),
        (address, "pooler"),
    ]
    for secret in (pgbouncer.stats_password, app.password, app.cluster.admin_password):
        assert secret not in result.text + status.text

    def blue_sessions() -> list[tuple[str, int]]:
        shown = cli("status", "--env", layout.env, "--store", sqlite_store.url, "--json")
        return [
            (i["role"], i["sessions"]["blue"]) for i in json.loads(shown.out)["drain"]["instances"]
        ]

    # A client connected to PgBouncer is a session there; the server connection PgBouncer
    # opened for it (idle between transactions) is not one on the server.
    with client(pooled(pgbouncer, app)) as conn:
        conn.execute("SELECT 1")
        assert len(pgbouncer.servers_of(app.user)) == 1
        assert blue_sessions() == [("primary", 0), ("pooler", 1)]
    assert len(pgbouncer.servers_of(app.user)) == 1  # kept by PgBouncer
    assert blue_sessions() == [("primary", 0), ("pooler", 0)]
    # Without the admin URL status names what the URLs name: PgBouncer.
    monkeypatch.delenv("CREDFLIP_ADMIN_URL")
    shown = cli("status", "--env", layout.env, "--store", sqlite_store.url, "--json")
    instances = json.loads(shown.out)["drain"]["instances"]
    assert [(i["address"], i["role"]) for i in instances] == [(address, "pooler")]


def test_init_refuses_a_console_that_does_not_let_it_in_and_changes_nothing(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    wrong = pgbouncer.console_url().with_credentials("cft_pgb_stats", "not-the-password")
    through = pgbouncer.url(app.user, app.password, app.database)
    cases = [
        (wrong.secret, "refused user 'cft_pgb_stats'"),
        (app.admin_url.secret.replace("postgresql:", "pgbouncer:"), "console database"),
        (DbUrl("pgbouncer", "127.0.0.1", "x", "y", 1, "pgbouncer").secret, "cannot connect"),
    ]
    before = dump(sqlite_store)
    for pooler, message in cases:
        result = cli(
            "init", "--env", layout.env, "--store", sqlite_store.url,
            "--admin-url", app.admin_url.secret, "--writer-url", through.secret,
            "--pooler", pooler,
        )  # fmt: skip
        assert result.code != 0
        assert result.err.count("\n") == 1 and result.err.startswith("credflip: error: ")
        assert message in result.err, result.err
        assert "not-the-password" not in result.err and app.password not in result.err
    assert dump(sqlite_store) == before
    with app.su() as conn:
        assert not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [app.green]).fetchall()


def test_an_admin_url_through_pgbouncer_is_refused(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    admin = pgbouncer.url(app.admin_url.user, app.admin_url.password, app.database)
    result = cli(
        "init", "--env", layout.env, "--store", sqlite_store.url, "--admin-url", admin.secret,
        "--writer-url", pooled(pgbouncer, app).secret,
        "--pooler", pgbouncer.console_url().secret,
    )  # fmt: skip
    assert result.code == 2
    assert "the admin URL goes through PgBouncer" in result.err
    assert dump(sqlite_store) == []


def test_save_pooler_url_refuses_pgbouncer_when_the_stored_admin_url_goes_through_it(
    app: App, pgbouncer: PrivatePgbouncer, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """An env whose stored admin URL names PgBouncer's address: registering PgBouncer later
    is refused as init refuses it, before anything is stored (every rotate would refuse)."""
    common = ["--env", layout.env, "--store", sqlite_store.url]
    through = pooled(pgbouncer, app)
    init = cli("init", *common, "--admin-url", app.admin_url.secret, "--writer-url", through.secret)
    assert init.code == 0, init.err
    admin = pgbouncer.url(app.admin_url.user, app.admin_url.password, app.database)
    sqlite_store.put(layout.admin_url, admin.secret, secure=True)
    before = dump(sqlite_store)
    result = cli("save-pooler-url", *common, "--pooler", pgbouncer.console_url().secret)
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and result.err.startswith("credflip: error: ")
    assert "the admin URL goes through PgBouncer" in result.err
    assert app.admin_url.password not in result.text
    assert dump(sqlite_store) == before


def authid(app: App, user: str) -> str:
    with app.su() as conn:
        found = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [user])
        value = found.fetchone()
    assert value is not None and value[0]
    return str(value[0])


def test_auth_file_mode_verify_stops_until_pgbouncer_knows_the_new_color(
    cluster: Cluster, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """A PgBouncer that knows users only from its auth_file: the new color cannot log in
    through it until the operator puts pooler-userlist's lines there and reloads."""
    app = make_app(cluster)
    with PrivatePgbouncer(cluster, "session", auth_query=False) as pgb:
        pgb.set_users(f'"{app.user}" "{authid(app, app.user)}"')
        common = ["--env", layout.env, "--store", sqlite_store.url]
        result = cli(
            "init", *common, "--admin-url", app.admin_url.secret,
            "--writer-url", pooled(pgb, app).secret, "--pooler", pgb.console_url().secret,
        )  # fmt: skip
        assert result.code == 0, result.err
        rotate = ["rotate", *common, "--admin-url", app.admin_url.secret, "--client-ttl", "0s"]
        rotate += ["--quiet", "1s", "--replica-lag-timeout", "1s", "--yes"]
        failed = cli(*rotate)
        assert failed.code == 1
        line = failed.err.strip().splitlines()[-1]
        assert line.startswith("credflip: error: verify failed for the green writer URL through")
        assert "SASL authentication failed for user" in line
        assert f"credflip pooler-userlist --env {layout.env}" in line and "RELOAD" in line
        assert "The pointer still names blue" in line
        # The password itself works: the rotation waits in verify, with the same one.
        state = load_state(sqlite_store, layout)
        assert state.current is not None and state.current.phase is Phase.VERIFY
        assert sqlite_store.get(layout.pointer) == "blue"
        green_url = DbUrl.parse(sqlite_store.get(layout.url(Color.GREEN, "writer")) or "")
        with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
            client(green_url).close()

        listed = cli("pooler-userlist", *common)
        assert listed.code == 0, listed.err
        lines = listed.out.splitlines()
        assert lines[0].startswith(f"# {app.user} (blue): credflip has not set its password")
        assert lines[1] == f'"{app.green}" "{authid(app, app.green)}"'
        pgb.set_users(f'"{app.user}" "{authid(app, app.user)}"', lines[1])

        done = cli(*rotate)
        assert done.code == 0, done.err
        assert sqlite_store.get(layout.pointer) == "green"
        assert sqlite_store.get(layout.url(Color.GREEN, "writer")) == green_url.secret
        with client(green_url) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (app.green,)
        # Nothing printed a password; the verifier only where it was asked for.
        for out in (result, failed, listed, done):
            assert green_url.password is not None and green_url.password not in out.text
            assert app.password not in out.text and pgb.stats_password not in out.text
        assert authid(app, app.green) not in failed.text + done.text


def test_pooler_userlist_before_and_after_rotations(
    app: App,
    pgbouncer: PrivatePgbouncer,
    sqlite_store: SqliteStore,
    layout: Layout,
    cli: Any,
) -> None:
    common = ["--env", layout.env, "--store", sqlite_store.url]
    init = cli(
        "init", *common, "--admin-url", app.admin_url.secret,
        "--writer-url", pooled(pgbouncer, app).secret,
    )  # fmt: skip
    assert init.code == 0, init.err
    missing = cli("pooler-userlist", *common)
    assert missing.code == 1 and "has no PgBouncer" in missing.err
    saved = cli("save-pooler-url", *common, "--pooler", pgbouncer.console_url().secret)
    assert saved.code == 0, saved.err
    assert "PgBouncer 1." in saved.out and pgbouncer.stats_password not in saved.text
    rotate = ["rotate", *common, "--admin-url", app.admin_url.secret, "--client-ttl", "0s"]
    rotate += ["--quiet", "1s", "--yes"]
    for _ in range(2):
        assert cli(*rotate).code == 0
    lines = cli("pooler-userlist", *common).out.splitlines()
    # Both colors' secrets are the server's own, the active color first.
    assert lines == [
        f'"{app.user}" "{authid(app, app.user)}"',
        f'"{app.green}" "{authid(app, app.green)}"',
    ]
