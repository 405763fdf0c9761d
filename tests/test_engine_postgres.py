"""The PostgreSQL engine against a real server, with a non-superuser admin."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from apps import App, make_app
from clusters import PG_VERSIONS, Cluster, start_cluster
from faults import wait_for
from helpers import connects, fresh, login_error, observe_with
from psycopg import sql

from credflip import commands
from credflip.engines import engine_for
from credflip.engines.postgres import PostgresEngine, default_group
from credflip.engines.postgres import signals as pg_signals
from credflip.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    InsufficientPrivilege,
    RotationError,
)
from credflip.layout import Color, Layout
from credflip.rotation import RotateOptions, new_password, rotate
from credflip.stores.sqlite import SqliteStore


def engine(app: App) -> PostgresEngine:
    eng = engine_for(app.admin_url)
    assert isinstance(eng, PostgresEngine) and eng.name == "postgresql"
    return eng


def test_verify_distinguishes_failures(app: App, cluster: Cluster) -> None:
    with engine(app) as eng:
        eng.verify(app.url, probe="SELECT count(*) FROM orders")
        wrong = app.url.with_credentials(app.user, "definitely-wrong")
        with pytest.raises(AuthenticationFailed, match="password authentication failed") as info:
            eng.verify(wrong)
        assert "definitely-wrong" not in str(info.value)
        with pytest.raises(ConnectFailed, match="cannot connect"):
            eng.verify(
                app.url.with_credentials(app.user, app.password).__class__(
                    scheme="postgresql", host="127.0.0.1", port=1, user="x", password="y"
                )
            )
        with pytest.raises(Exception, match="probe failed"):
            eng.verify(app.url, probe="SELECT * FROM missing_table")


def test_password_reaches_the_server_only_as_a_verifier(app: App, cluster: Cluster) -> None:
    password = new_password()
    with engine(app) as eng:
        eng.adopt(active=app.user, inactive=app.green, group=None)
        eng.prepare_user(app.green, password, like=app.user, group=app.group)
        assert connects(app.url.with_credentials(app.green, password))
    log = cluster.pg.read_log()
    assert f'ALTER ROLE "{app.green}" WITH LOGIN PASSWORD \'SCRAM-SHA-256$' in log
    assert password not in log


def test_prepare_never_touches_the_active_user(app: App) -> None:
    with engine(app) as eng, pytest.raises(RotationError, match="it is the active user"):
        eng.prepare_user(app.user, new_password(), like=app.user, group=None)
    assert connects(app.url)


def test_sessions_grouped_and_terminated(app: App) -> None:
    conns = [
        psycopg.connect(app.url.secret, application_name=name) for name in ("api", "api", "worker")
    ]
    try:
        with engine(app) as eng:
            sample = eng.sessions(app.user)
            assert sample.count == 3
            assert {(g.client, g.application, g.count) for g in sample.groups} == {
                ("127.0.0.1", "api", 2),
                ("127.0.0.1", "worker", 1),
            }
            assert "2 from 127.0.0.1 (api)" in sample.describe()
            assert {g.database for g in sample.groups} == {app.database}
            server_now = conns[0].execute("SELECT extract(epoch FROM now())::float8").fetchone()
            assert server_now is not None
            for group in sample.groups:
                assert group.started is not None and group.started <= server_now[0]
                assert group.idle_for is not None and group.idle_for >= 0  # none ran anything
            # One api session holds a transaction open: that group is not idle.
            conns[0].execute("BEGIN")
            conns[0].execute("SELECT 1")
            busy = {g.application: g.idle_for for g in eng.sessions(app.user).groups}
            assert busy["api"] is None and busy["worker"] is not None
            conns[0].execute("ROLLBACK")
            assert eng.terminate(app.user) == 3
            assert eng.sessions(app.user).count == 0
        for conn in conns:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    finally:
        for conn in conns:
            conn.close()


def test_observe_names_the_statements_that_grew_and_the_server_start(
    app: App, cluster: Cluster
) -> None:
    # Statements the user ran often before: the most called in total.
    with app.connect(app.url) as conn:
        for i in range(6):
            for _ in range(30):
                conn.execute(f"SELECT {i} AS often{i}")
    with engine(app) as eng:
        first = eng.observe(app.user)
        assert first.started is not None and first.statements == ()  # no earlier one
        with cluster.su() as conn:
            row = conn.execute("SELECT extract(epoch FROM pg_postmaster_start_time())").fetchone()
            assert row is not None and first.started == pytest.approx(float(row[0]))
        # The app's user has no group role here: its statements count as its own.
        columns = ", ".join(f"total AS t{i}" for i in range(20))
        query = f"SELECT\n    {columns}\n   FROM billing.invoices   WHERE total > 1"
        with app.connect(app.url) as conn:
            for _ in range(7):
                conn.execute(query)
            conn.execute("SELECT 0 AS often0")
        after = eng.observe(app.user)
        assert after.started == first.started
        texts = dict(after.statements)
        shown = f"SELECT {columns}"[:80]  # whitespace collapsed, cut at 80
        # Ranked by what grew since the first observation, not by total calls.
        assert after.statements[0] == (shown, 7), texts
        assert texts["SELECT $1 AS often0"] == 1
        assert not [t for t in texts if "often1" in t]
        calls = [c for _, c in after.statements]
        assert calls == sorted(calls, reverse=True)
        assert eng.observe(app.user).statements == ()  # nothing since


def test_a_count_never_runs_ahead_of_the_sessions(app: App) -> None:
    """A session that starts while an observation reads, wherever it starts among the
    observation's statements: when the counters count its statement, the sessions list
    it (read in the other order, the legacy log takes its count for another client)."""
    opened: list[psycopg.Connection[Any]] = []

    def login() -> None:
        conn = app.connect(app.url)
        conn.execute("SELECT 1")
        opened.append(conn)

    with engine(app) as eng:
        eng.observe(app.user)  # what it finds once per connection
        _, reads = observe_with(eng, app.user, -1, login)  # what it sends each time
        counted = []
        for before in range(reads):
            baseline = eng.observe(app.user)
            assert baseline.sessions.count == 0
            seen, _ = observe_with(eng, app.user, before, login)
            if seen.counters != baseline.counters:
                counted.append(before)
                assert seen.sessions.count == 1, f"counted before read {before}, not listed"
            opened.pop().close()
            wait_for(lambda: eng.sessions(app.user).count == 0, timeout=10, what="session gone")
        assert counted and counted[0] == 0  # a statement before any read is counted


def test_other_users_churning_the_statements_is_no_use_of_a_user() -> None:
    """A full pg_stat_statements evicts entries of others all the time: the count of
    evictions is server-wide, so it must not make an unused user look used."""
    cl = start_cluster(PG_VERSIONS[0], **{"pg_stat_statements.max": "100"})
    try:
        app = make_app(cl, rich=False)
        idle = f"idle_{new_password()[:8].lower()}"
        with cl.su() as conn:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(idle)))

        def churn(value: str) -> int:
            # Each select list length (and constant type) is one more entry.
            with cl.su(app.database) as conn:
                for i in range(1, 151):
                    conn.execute("SELECT " + ", ".join([value] * i))
                row = conn.execute("SELECT dealloc FROM pg_stat_statements_info").fetchone()
                assert row is not None
                return int(row[0])

        with engine(app) as eng:
            before = eng.observe(idle).counters
            first = churn("1")
            between = eng.observe(idle).counters
            assert churn("true") > first > 0  # entries were evicted, twice
            assert eng.observe(idle).counters == between == before
    finally:
        cl.pg.stop()


def test_growth_by_entry_counts_a_reset_and_a_new_entry_whole() -> None:
    before = {("1", "10"): 50, ("1", "20"): 20, ("2", "10"): 5}
    after = {("1", "10"): 4, ("1", "20"): 20, ("1", "30"): 26, ("2", "10"): 6}
    assert pg_signals.grown(before, after) == {("1", "10"): 4, ("1", "30"): 26, ("2", "10"): 1}


def test_a_statement_that_spells_out_a_password_is_cut_before_it(cluster: Cluster) -> None:
    app = make_app(cluster, rich=False)
    dummy = "not-the-real-one-" + new_password()
    with engine(app) as eng:
        assert eng.observe(app.user).statements == ()
        with app.connect(app.url) as conn:
            # A utility statement's text is kept as it was sent (before 16, constants too).
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(app.user), sql.Literal(dummy)
                )
            )
        texts = [text for text, _ in eng.observe(app.user).statements]
    (alter,) = [t for t in texts if t.startswith("ALTER ROLE")]
    assert alter == "ALTER ROLE …"
    assert not [t for t in texts if dummy in t]


def test_lock_and_unlock(app: App) -> None:
    with engine(app) as eng:
        eng.lock_user(app.user)
        assert eng.user_state(app.user).can_login is False
        assert "not permitted to log in" in login_error(app.url)
        eng.unlock_user(app.user)
        assert eng.user_state(app.user).can_login is True
        assert connects(app.url)
        assert eng.user_state("nobody_here").exists is False


def test_drop_refused_when_rights_would_be_lost(app: App) -> None:
    with engine(app) as eng:
        group = eng.adopt(active=app.user, inactive=app.green, group=None)
        with app.su() as conn:
            conn.execute("CREATE TABLE private_to_blue (id int)")
            conn.execute(f"GRANT SELECT ON private_to_blue TO {app.user}")
        with pytest.raises(RotationError, match="holds rights") as info:
            eng.drop_user(app.user, keep=app.green, group=group)
        assert "SELECT on table public.private_to_blue" in str(info.value)
        assert "--retire lock" in str(info.value)
        assert eng.user_state(app.user).exists


def test_drop_moves_ownership_to_the_group(app: App) -> None:
    with engine(app) as eng:
        group = eng.adopt(active=app.user, inactive=app.green, group=None)
        eng.prepare_user(app.green, new_password(), like=app.user, group=group)
        with app.su() as conn:
            conn.execute("CREATE TABLE owned_by_blue (id int)")
            conn.execute(f"ALTER TABLE owned_by_blue OWNER TO {app.user}")
        eng.drop_user(app.user, keep=app.green, group=group)
        assert not eng.user_state(app.user).exists
        with app.su() as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'owned_by_blue'"
            ).fetchone()
        assert owner == (group,)


def test_default_group_names() -> None:
    assert default_group("app") == "app_owner"
    assert default_group("shop_blue") == "shop_owner"
    assert default_group("_blue") == "_blue_owner"


def test_admin_needs_createdb_to_move_a_database(cluster: Cluster) -> None:
    app = make_app(cluster, rich=False)
    nodb, password = f"{app.user}_nodb", new_password()  # its own name: repeatable
    cluster.create_role(nodb, password, "CREATEROLE")
    if cluster.version >= 16:
        with cluster.su() as conn:
            conn.execute(f"GRANT {app.user} TO {nodb} WITH ADMIN OPTION")
    admin = cluster.pg.url(nodb, password, app.database)
    with engine_for(admin) as eng, pytest.raises(InsufficientPrivilege, match="CREATEDB"):
        eng.adopt(active=app.user, inactive=app.green, group=None)
    with cluster.su() as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app.green,)).fetchone()
            is None
        )


def test_init_adopts_a_hand_made_setup(cluster: Cluster, tmp_path: Any) -> None:
    app = make_app(cluster, rich=False)
    other = f"{app.user}_b"
    other_pw = new_password()
    cluster.create_role(other, other_pw)
    with app.su() as conn:
        if cluster.version >= 16:
            conn.execute(f"GRANT {other} TO credflip_admin WITH ADMIN TRUE, INHERIT FALSE")
        conn.execute(f"GRANT ALL ON orders TO {other}")
        conn.execute(f"GRANT USAGE ON SEQUENCE orders_id_seq TO {other}")
    store = SqliteStore(tmp_path / "p.db")
    layout = Layout("handmade")
    store.put(layout.pointer, "green")
    store.put(layout.url(Color.GREEN, "writer"), app.url.secret, secure=True)
    store.put(layout.url(Color.GREEN, "reader"), app.url.secret, secure=True)
    broken = app.url.with_credentials(other, "wrong")
    store.put(layout.url(Color.BLUE, "writer"), broken.secret, secure=True)
    with pytest.raises(ConfigurationError, match=r"blue writer URL .* does not connect"):
        commands.init(store, layout, admin_url=app.admin_url)
    assert store.get(layout.state) is None
    store.put(layout.url(Color.BLUE, "writer"), app.url.with_credentials(other, other_pw).secret)
    result = commands.init(store, layout, admin_url=app.admin_url)
    assert result.adopted and result.active is Color.GREEN
    assert result.users == {Color.GREEN: app.user, Color.BLUE: other}
    assert store.get(layout.url(Color.BLUE, "reader")) is not None  # filled from the writer
    # The inactive (blue) user gets the new password; clients on green are untouched.
    assert (
        rotate(
            store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
        ).to_color
        is Color.BLUE
    )
    with psycopg.connect(fresh(store, layout).writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('blue')")
    with pytest.raises(ConfigurationError, match="already managed"):
        commands.init(store, layout, admin_url=app.admin_url)


def test_adopt_when_a_schema_changed_hands_after_its_tables(cluster: Cluster) -> None:
    """REASSIGN OWNED may meet a function before its schema: the group must be able to own it."""
    app = make_app(cluster, rich=False)
    with app.su() as conn:
        for n in range(3):
            conn.execute(f"CREATE SCHEMA late{n}")
            conn.execute(f"CREATE FUNCTION late{n}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            conn.execute(f"ALTER FUNCTION late{n}.f() OWNER TO {app.user}")
        for n in range(3):
            conn.execute(f"ALTER SCHEMA late{n} OWNER TO {app.user}")
    with engine(app) as eng:
        group = eng.adopt(active=app.user, inactive=app.green, group=None)
    with app.su() as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname LIKE 'late%'"
        ).fetchall()
    assert owners == [(group,)]
