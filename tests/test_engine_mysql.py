"""What is particular to MySQL/MariaDB, on the machine's MariaDB with a non-root admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql
import pytest
from apps import MyApp, make_my_app
from clusters import Mariadb
from faults import wait_for
from helpers import connects, fresh, login_error, observe_with, stored_url
from servers import MY_ADMIN

from credflip import commands
from credflip.drain import Verdict
from credflip.engines import engine_for
from credflip.engines.mysql import MysqlEngine, native_password_hash
from credflip.engines.mysql.signals import group_threads
from credflip.errors import RotationError
from credflip.layout import Color, Layout
from credflip.rotation import DrainProgress, Event, RotateOptions, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl
from credflip.urls import pymysql_kwargs as my_connect_kwargs


def opts(**kwargs: object) -> RotateOptions:
    kwargs.setdefault("client_ttl", 0.1)
    kwargs.setdefault("quiet", kwargs["client_ttl"])
    return RotateOptions(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def my_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "params.db")


def engine(app: MyApp) -> MysqlEngine:
    eng = engine_for(app.admin_url)
    assert isinstance(eng, MysqlEngine)
    return eng


def create_user_text(app: MyApp, user: str, host: str) -> str:
    """SHOW CREATE USER without credentials, lock state and the user's name."""
    from credflip.engines.mysql.plan import IDENTIFIED as _IDENTIFIED

    text = str(app.mariadb.sql("SHOW CREATE USER %s@%s", args=(user, host))[0][0])
    text = _IDENTIFIED.sub("", text).replace(" ACCOUNT LOCK", "").replace(" ACCOUNT UNLOCK", "")
    return text.replace(f"`{user}`@", "<user>@")


def test_native_password_hash_matches_the_server(mariadb: Mariadb) -> None:
    assert mariadb.sql("SELECT PASSWORD('abc')")[0][0] == native_password_hash("abc")


def test_every_host_pattern_rights_tls_and_limits_are_copied(
    mariadb: Mariadb, my_store: SqliteStore
) -> None:
    app = make_my_app(mariadb, hosts=("%", "10.0.%"))
    role = f"cftrole_{app.user}"
    db = app.database
    mariadb.sql(
        f"CREATE ROLE `{role}`",
        f"GRANT SELECT ON `{db}`.* TO `{role}`",
        f"GRANT `{role}` TO '{MY_ADMIN}'@'%' WITH ADMIN OPTION",
        # MariaDB lets only who may write mysql.* set another user's default role.
        f"GRANT UPDATE ON mysql.* TO '{MY_ADMIN}'@'%'",
        f"GRANT `{role}` TO '{app.user}'@'%'",
        f"SET DEFAULT ROLE `{role}` FOR '{app.user}'@'%'",
        f"GRANT UPDATE (color) ON `{db}`.orders TO '{app.user}'@'%'",
        f"GRANT EXECUTE ON PROCEDURE `{db}`.add_numbers TO '{app.user}'@'%'",
        f"GRANT SELECT ON `{db}`.invoices TO '{app.user}'@'%' WITH GRANT OPTION",
        f"ALTER USER '{app.user}'@'10.0.%' REQUIRE SSL",
        f"ALTER USER '{app.user}'@'%' WITH MAX_USER_CONNECTIONS 40 MAX_QUERIES_PER_HOUR 90000",
    )
    layout = Layout("hosts")
    commands.init(my_store, layout, admin_url=app.admin_url, writer_url=app.url)
    with engine(app) as eng:
        assert eng.user_state(app.green).exists and not eng.user_state(app.green).can_login
        blue = eng.normalized_grants(app.user)
        assert set(blue) == {"%", "10.0.%"}
        text = "\n".join(blue["%"])
        for expected in (
            f"GRANT `{role}` TO <grantee>",
            "UPDATE (`color`)",
            "EXECUTE ON PROCEDURE",
            "WITH GRANT OPTION",
            f"SET DEFAULT ROLE `{role}` FOR <grantee>",
        ):
            assert expected in text
        assert eng.normalized_grants(app.green) == blue
    for host in ("%", "10.0.%"):
        assert create_user_text(app, app.green, host) == create_user_text(app, app.user, host)
    assert "REQUIRE SSL" in create_user_text(app, app.green, "10.0.%")
    assert "MAX_USER_CONNECTIONS 40" in create_user_text(app, app.green, "%")

    rotate(my_store, layout, admin_url=app.admin_url, options=opts())
    green = fresh(my_store, layout)
    assert app.execute(green.writer_url, "SELECT CURRENT_ROLE()")[0][0] == role
    # The active user loses a host pattern and a right: the next sync follows.
    mariadb.sql(
        f"DROP USER '{app.green}'@'10.0.%'",
        f"REVOKE EXECUTE ON PROCEDURE `{db}`.add_numbers FROM '{app.green}'@'%'",
    )
    rotate(my_store, layout, admin_url=app.admin_url, options=opts())
    with engine(app) as eng:
        assert set(eng.normalized_grants(app.user)) == {"%"}
        assert eng.normalized_grants(app.user) == eng.normalized_grants(app.green)
        assert "EXECUTE" not in "\n".join(eng.normalized_grants(app.user)["%"])


