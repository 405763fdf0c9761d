"""Objects a late old-color session creates during the drain (issue 19, point 5).

After the switch the drain's watch lets the old user's new logins run as
itself (PostgreSQL), so what such a session creates is owned by the old user,
not by the group. The new color must be able to use it at once, with what
the group's default privileges give; retire hands it to the group without
changing what anyone could do with it. On MySQL/MariaDB an object has no
owner: a color's rights are grants on the database, which cover a table the
other color creates the moment it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pymysql
from apps import App, make_my_app
from clusters import Mariadb
from helpers import FAST, command, fresh, privileges, stored_url

from credflip import commands
from credflip.layout import Color, Layout
from credflip.resolver import Endpoints
from credflip.rotation import DrainProgress, Event, RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

# What a late blue session creates, in the public schema and in one it creates.
_PG_CREATE = (
    "CREATE TABLE late (id serial PRIMARY KEY, note text)",
    "INSERT INTO late (note) VALUES ('blue')",
    "CREATE SEQUENCE late_numbers",
    "CREATE FUNCTION late_double(n int) RETURNS int LANGUAGE sql AS 'SELECT 2 * n'",
    "CREATE VIEW late_view AS SELECT id, note FROM late",
    "CREATE SCHEMA late_schema",
    "CREATE TABLE late_schema.items (id int)",
)

# What the application (now green) does with them, and what it reads back.
_PG_USE = (
    "INSERT INTO late (note) VALUES ('green')",
    "UPDATE late SET note = note || '!' WHERE note = 'blue'",
    "SELECT nextval('late_numbers') > 0",
    "SELECT late_double(21)",
    "SELECT count(*) FROM late_view",
    "INSERT INTO late_schema.items VALUES (1)",
    "SELECT count(*) FROM late_schema.items",
)

_LATE_OBJECTS = (
    "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
    "WHERE c.relname IN ('late', 'late_id_seq', 'late_numbers', 'late_view', 'items') "
    "UNION ALL SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p "
    "WHERE p.proname = 'late_double' "
    "UNION ALL SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
    "WHERE nspname = 'late_schema' ORDER BY 1"
)


def _attempt(run: Callable[[], Any]) -> Any:
    """The result of *run*, or the error it raised as text (kept for the assertion)."""
    try:
        return run()
    except (psycopg.Error, pymysql.err.MySQLError) as exc:
        return f"error: {exc}"


def _pg_use(app: App, url: DbUrl) -> Any:
    """What green's statements return, or the first error as text."""

    def run() -> list[Any]:
        with app.connect(url) as conn:
            return [
                (row[0] if (row := conn.execute(s).fetchone()) is not None else None)
                if s.startswith("SELECT")
                else conn.execute(s).rowcount
                for s in _PG_USE
            ]

    return _attempt(run)


def _late_rights(app: App, *roles: str) -> dict[str, Any]:
    """What *roles* may do with the late objects (and nothing else), by role."""
    with app.su() as conn:
        out = {}
        for role in roles:
            rights = privileges(conn, role)
            out[role] = {k: v for k, v in rights.items() if "late" in k}
        return out


def _rotate_with_late_session(
    store: SqliteStore, layout: Layout, app: Any, late: Callable[[DbUrl, Endpoints], Any]
) -> Any:
    """Rotate blue to green; at the drain's first sample call *late* with blue's URL and
    what a client resolves then (green), and return what it returned."""
    blue_url = stored_url(store, layout, Color.BLUE)
    seen: list[Any] = []

    def on_event(event: Event) -> None:
        if isinstance(event, DrainProgress) and not seen:
            seen.append(late(blue_url, fresh(store, layout)))

    result = rotate(
        store,
        layout,
        admin_url=app.admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=30.0),
        on_event=on_event,
    )
    assert result.finished and result.to_color is Color.GREEN
    assert len(seen) == 1
    return seen[0]


