"""Operator safety: secrets off command lines, the stored admin URL, and the loose ends
a review found (lock release, stale locks, the pool watcher, MySQL URL options)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from apps import App, MyApp
from helpers import dump, fresh
from test_store_ssm import inject_error

from credflip import commands
from credflip.errors import DrainTimeout, UsageError
from credflip.follow import ColorWatcher
from credflip.layout import Color, Layout
from credflip.resolver import Resolver
from credflip.rotation import Notice, RotateOptions, rotate
from credflip.state import LockInfo, pid_space, read_lock
from credflip.stores.base import Store
from credflip.stores.sqlite import SqliteStore
from credflip.stores.ssm import SsmStore
from credflip.urls import DbUrl

AnyApp = App | MyApp


def secret_file(tmp_path: Path, name: str, url: DbUrl) -> Path:
    path = tmp_path / name
    path.write_text(url.secret + "\n")
    path.chmod(0o600)
    return path


def test_recommended_ways_keep_passwords_out_of_the_process_list(
    any_app: AnyApp, tmp_path: Path
) -> None:
    """``init`` reading the admin URL from stdin and the app's from a file: while it runs
    (it waits on stdin), its /proc/<pid>/cmdline holds neither password."""
    app = any_app
    store = f"sqlite:///{tmp_path}/p.db"
    writer = secret_file(tmp_path, "writer.url", app.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "credflip", "init", "--env", "proc", "--store", store,
         "--admin-url", "-", "--writer-url", f"@{writer}", "--save-admin-url"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CREDFLIP_")},
    )  # fmt: skip
    try:
        # It blocks on standard input, so it is still running: wait for its exec.
        deadline = time.monotonic() + 30
        while "credflip" not in (cmdline := Path(f"/proc/{proc.pid}/cmdline").read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        assert "init" in cmdline and f"@{writer}" in cmdline
        for password in (app.password, app.admin_url.password):
            assert password and password not in cmdline
        out, err = proc.communicate(app.admin_url.secret + "\n", timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "warning" not in err
    for password in (app.password, app.admin_url.password):
        assert password and password not in out + err
    # The stored admin URL is all `rotate` needs now; run the printed next step.
    next_line = next(line for line in out.splitlines() if line.startswith("next: "))
    assert next_line == f"next: credflip rotate --env proc --store {store}"
    done = subprocess.run(
        [sys.executable, "-m", "credflip", *next_line.removeprefix("next: credflip ").split(),
         "--client-ttl", "200ms", "--quiet", "200ms", "--yes"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CREDFLIP_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_password_in_argv_works_with_one_warning(
    app: App, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path}/p.db"
    common = ["--env", "argv", "--store", store]
    result = cli("init", *common, "--admin-url", app.admin_url.secret, "--writer-url",
                 app.url.secret)  # fmt: skip
    assert result.code == 0, result.err
    assert len(result.argv_warnings) == 2  # one per option that held a password
    assert all("@FILE" in w and "standard input" in w for w in result.argv_warnings)
    # From the environment (or a file) there is nothing to warn about.
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    quiet = cli("status", *common)
    assert quiet.code == 0 and quiet.argv_warnings == []
    admin_file = secret_file(tmp_path, "admin.url", app.admin_url)
    monkeypatch.delenv("CREDFLIP_ADMIN_URL")
    quiet = cli("status", *common, "--admin-url", f"@{admin_file}")
    assert quiet.code == 0 and quiet.argv_warnings == [] and "sessions" in quiet.out


def test_save_admin_url_checks_it_first_then_everything_finds_it(
    any_app: AnyApp, store: Store, layout: Layout, tmp_path: Path, cli: Any
) -> None:
    app = any_app
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    common = ["--env", layout.env, "--store", store.url]
    before = dump(store)
    # A URL that does not connect, or whose user lacks the rights: nothing stored.
    closed = DbUrl(app.admin_url.scheme, "127.0.0.1", "admin", "pw-not-kept", 1, "x")
    for bad, message in [(closed, "cannot connect"), (app.url, "lacks")]:
        path = secret_file(tmp_path, "bad.url", bad)
        result = cli("save-admin-url", *common, "--admin-url", f"@{path}")
        assert result.code == 1 and result.err.startswith("credflip: error:"), result.err
        assert message in result.err and result.err.count("\n") == 1
        assert bad.password not in result.err
    assert dump(store) == before
    path = secret_file(tmp_path, "admin.url", app.admin_url)
    saved = cli("save-admin-url", *common, "--admin-url", f"@{path}")
    assert saved.code == 0, saved.err
    assert app.admin_url.password not in saved.out
    assert store.get(layout.admin_url) == app.admin_url.secret
    if isinstance(store, SsmStore):
        described = store.client.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [layout.admin_url]}]
        )["Parameters"][0]
        assert described["Type"] == "SecureString"
    # rotate, status and rollback need nothing more.
    status = cli("status", *common, "--json")
    assert json.loads(status.out)["colors"][0]["exists"] is True
    assert cli("rotate", *common, "--client-ttl", "200ms", "--quiet", "200ms", "--yes").code == 0
    assert cli("rollback", *common, "--yes").code == 0
    assert fresh(store, layout).color is Color.BLUE


def test_read_only_commands_create_no_store(tmp_path: Path, cli: Any) -> None:
    missing = tmp_path / "typo" / "x.db"
    for args in (["status"], ["resolve"], ["history"], ["unlock", "--force"], ["unhalt"],
                 ["rotate", "--admin-url", "postgresql://a@127.0.0.1:1/x", "--yes"]):  # fmt: skip
        result = cli(*args, "--env", "e", "--store", f"sqlite:///{missing}")
        assert result.code == 1, (args, result.err)
        assert result.err.count("\n") == 1 and "does not exist" in result.err
    assert not (tmp_path / "typo").exists()


def test_bad_secret_inputs_are_one_line_and_change_nothing(
    app: App, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path}/p.db"
    common = ["init", "--env", "bad", "--store", store]
    empty = tmp_path / "empty.url"
    empty.write_text("\n")
    cases = [
        (["--admin-url", "-", "--writer-url", "-"], "x://u:p@h/d\n", "only one option can"),
        (["--admin-url", f"@{tmp_path}/missing.url", "--writer-url", "x"], "", "cannot read"),
        (["--admin-url", f"@{tmp_path}", "--writer-url", "x"], "", "cannot read the file"),
        (["--admin-url", f"@{empty}", "--writer-url", "x"], "", "first line is empty"),
        (["--admin-url", "-", "--writer-url", "x"], "", "standard input is empty"),
    ]
    for extra, stdin, message in cases:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        result = cli(*common, *extra)
        assert result.code == 2, (extra, result.err)
        assert result.err.count("\n") == 1 and message in result.err, (extra, result.err)
    assert not (tmp_path / "p.db").exists()  # init never got as far as the store


# -- the lock ----------------------------------------------------------------


@pytest.fixture
def ssm_store(moto_endpoint: str) -> Iterator[SsmStore]:
    st = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield st
    st.close()


def test_a_drain_timeout_stays_exit_4_when_the_lock_cannot_be_released(
    app: App, ssm_store: SsmStore, layout: Layout
) -> None:
    commands.init(ssm_store, layout, admin_url=app.admin_url, writer_url=app.url)
    notes: list[str] = []
    failing = inject_error(ssm_store, "DeleteParameter", "InternalServerError", status=500)
    with app.open(app.url), pytest.raises(DrainTimeout) as caught:
        rotate(
            ssm_store,
            layout,
            admin_url=app.admin_url,
            options=RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=0.5),
            on_event=lambda e: notes.append(e.message) if isinstance(e, Notice) else None,
        )
    assert failing["sent"] >= 1
    assert caught.value.exit_code == 4 and "drain timed out" in str(caught.value)
    assert any("could not release the lock" in n and "unlock --env" in n for n in notes)
    failing["left"] = 0
    assert read_lock(ssm_store, layout) is not None  # left behind, as the notice says


def test_release_deletes_only_the_same_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    ours, theirs = LockInfo.mine("rotate"), LockInfo.mine("rotate")
    store.put("/db/x/rotation-lock", theirs.to_json())
    assert not store.delete_if("/db/x/rotation-lock", ours.to_json())
    assert store.get("/db/x/rotation-lock") == theirs.to_json()
    assert store.delete_if("/db/x/rotation-lock", theirs.to_json())
    assert store.get("/db/x/rotation-lock") is None


def test_a_lock_from_another_pid_namespace_with_the_same_host_is_not_taken_over() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = LockInfo.mine("rotate")
    gone_here = LockInfo(**{**here.__dict__, "pid": dead.pid})
    assert gone_here.is_stale_here()  # same host, boot and namespace: its pid is gone
    elsewhere = LockInfo(**{**here.__dict__, "pid": dead.pid, "pid_space": "other/pid:[1]"})
    assert not elsewhere.is_stale_here()  # a container sharing the host name
    unknown = LockInfo(**{**here.__dict__, "pid": dead.pid, "pid_space": ""})
    assert not unknown.is_stale_here()
    assert pid_space() and here.pid_space == pid_space()


# -- the pool watcher --------------------------------------------------------


def test_the_watcher_survives_a_failing_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(tmp_path / "p.db")
    layout = Layout("watch")
    store.put(layout.pointer, "blue")
    for color in Color:
        for role in ("writer", "reader"):
            store.put(layout.url(color, role), f"postgresql://{color}:pw@db/app", secure=True)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=0)
    seen: list[Color] = []
    second = threading.Event()

    def on_change(color: Color) -> bool:
        seen.append(color)
        if len(seen) == 1:
            raise RuntimeError("pool.drain() failed")
        second.set()
        return True

    watcher = ColorWatcher(resolver, layout.env, ttl=0, on_change=on_change, interval=0.01)
    with caplog.at_level(logging.ERROR, logger="credflip.follow"):
        watcher.start(Color.BLUE)
        watcher.start(Color.BLUE)  # idempotent: still one thread
        threads = [t for t in threading.enumerate() if t.name == "credflip-watch-watch"]
        assert len(threads) == 1
        store.put(layout.pointer, "green")  # first change: the callback raises
        while not seen:
            threads[0].join(0.01)
        store.put(layout.pointer, "blue")  # the watcher is still there for the next
        assert second.wait(10)
        watcher.stop()
    assert seen == [Color.GREEN, Color.BLUE]
    assert not threads[0].is_alive()  # stop() joined it
    assert "still watching" in caplog.text and "pool.drain() failed" in caplog.text


# -- MySQL URL options -------------------------------------------------------


def test_mysql_url_options_pass_through_or_are_refused(mariadb: Any) -> None:
    from credflip.engines.mysql import MysqlEngine
    from credflip.urls import pymysql_kwargs as connect_kwargs

    base = DbUrl("mysql", "127.0.0.1", "u", "p", mariadb.port, "d")
    kwargs = connect_kwargs(
        DbUrl.parse(base.secret + "?ssl_ca=/etc/ca.pem&ssl_verify_cert=true&read_timeout=5")
    )
    assert kwargs["ssl_ca"] == "/etc/ca.pem" and kwargs["ssl_verify_cert"] is True
    assert kwargs["read_timeout"] == 5
    for query, message in [
        ("ssl=true", "option 'ssl' is not supported"),
        ("ssl-mode=REQUIRED", "option 'ssl-mode' is not supported"),
        ("ssl_verify_cert=maybe", "takes true or false"),
    ]:
        with pytest.raises(UsageError, match=message):
            connect_kwargs(DbUrl.parse(f"{base.secret}?{query}"))
    # A URL that asks for TLS never connects without it: this server has none.
    admin = mariadb.admin_url("")
    with pytest.raises(Exception, match=r"SSL|ssl|TLS"):
        MysqlEngine.client_connect(
            DbUrl.parse(admin.secret + "?ssl_ca=/etc/ssl/certs/ca-certificates.crt")
        )
    plain = MysqlEngine.client_connect(DbUrl.parse(admin.secret + "?ssl_disabled=true"))
    plain.close()
    assert isinstance(plain, pymysql.connections.Connection)