def test_definer_view_survives_lock_and_blocks_drop(
    mariadb: Mariadb, my_store: SqliteStore
) -> None:
    app = make_my_app(mariadb)  # its view and procedure have DEFINER app@%
    layout = Layout("definer")
    commands.init(my_store, layout, admin_url=app.admin_url, writer_url=app.url)
    with pytest.raises(RotationError, match="is the DEFINER of") as info:
        rotate(my_store, layout, admin_url=app.admin_url, options=opts(retire="drop"))
    message = str(info.value)
    assert f"procedure {app.database}.add_numbers" in message
    assert f"view {app.database}.big" in message
    assert "--retire lock" in message
    state = load_state(my_store, layout)
    assert state.current is not None and state.current.phase.value == "retire"
    assert app.user_exists(app.user) and connects(fresh(my_store, layout).writer_url)
    # Resumed with the default retire: blue is locked, not dropped.
    resumed = rotate(my_store, layout, admin_url=app.admin_url, options=opts())
    assert resumed.finished and resumed.resumed
    assert app.locked_marker in login_error(app.url)
    green = fresh(my_store, layout)
    # The view and procedure run with their definer's rights: the lock does not break them.
    assert app.execute(green.writer_url, "SELECT COUNT(*) FROM big")[0][0] == 1
    assert app.execute(green.writer_url, "CALL add_numbers(2, 3)")[0][0] == 5


