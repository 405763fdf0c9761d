"""End-to-end rotations on a real PostgreSQL that enforces passwords."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from apps import App
from helpers import (
    assert_pointer_connects,
    command,
    fresh,
    login_error,
    privileges,
    stored_url,
)

from credflip import commands
from credflip.layout import Color, Layout
from credflip.rotation import Event, RotateOptions, rotate
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore

TESTS = Path(__file__).parent


def opts(**kwargs: Any) -> RotateOptions:
    kwargs.setdefault("client_ttl", 0.2)
    kwargs.setdefault("quiet", kwargs["client_ttl"])
    kwargs.setdefault("drain_timeout", 30.0)
    return RotateOptions(**kwargs)


def initialise(app: App, store: SqliteStore, layout: Layout) -> None:
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)


def owners(app: App) -> set[str]:
    """Owners of the app's tables, views, functions and schema (extensions' objects aside)."""
    with app.su() as conn:
        rows = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'billing') AND NOT EXISTS (SELECT 1 FROM pg_depend d "
            "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') "
            "UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'billing' "
            "UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'billing'"
        ).fetchall()
    return {r[0] for r in rows}


def test_adopt_then_rotate_there_and_back(app: App, store: SqliteStore, layout: Layout) -> None:
    initialise(app, store, layout)
    assert owners(app) == {app.group}
    state = load_state(store, layout)
    assert state.users == {Color.BLUE: app.user, Color.GREEN: app.green}
    assert fresh(store, layout).color is Color.BLUE

    written = 0
    with psycopg.connect(fresh(store, layout).writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('blue')")
        conn.execute("CREATE TABLE made_by_blue (id int)")
        written += 1

    first = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert first.finished and first.to_color is Color.GREEN
    green = fresh(store, layout)
    assert green.color is Color.GREEN and green.user == app.green
    assert "not permitted to log in" in login_error(app.url)  # blue is locked
    with psycopg.connect(green.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('green')")
        written += 1
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (written,)
        # Objects blue created belong to the group: green can change and drop them.
        conn.execute("ALTER TABLE made_by_blue ADD COLUMN note text")
        conn.execute("DROP TABLE made_by_blue")
        conn.execute("ALTER TABLE billing.invoices ADD COLUMN paid bool")
        conn.execute("DROP VIEW billing.big")
        conn.execute("CREATE VIEW billing.big AS SELECT id, total FROM billing.invoices")
        conn.execute("CREATE TABLE made_by_green (id int)")
        assert conn.execute("SELECT billing.add(2, 3)").fetchone() == (5,)
        assert conn.execute("SELECT nextval('billing.numbers')").fetchone() == (1,)
        assert conn.execute("SELECT current_user").fetchone() == (app.group,)
    with app.su() as conn:
        assert privileges(conn, app.user) == privileges(conn, app.green)
    green_password = stored_url(store, layout, Color.GREEN).password

    second = rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert second.finished and second.to_color is Color.BLUE
    blue = fresh(store, layout)
    assert blue.color is Color.BLUE and blue.user == app.user
    # The original password no longer works; the rotated one does.
    assert "password authentication failed" in login_error(app.url)
    assert "not permitted to log in" in login_error(
        stored_url(store, layout, Color.GREEN).with_credentials(app.green, green_password)
    )
    with psycopg.connect(blue.writer_url, autocommit=True) as conn:
        conn.execute("INSERT INTO orders (color) VALUES ('blue')")
        written += 1
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (written,)
        conn.execute("ALTER TABLE made_by_green ADD COLUMN note text")
        conn.execute("DROP TABLE made_by_green")
        assert conn.execute("SELECT count(*) FROM billing.big").fetchone() == (2,)
    with app.su() as conn:
        assert privileges(conn, app.user) == privileges(conn, app.green)
    assert [h.result for h in load_state(store, layout).history] == ["done", "done"]


def test_rights_match_table_by_table_right_after_prepare(
    app: App, store: SqliteStore, layout: Layout, request: pytest.FixtureRequest
) -> None:
    initialise(app, store, layout)

    def take_back() -> None:
        # The admin is shared by the later tests on this cluster.
        with app.su() as conn:
            conn.execute("REVOKE pg_read_all_settings FROM credflip_admin CASCADE")

    if app.cluster.version >= 16:
        request.addfinalizer(take_back)
    with app.su() as conn:
        # Direct grants, settings and memberships of the app user, the kinds
        # of things a real database accumulates.
        conn.execute("CREATE TABLE audit (id int, secret text, public_note text)")
        conn.execute(f"GRANT SELECT ON audit TO {app.user}")
        conn.execute(f"GRANT UPDATE (public_note) ON audit TO {app.user}")
        conn.execute(f"GRANT pg_read_all_settings TO {app.user}")
        if app.cluster.version >= 16:
            # 16+: passing on a membership takes ADMIN OPTION on that role.
            conn.execute(
                "GRANT pg_read_all_settings TO credflip_admin "
                "WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
            )
        conn.execute(f"ALTER ROLE {app.user} SET statement_timeout = '7s'")
        conn.execute(f'ALTER ROLE {app.user} SET search_path = billing, "$user", public')
        conn.execute(f"ALTER ROLE {app.user} IN DATABASE {app.database} SET work_mem = '8MB'")

    seen: list[dict[str, Any]] = []

    def capture(event: Event) -> None:
        from credflip.rotation import PhaseFinished

        if isinstance(event, PhaseFinished) and event.phase is Phase.PREPARE:
            with app.su() as conn:
                seen.append(
                    {"blue": privileges(conn, app.user), "green": privileges(conn, app.green)}
                )

    # The table belongs to someone else: the admin cannot pass on its rights.
    # The rotation must stop in prepare with the pointer untouched.
    from credflip.errors import InsufficientPrivilege

    with pytest.raises(InsufficientPrivilege, match="WITH GRANT OPTION to give"):
        rotate(store, layout, admin_url=app.admin_url, options=opts(), on_event=capture)
    assert assert_pointer_connects(store, layout) is Color.BLUE
    assert load_state(store, layout).current.phase is Phase.PREPARE  # type: ignore[union-attr]
    with app.su() as conn:
        conn.execute(
            "GRANT SELECT, UPDATE (public_note) ON audit TO credflip_admin WITH GRANT OPTION"
        )
    seen.clear()
    resumed = rotate(store, layout, admin_url=app.admin_url, options=opts(), on_event=capture)
    assert resumed.finished and resumed.resumed
    assert seen and seen[0]["blue"] == seen[0]["green"]
    assert seen[0]["green"]["rel public.audit"][0] is True  # SELECT came along

    def settings(role: str) -> set[tuple[str, str]]:
        with app.su() as conn:
            rows = conn.execute(
                "SELECT coalesce(d.datname, ''), unnest(s.setconfig) FROM pg_db_role_setting s "
                "LEFT JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE s.setrole = %s::regrole",
                (role,),
            ).fetchall()
        return {(str(a), str(b)) for a, b in rows}

    assert settings(app.green) == settings(app.user)
    assert ("", 'search_path=billing, "$user", public') in settings(app.green)
    assert (app.database, "work_mem=8MB") in settings(app.green)
    with psycopg.connect(fresh(store, layout).writer_url, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('billing, "$user", public',)
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (2,)  # via search_path
        conn.execute("UPDATE audit SET public_note = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit SET secret = 'x'")


def test_three_rotations_under_traffic_then_rollback(
    app: App, store: SqliteStore, layout: Layout
) -> None:
    """On each version, with a non-superuser CREATEROLE admin (ADMIN OPTION only on 18)."""
    from credflip.demo import Traffic, resolve_and_insert
    from credflip.resolver import Resolver
    from credflip.rotation import rollback

    initialise(app, store, layout)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=0.3)
    traffic = Traffic(resolve_and_insert(resolver, layout.env), workers=3, pause=0.005)
    used = [app.url]  # every URL a color ever had
    traffic.start()
    try:
        for _ in range(3):
            result = rotate(store, layout, admin_url=app.admin_url, options=opts(client_ttl=0.3))
            assert result.finished
            used.append(stored_url(store, layout, fresh(store, layout).color))
        back = rollback(store, layout, admin_url=app.admin_url)
        assert back.flipped and back.color is Color.BLUE
    finally:
        traffic.stop()
    assert traffic.failed == 0, dict(traffic.errors)
    assert set(traffic.by_color) == {"blue", "green"}
    current = {stored_url(store, layout, color).password for color in Color}
    for url in used:
        if url.password not in current:
            assert "password authentication failed" in login_error(url)
    with app.su() as conn:
        assert privileges(conn, app.user) == privileges(conn, app.green)
        memberships = privileges(conn, app.user)["memberships"]
    assert [m[0] for m in memberships] == [app.group]
    if app.cluster.version >= 16:
        # Options copied too; the admin kept no SET and no grant on either user.
        assert memberships == [(app.group, False, True, True)]
        with app.su() as conn:
            rows = conn.execute(
                "SELECT r.rolname, m.admin_option, m.inherit_option, m.set_option "
                "FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "WHERE m.member = 'credflip_admin'::regrole AND r.rolname LIKE %s "
                "ORDER BY 1, 2, 3, 4",
                (f"{app.user}%",),
            ).fetchall()
        assert rows == [
            (app.user, True, False, False),
            (app.user + "_green", True, False, False),
            (app.group, False, True, False),
            (app.group, True, False, False),
        ]


def test_a_column_right_outlives_revoking_its_tables_right(
    app: App, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """A table-level REVOKE takes the table's column rights with it: prepare gives those
    again in the same transaction, and the colors' rights match column by column."""
    store = sqlite_store
    initialise(app, store, layout)
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished  # green
    with app.su() as conn:  # a table the admin may pass on, owned by someone else
        conn.execute("CREATE TABLE ledger (id int, note text)")
        conn.execute("GRANT SELECT ON ledger TO credflip_admin WITH GRANT OPTION")
    app.execute(
        app.admin_url,
        f"GRANT SELECT (id) ON ledger TO {app.green}",
        f"GRANT SELECT ON ledger TO {app.user}",  # blue's, which green lacks
    )
    planned = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert planned.code == 0, planned.err
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    with app.su() as conn:
        blue, green = privileges(conn, app.user), privileges(conn, app.green)
    assert blue == green
    assert ("public.ledger", "id", "SELECT", False) in blue["column grants"]
    # One statement string, so one transaction: no moment without the column right.
    assert (
        f'REVOKE SELECT ON TABLE "public"."ledger" FROM "{app.user}"; '
        f'GRANT SELECT ("id") ON TABLE "public"."ledger" TO "{app.user}"'
    ) in planned.out
