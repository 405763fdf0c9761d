"""The command line: bad input, output formats, and that secrets never show."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from apps import App, MyApp, my_hash
from helpers import command, dump, leaks, stored_url

from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.state import load_state
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl


def store_rows(store: Store) -> list[tuple[str, str]]:
    return dump(store)


@pytest.fixture
def app(any_app: App | MyApp) -> App | MyApp:
    """The CLI suite runs on both engines (and, through ``store``, both stores)."""
    return any_app


def roles(app: App | MyApp) -> list[tuple[Any, ...]]:
    """Every account and its credentials: to show that a command changed nothing."""
    if isinstance(app, MyApp):
        return sorted(app.mariadb.sql("SELECT User, Host, Priv FROM mysql.global_priv"))
    with app.cluster.su() as conn:
        return conn.execute(
            "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid ORDER BY 1"
        ).fetchall()


@pytest.fixture
def ready(app: App | MyApp, store: SqliteStore, layout: Layout, cli: Any) -> dict[str, str]:
    result = cli(*command("init", app, store, layout, "--writer-url", app.url.secret))
    assert result.code == 0, result.err
    return {"env": layout.env, "store": store.url, "admin": app.admin_url.secret}


def bad_inputs(app: App | MyApp, ready: dict[str, str]) -> list[tuple[list[str], int, str]]:
    env, st, admin = ready["env"], ready["store"], ready["admin"]
    common = ["--env", env, "--store", st]
    closed_port = app.admin_url.render(show_password=True).replace(f":{app.admin_url.port}/", ":1/")
    wrong_pw = app.admin_url.with_credentials(app.admin_url.user, "wrong-password").secret
    return [
        (["status", "--env", "nope", "--store", st], 1, "not managed by credflip"),
        (
            ["rotate", "--env", "nope", "--store", st, "--admin-url", admin, "--yes"],
            1,
            "run 'credflip init",
        ),
        (["rotate", *common, "--admin-url", "not-a-url", "--yes"], 2, "not a database URL"),
        (["rotate", *common, "--admin-url", "postgresql://a:b@/x", "--yes"], 2, "has no host"),
        (
            [
                "init",
                "--env",
                "fresh",
                "--store",
                st,
                "--admin-url",
                admin,
                "--writer-url",
                "postgresql://u:p@h:notaport/db",
            ],
            2,
            "invalid port",
        ),
        (
            ["init", "--env", "fresh", "--store", st, "--admin-url", admin],
            2,
            "--writer-url is required",
        ),
        (
            [
                "init",
                "--env",
                "fresh",
                "--store",
                st,
                "--admin-url",
                admin,
                "--writer-url",
                "postgresql://nopassword@h/db",
            ],
            2,
            "must hold the user and password",
        ),
        (["status", "--env", "bad env", "--store", st], 2, "invalid env name"),
        (["status", "--env", "../etc", "--store", st], 2, "invalid env name"),
        (["status", *common, "--prefix", "db"], 2, "invalid prefix"),
        (
            ["rotate", *common, "--admin-url", admin, "--client-ttl", "10", "--yes"],
            2,
            "invalid --client-ttl",
        ),
        (
            ["rotate", *common, "--admin-url", admin, "--drain-timeout", "soon", "--yes"],
            2,
            "invalid --drain-timeout",
        ),
        (
            ["rotate", *common, "--admin-url", admin, "--retire", "burn", "--yes"],
            2,
            "Invalid value for '--retire'",
        ),
        (["rotate", "--store", st, "--admin-url", admin], 2, "Missing option '--env'"),
        (
            ["rotate", *common, "--admin-url", admin, "--min-drain", "-1s", "--yes"],
            2,
            "invalid --min-drain",
        ),
        (
            ["rotate", *common, "--admin-url", admin, "--instance", "db 2:5432", "--yes"],
            2,
            "invalid --instance",
        ),
        (
            ["rotate", *common, "--admin-url", admin, "--instance", "db-2:99999", "--yes"],
            2,
            "invalid --instance",
        ),
        (
            [
                "rotate",
                *common,
                "--admin-url",
                admin,
                "--sessions-only",
                "--require-counters",
                "--yes",
            ],
            2,
            "pass one of them",
        ),
        # A replica nobody can reach: refused before anything changes.
        (
            ["rotate", *common, "--admin-url", admin, "--instance", "127.0.0.1:1", "--yes"],
            1,
            "cannot check whether the inactive user",
        ),
        (
            ["rotate", *common, "--admin-url", closed_port, "--reconnect-timeout", "0s", "--yes"],
            1,
            "cannot connect",
        ),
        (["rotate", *common, "--admin-url", wrong_pw, "--yes"], 1, app.wrong_password_marker),
        (
            ["init", *common, "--admin-url", admin, "--writer-url", app.url.secret],
            1,
            "already managed",
        ),
        (
            [
                "init",
                "--env",
                "fresh",
                "--store",
                "sqlite:////etc/passwd/sub/params.db",
                "--admin-url",
                admin,
                "--writer-url",
                app.url.secret,
            ],
            1,
            "cannot open the store file",
        ),
        (
            ["status", "--env", env, "--store", "sqlite:////etc/passwd/sub/params.db"],
            1,
            "does not exist",
        ),
        (["status", "--env", env, "--store", "redis://x"], 2, "unknown store scheme"),
        (["unlock", *common], 2, "add --force"),
    ]


def test_bad_input_is_one_line_nonzero_and_changes_nothing(
    app: App | MyApp, store: SqliteStore, ready: dict[str, str], cli: Any
) -> None:
    before = (store_rows(store), roles(app))
    for args, code, message in bad_inputs(app, ready):
        result = cli(*args)
        assert result.code == code, (args, result.err)
        assert result.out == "", (args, result.out)
        assert result.err.count("\n") == 1, (args, result.err)
        assert result.err.startswith("credflip: error: "), (args, result.err)
        assert message in result.err, (args, result.err)
        assert app.password not in result.err and "wrong-password" not in result.err
    assert (store_rows(store), roles(app)) == before


def test_admin_without_the_right_to_create_users_is_refused(
    plain_app: App | MyApp, store: SqliteStore, layout: Layout, cli: Any
) -> None:
    app = plain_app
    weak_name = f"cft_weak_{app.user}"
    if isinstance(app, MyApp):
        app.mariadb.sql(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s",
            args=(weak_name, my_hash("weak-password-123")),
        )
        app.mariadb.sql(f"GRANT SELECT ON mysql.* TO '{weak_name}'@'%'")
        app.mariadb.sql(f"GRANT SELECT ON `{app.database}`.* TO '{weak_name}'@'%'")
        weak = DbUrl(
            "mysql", app.url.host, weak_name, "weak-password-123", app.url.port, app.database
        )
        expected = ["lacks CREATE USER", f"GRANT CREATE USER ON *.* TO {weak_name}"]
    else:
        app.cluster.create_role(weak_name, "weak-password-123")
        weak = app.cluster.pg.url(weak_name, "weak-password-123", app.database)
        expected = ["lacks CREATEROLE", f"ALTER ROLE {weak_name} CREATEROLE"]
    before = (store_rows(store), roles(app))
    result = cli(
        "init",
        "--env",
        layout.env,
        "--store",
        store.url,
        "--admin-url",
        weak.secret,
        "--writer-url",
        app.url.secret,
    )
    assert result.code == 1
    assert result.err.count("\n") == 1
    for text in expected:
        assert text in result.err
    assert (store_rows(store), roles(app)) == before


def test_pointer_that_is_neither_color(
    app: App | MyApp, store: SqliteStore, ready: dict[str, str], cli: Any
) -> None:
    layout = Layout(ready["env"])
    store.put(layout.pointer, "purple")
    before = (store_rows(store), roles(app))
    for args in (
        [
            "rotate",
            "--env",
            ready["env"],
            "--store",
            store.url,
            "--admin-url",
            ready["admin"],
            "--yes",
        ],
        ["resolve", "--env", ready["env"], "--store", store.url],
        ["status", "--env", ready["env"], "--store", store.url],
    ):
        result = cli(*args)
        assert result.code == 1, result.err
        assert result.err.count("\n") == 1
        assert "'purple', which is neither 'blue' nor 'green'" in result.err
    assert (store_rows(store), roles(app)) == before


def test_debug_adds_a_traceback(store: SqliteStore, cli: Any) -> None:
    result = cli("--debug", "status", "--env", "nope", "--store", store.url)
    assert result.code == 1
    assert "Traceback" in result.err and result.err.strip().endswith(
        result.err.strip().splitlines()[-1]
    )
    assert result.err.strip().splitlines()[-1].startswith("credflip: error:")


def test_outputs_and_no_secret_anywhere(
    app: App | MyApp,
    store: SqliteStore,
    ready: dict[str, str],
    cli: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    layout = Layout(ready["env"])
    common = ["--env", ready["env"], "--store", store.url]
    admin = ["--admin-url", ready["admin"]]
    texts: list[str] = []
    generated: list[str] = []

    def run(*args: str, code: int = 0) -> Any:
        result = cli(*args)
        assert result.code == code, result.err
        texts.append(result.text)
        return result

    for _ in range(2):
        run("rotate", *common, *admin, "--client-ttl", "200ms", "--quiet", "200ms", "--yes")
        active = load_state(store, layout)
        assert active.last is not None
        generated.append(stored_url(store, layout, active.last.to_color).password or "")
    # A failing probe: the error names the URL, masked.
    failed = run(
        "rotate",
        *common,
        *admin,
        "--client-ttl",
        "0s",
        "--quiet",
        "0s",
        "--probe",
        "SELECT * FROM no_such_table",
        "--yes",
        code=1,
    )
    assert "verify failed" in failed.err and ":***@" in failed.err
    assert "no_such_table" in failed.err
    generated.append(stored_url(store, layout, Color.GREEN).password or "")
    run("rollback", *common, *admin, "--yes")

    status = json.loads(run("status", *common, *admin, "--json").out)
    assert status["active"] == "blue" and status["phase"] is None
    assert {c["user"] for c in status["colors"]} == {app.user, app.green}
    assert status["colors"][0]["writer_url"].count(":***@") == 1
    run("status", *common, *admin)
    resolved = json.loads(run("resolve", *common, "--json").out)
    assert set(resolved) == {"env", "color", "writer_url", "reader_url"}
    assert resolved["writer_url"] == f"{stored_url(store, layout, Color.BLUE)}"
    history = json.loads(run("history", *common, "--json").out)
    assert [h["result"] for h in history] == ["done", "done", "rolled_back"]
    run("history", *common)
    run("resolve", *common)

    endpoints = Resolver(store=store, prefix=layout.prefix, ttl=0).resolve(layout.env)
    texts += [
        repr(endpoints),
        str(endpoints.to_dict()),
        repr(stored_url(store, layout, Color.BLUE)),
        str(stored_url(store, layout, Color.BLUE)),
        repr(load_state(store, layout)),
        repr(store),
    ]
    texts += [r.getMessage() for r in caplog.records]
    server_log = app.server_log()
    # The server did log the password changes, as hashes.
    if isinstance(app, MyApp):
        assert "ALTER USER" in server_log and "IDENTIFIED BY PASSWORD '*" in server_log
    else:
        assert "ALTER ROLE" in server_log and "SCRAM-SHA-256$" in server_log
    secrets = [p for p in generated if p] + [app.password, app.admin_url.password or ""]
    assert len(set(secrets)) == len(secrets) >= 4
    found = leaks(secrets, [*texts, server_log])
    assert not found, found

    # The scan can fail: --show-secrets really prints the password.
    shown = cli("resolve", *common, "--show-secrets", "--json")
    assert endpoints.writer_url in shown.out
    current = stored_url(store, layout, Color.BLUE).password
    assert current and current in shown.out


def test_status_without_admin_url(
    app: App | MyApp, store: SqliteStore, ready: dict[str, str], cli: Any
) -> None:
    result = cli("status", "--env", ready["env"], "--store", store.url)
    assert result.code == 0
    assert "active blue" in result.out and "no admin URL" in result.out
    assert "lock: free" in result.out
    # The env's stored drain choice needs no database to show.
    assert "sessions only: no" in result.out


def test_env_vars_stand_in_for_options(
    app: App | MyApp,
    store: SqliteStore,
    ready: dict[str, str],
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDFLIP_ENV", ready["env"])
    monkeypatch.setenv("CREDFLIP_STORE", store.url)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", ready["admin"])
    result = cli("rotate", "--client-ttl", "0s", "--quiet", "0s", "--yes")
    assert result.code == 0, result.err
    assert "blue (" in result.out and "→ green" in result.out
    assert json.loads(cli("resolve", "--json").out)["color"] == "green"


def test_admin_url_from_the_store(
    app: App | MyApp, store: SqliteStore, ready: dict[str, str], cli: Any
) -> None:
    layout = Layout(ready["env"])
    store.put(layout.admin_url, ready["admin"], secure=True)
    result = cli(
        "rotate",
        "--env",
        ready["env"],
        "--store",
        store.url,
        "--client-ttl",
        "0s",
        "--quiet",
        "0s",
        "--yes",
    )
    assert result.code == 0, result.err


def test_help_lists_every_command(cli: Any) -> None:
    result = cli("--help")
    assert result.code == 0
    names = ("init", "rotate", "status", "rollback", "resolve", "history", "unlock", "unhalt")
    for name in (*names, "demo"):
        assert name in result.out