def test_drop_when_nothing_depends_on_the_user(mariadb: Mariadb, my_store: SqliteStore) -> None:
    app = make_my_app(mariadb, rich=False)
    layout = Layout("dropme")
    commands.init(my_store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotate(my_store, layout, admin_url=app.admin_url, options=opts(retire="drop"))
    assert not app.user_exists(app.user)
    rotate(my_store, layout, admin_url=app.admin_url, options=opts(retire="drop"))
    assert app.user_exists(app.user) and not app.user_exists(app.green)
    assert fresh(my_store, layout).user == app.user


def test_plaintext_never_reaches_the_general_log(mariadb: Mariadb, my_store: SqliteStore) -> None:
    app = make_my_app(mariadb, rich=False)
    layout = Layout("genlog")
    commands.init(my_store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotate(my_store, layout, admin_url=app.admin_url, options=opts())
    password = stored_url(my_store, layout, Color.GREEN).password
    assert password
    log = app.server_log()
    assert native_password_hash(password) in log  # the server saw the hash
    assert password not in log


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mariadb"])
def test_schemes_are_written_back_as_given(
    mariadb: Mariadb, my_store: SqliteStore, scheme: str
) -> None:
    app = make_my_app(mariadb, rich=False)
    layout = Layout(f"scheme-{scheme.replace('+', '-')}")
    given = DbUrl(scheme, app.url.host, app.user, app.password, app.url.port, app.database)
    commands.init(my_store, layout, admin_url=app.admin_url, writer_url=given)
    rotate(my_store, layout, admin_url=app.admin_url, options=opts())
    green = stored_url(my_store, layout, Color.GREEN)
    assert green.scheme == scheme and green.user == app.green
    assert connects(green)


def test_sessions_by_client_and_kill(mariadb: Mariadb) -> None:
    app = make_my_app(mariadb, rich=False)
    conns = [app.open(app.url) for _ in range(3)]
    try:
        with engine(app) as eng:
            sample = eng.sessions(app.user)
            assert sample.count == 3 and sample.groups[0].client == "127.0.0.1"
            # performance_schema is off here: no program names.
            assert [(g.application, g.database) for g in sample.groups] == [("", app.database)]
            group = sample.groups[0]
            assert group.started is None and group.idle_for is not None  # TIME: no start time
            # A thread asleep inside an open transaction is not idle (ending it loses work).
            # InnoDB refreshes what INNODB_TRX shows only after 0.1 s without a
            # read of it: poll slower than that.
            conns[0].cursor().execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            wait_for(
                lambda: eng.sessions(app.user).groups[0].idle_for is None,
                timeout=5,
                what="the open transaction shown",
                interval=0.15,
            )
            assert eng.sessions(app.user).count == 3
            conns[0].rollback()
            wait_for(
                lambda: eng.sessions(app.user).groups[0].idle_for is not None,
                timeout=5,
                what="the transaction's end shown",
                interval=0.15,
            )
            observed = eng.observe(app.user)
            assert observed.statements == ()
            uptime = mariadb.sql("SHOW GLOBAL STATUS LIKE 'Uptime'")[0][1]
            now = mariadb.sql("SELECT UNIX_TIMESTAMP()")[0][0]
            assert observed.started == pytest.approx(float(now) - float(uptime), abs=2)
            assert eng.terminate(app.user) == 3
            # KILL returns before the thread is gone: a busy server lists it a
            # moment longer (seen once in a full CI run).
            wait_for(lambda: eng.sessions(app.user).count == 0, timeout=10, what="killed")
    finally:
        for conn in conns:
            conn.close()


def test_sessions_name_the_program_with_performance_schema(mariadb_ps: Mariadb) -> None:
    app = make_my_app(mariadb_ps, rich=False)
    kwargs = my_connect_kwargs(app.url)
    cron = pymysql.connect(**kwargs, autocommit=True, program_name="billing-cron")
    other = pymysql.connect(**{**kwargs, "database": None}, program_name="report")
    try:
        with engine(app) as eng:
            groups = {(g.application, g.database): g for g in eng.sessions(app.user).groups}
            assert set(groups) == {("billing-cron", app.database), ("report", "")}
            assert all(g.client == "127.0.0.1" and g.count == 1 for g in groups.values())
    finally:
        cron.close()
        other.close()


def test_a_closing_thread_keeps_the_program_it_was_listed_with() -> None:
    # Seen on MariaDB: a thread that is closing is listed for a moment after its
    # connection attributes are gone (about 1 in 35 closing threads, polling every 9 ms).
    host, db = "10.0.0.5", "shop"
    first = [(7, host, "billing-cron", db, 0), (8, host, "", db, None), (9, host, "", db, 4)]
    groups, named = group_threads(first, {})
    assert [(g.application, g.count, g.idle_for) for g in groups] == [
        ("", 2, None),  # one of them busy
        ("billing-cron", 1, 0.0),
    ]
    assert named == {7: "billing-cron"}
    closing = [(7, host, "", db, 1), (8, host, "", db, 2), (9, host, "", db, 5)]
    groups, named = group_threads(closing, named)
    assert [(g.application, g.count, g.idle_for) for g in groups] == [
        ("", 2, 2.0),
        ("billing-cron", 1, 1.0),
    ]
    assert {g.client for g in groups} == {host} and {g.database for g in groups} == {db}
    # A thread gone is forgotten: ids start over with the server.
    assert group_threads([], named) == ([], {})
    (group,), _ = group_threads([(7, host, "", db, 0)], {})
    assert group.application == ""


def test_a_login_count_never_runs_ahead_of_the_processlist(mariadb_ps: Mariadb) -> None:
    """A client that logs in while an observation reads, wherever among its statements:
    when the login count counts it, the processlist lists it (read in the other order, the
    legacy log takes its login for another client)."""
    app = make_my_app(mariadb_ps, rich=False)
    key = "performance_schema.accounts"
    opened: list[Any] = []

    def logins(observation: Any) -> int:
        return int(observation.counters[key][0])

    with engine(app) as eng:
        eng.observe(app.user)  # what it finds once per connection
        _, reads = observe_with(eng, app.user, -1, lambda: None)  # what it sends each time
        counted = []
        for before in range(reads):
            baseline = eng.observe(app.user)
            assert baseline.sessions.count == 0
            seen, _ = observe_with(eng, app.user, before, lambda: opened.append(app.open(app.url)))
            if logins(seen) != logins(baseline):
                counted.append(before)
                assert seen.sessions.count == 1, f"counted before read {before}, not listed"
            opened.pop().close()
            wait_for(lambda: eng.sessions(app.user).count == 0, timeout=10, what="thread gone")
        assert counted and counted[0] == 0  # a login before any read is counted


def test_a_login_between_two_samples_still_counts(mariadb_ps: Mariadb, tmp_path: Path) -> None:
    app = make_my_app(mariadb_ps, rich=False)
    with engine(app) as eng:
        before = eng.observe(app.user)
        key = "performance_schema.accounts"
        assert key in before.counters and before.sessions.count == 0
        app.open(app.url).close()  # in and out, never seen in the processlist
        # The server ends the thread just after the client hung up (a loaded
        # machine lists it a moment longer): sample once it is gone.
        wait_for(lambda: eng.sessions(app.user).count == 0, timeout=10, what="thread gone")
        after = eng.observe(app.user)
        assert after.sessions.count == 0
        assert after.counters[key] != before.counters[key]
        assert after.counters[key][0] == before.counters[key][0] + 1  # type: ignore[index]

    store = SqliteStore(tmp_path / "p.db")
    layout = Layout("ps")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    quiet: list[float] = []
    sneaked = []

    def sneak(event: Event) -> None:
        if isinstance(event, DrainProgress):
            quiet.append(event.status.quiet)
            # On a QUIET verdict (not DONE: a slow sampler may reach DONE at the
            # first quiet sample, and then the rotation has already decided).
            if event.status.verdict is Verdict.QUIET and not sneaked:
                # A straggler logs in and out between two samples of the drain.
                app.open(app.url).close()
                sneaked.append(len(quiet))

    result = rotate(
        store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.3), on_event=sneak
    )
    assert result.finished and sneaked
    # The very next sample saw the rise in TOTAL_CONNECTIONS: the quiet window restarted.
    assert quiet[sneaked[0]] == 0.0