def test_a_late_old_session_creates_what_the_new_color_uses_at_once(
    app: App, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    store, reporting = sqlite_store, f"{app.user}_reporting"
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    # The operator's own default privileges for what the application creates:
    # a reporting role reads every new table; new functions are not PUBLIC.
    app.admin_sql(
        f"CREATE ROLE {reporting} NOLOGIN",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {app.group} GRANT SELECT ON TABLES TO {reporting}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {app.group} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
    )
    planned = cli(*command("rotate", app, store, layout, "--dry-run", *FAST))
    roles = (app.green, app.group, reporting, "public")

    def late(blue_url: DbUrl, green: Endpoints) -> dict[str, Any]:
        with app.connect(blue_url) as blue:
            runs_as = blue.execute("SELECT current_user").fetchone()
            for statement in _PG_CREATE:
                blue.execute(statement)
        with app.su() as conn:
            owners = conn.execute(_LATE_OBJECTS).fetchall()
        use, rights = _pg_use(app, green.writer_url), _late_rights(app, *roles)
        return {"as": runs_as, "green": green.user, "owners": owners, "use": use, "rights": rights}

    seen = _rotate_with_late_session(store, layout, app, late)
    # The scenario: a session of the old color, running as itself during the drain.
    assert seen["as"] == (app.user,) and seen["green"] == app.green
    assert {owner for _, owner in seen["owners"]} == {app.user}
    # Green used every object at once: no "permission denied" while blue owned them.
    assert seen["use"] == [1, 1, True, 42, 2, 1, 1], seen["use"]
    rights = seen["rights"]
    # Retire gave everything to the group; nobody's rights changed.
    with app.su() as conn:
        assert {owner for _, owner in conn.execute(_LATE_OBJECTS).fetchall()} == {app.group}
    assert _late_rights(app, *roles) == rights
    assert _pg_use(app, fresh(store, layout).writer_url) == [1, 0, True, 42, 3, 1, 2]
    with app.connect(fresh(store, layout).writer_url) as green:
        # Owned by the group now: green may change and drop them too.
        green.execute("ALTER TABLE late ADD COLUMN at timestamptz")
        green.execute("DROP SCHEMA late_schema CASCADE")
    _assert_like_the_groups(rights, app, reporting)
    # The dry run before the rotation showed what gives both colors the group's new
    # defaults, and only that; now that they have them, the next one shows nothing.
    assert planned.code == 0, planned.err
    assert _default_statements(planned.out) == [
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{user}" {change}'
        for user in (app.user, app.green)
        for change in (
            f'GRANT SELECT ON TABLES TO "{reporting}"',
            "REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        )
    ]
    again = cli(*command("rotate", app, store, layout, "--dry-run", *FAST))
    assert again.code == 0 and _default_statements(again.out) == []


def _default_statements(out: str) -> list[str]:
    """The ``ALTER DEFAULT PRIVILEGES`` statements a dry run printed, in order."""
    lines = (line.strip().removesuffix(";") for line in out.splitlines())
    return [line for line in lines if line.startswith("ALTER DEFAULT PRIVILEGES")]


def _assert_like_the_groups(rights: dict[str, Any], app: App, reporting: str) -> None:
    """Green may do everything with the late objects; the group's defaults applied."""
    assert rights[app.green]["rel public.late"] == (True,) * 7
    assert rights[app.green]["rel public.late_numbers"] == (True,) * 3
    assert rights[app.green]["fn late_double(integer)"] is True
    assert rights[app.green]["schema late_schema"] == (True, True)
    # The group's own defaults: reporting reads new tables, PUBLIC runs no new function.
    assert rights[reporting]["rel public.late"][:2] == (True, False)
    assert rights[reporting]["fn late_double(integer)"] is False
    assert rights["public"]["fn late_double(integer)"] is False


def test_a_dropped_color_comes_back_with_the_groups_defaults(
    app: App, sqlite_store: SqliteStore, layout: Layout, cli: Any
) -> None:
    """``--retire drop`` takes the old user's default privileges with it (DROP OWNED);
    the next prepare creates the user again and gives it the group's, from scratch."""
    store = sqlite_store
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    options = RotateOptions(client_ttl=0.2, quiet=0.2, drain_timeout=30.0, retire="drop")
    for _ in range(2):  # blue dropped, then green; blue created again in between
        assert rotate(store, layout, admin_url=app.admin_url, options=options).finished
    assert not app.user_exists(app.green)
    planned = cli(*command("rotate", app, store, layout, "--dry-run", *FAST))
    assert planned.code == 0, planned.err
    statements = _default_statements(planned.out)
    # Blue's are the group's already; green, created anew, gets them from the built-in.
    assert statements and all(f'FOR ROLE "{app.green}" ' in s for s in statements)
    assert f'FOR ROLE "{app.green}" GRANT EXECUTE ON FUNCTIONS TO "{app.group}"' in planned.out

    def late(blue_url: DbUrl, green: Endpoints) -> Any:
        app.execute(blue_url, "CREATE TABLE late (id int)")
        return app.execute(green.writer_url, "INSERT INTO late VALUES (1)", "TABLE late")

    assert _rotate_with_late_session(store, layout, app, late) == [(1,)]


# -- MySQL / MariaDB ------------------------------------------------------------

_MY_CREATE = (
    "CREATE TABLE late (id int AUTO_INCREMENT PRIMARY KEY, note varchar(16))",
    "INSERT INTO late (note) VALUES ('blue')",
    "CREATE VIEW late_view AS SELECT id, note FROM late",
    "CREATE PROCEDURE late_add(IN note varchar(16)) INSERT INTO late (note) VALUES (note)",
)

_MY_USE = (
    "INSERT INTO late (note) VALUES ('green')",
    "CALL late_add('green-call')",
    "SELECT count(*) FROM late",
    "SELECT count(*) FROM late_view",
)


def _my_use(app: Any, url: DbUrl) -> Any:
    def run() -> list[Any]:
        with app.open(url) as conn, conn.cursor() as cur:
            out = []
            for statement in _MY_USE:
                cur.execute(statement)
                out.append(cur.fetchone()[0] if statement.startswith("SELECT") else None)
            return out

    return _attempt(run)


def test_mysql_grants_on_the_database_cover_what_a_late_session_creates(
    mariadb: Mariadb, sqlite_store: SqliteStore, layout: Layout
) -> None:
    """No owner to hand over: green's rights are grants on the database (copied from blue's
    at prepare), so they cover blue's late table, view and procedure from the start; the
    view and procedure run as their DEFINER, blue, which a locked account still may be."""
    store, app = sqlite_store, make_my_app(mariadb)
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)

    def late(blue_url: DbUrl, green: Endpoints) -> Any:
        app.execute(blue_url, *_MY_CREATE)
        return green.user, _my_use(app, green.writer_url)

    assert _rotate_with_late_session(store, layout, app, late) == (app.green, [None, None, 3, 3])
    assert app.locked_marker in _attempt(
        lambda: app.execute(stored_url(store, layout, Color.BLUE), "SELECT 1")
    )
    assert _my_use(app, fresh(store, layout).writer_url) == [None, None, 5, 5]
