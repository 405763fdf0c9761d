"""MySQL/MariaDB prepare changes rights by difference, granting before revoking: the
triggers, views and routines the inactive user is the DEFINER of keep working for the
active color at every statement boundary of prepare, and equal rights change nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apps import MyApp, make_my_app
from clusters import Mariadb
from helpers import assert_pointer_connects, command, fresh, stored_url
from test_dry_run import printed_sql

from credflip import commands
from credflip.errors import RotationError
from credflip.layout import Color, Layout
from credflip.rotation import RotateOptions, rotate
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore

TESTS = Path(__file__).parent


def definer_app(mariadb: Mariadb) -> MyApp:
    """An app whose user made a trigger, a view and a routine (it is their DEFINER)."""
    app = make_my_app(mariadb)  # the view `big` and the procedure `add_numbers`
    app.execute(
        app.url,
        "CREATE TABLE audit (order_id bigint, color varchar(16))",
        "CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW "
        "INSERT INTO audit VALUES (NEW.id, NEW.color)",
        "CREATE PROCEDURE audited() SQL SECURITY DEFINER SELECT COUNT(*) FROM audit",
    )
    return app


def use_definer_objects(app: MyApp, url: Any, color: str) -> None:
    """What the application does through them: fails the test when one is refused."""
    before = app.execute(url, "CALL audited()")[0][0]
    app.execute(url, f"INSERT INTO orders (color) VALUES ('{color}')")  # fires the trigger
    assert app.execute(url, "CALL audited()")[0][0] == before + 1
    assert app.execute(url, "SELECT COUNT(*) FROM big")[0][0] == 1
    assert app.execute(url, "CALL add_numbers(2, 3)")[0][0] == 5


def prepare_sql(out: str) -> list[str]:
    """The statements a dry run printed for prepare (not retire)."""
    return printed_sql(out.split("2. verify:", maxsplit=1)[0])


#: The session's lock and statement timeouts, set before the first statement (the
#: crash test does not count it: it changes nothing).
LIMITS = "SET SESSION lock_wait_timeout = 1, innodb_lock_wait_timeout = 1, max_statement_time = 29"


def opts() -> RotateOptions:
    return RotateOptions(client_ttl=0.1, quiet=0.1)


def test_equal_rights_plan_no_grant_and_no_revoke(
    mariadb: Mariadb, tmp_path: Path, cli: Any
) -> None:
    app = definer_app(mariadb)
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("equal-rights")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotate(store, layout, admin_url=app.admin_url, options=opts())  # blue is now inactive
    assert app.rights(app.user) == app.rights(app.green)
    result = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert result.code == 0, result.err
    planned = prepare_sql(result.out)
    assert [s.split(" IDENTIFIED ")[0] for s in planned] == [
        LIMITS,
        f"ALTER USER '{app.user}'@'%'",
        f"ALTER USER '{app.user}'@'%' ACCOUNT UNLOCK",
    ], result.out
    assert not [s for s in planned if s.startswith(("GRANT", "REVOKE"))]


def drifted(mariadb: Mariadb, tmp_path: Path, cli: Any) -> tuple[MyApp, SqliteStore, Layout]:
    """Green active, blue (the DEFINER) inactive, and their rights apart: green gained
    a right, blue keeps one green lacks; the next prepare of blue grants and revokes."""
    app = definer_app(mariadb)
    db = app.database
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("definers")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotate(store, layout, admin_url=app.admin_url, options=opts())
    use_definer_objects(app, fresh(store, layout).writer_url, "green")
    mariadb.sql(
        f"GRANT SELECT (color) ON `{db}`.audit TO '{app.green}'@'%' WITH GRANT OPTION",
        f"GRANT SELECT ON `{db}`.orders TO '{app.user}'@'%' WITH GRANT OPTION",
    )
    return app, store, layout


def test_rights_that_differ_are_granted_then_revoked_one_by_one(
    mariadb: Mariadb, tmp_path: Path, cli: Any
) -> None:
    app, store, layout = drifted(mariadb, tmp_path, cli)
    result = cli(*command("rotate", app, store, layout, "--dry-run"))
    planned = prepare_sql(result.out)
    assert [s.split(" IDENTIFIED ")[0] for s in planned] == [
        LIMITS,
        f"GRANT SELECT (`color`) ON `{app.database}`.`audit` TO '{app.user}'@'%' WITH GRANT OPTION",
        f"REVOKE SELECT, GRANT OPTION ON `{app.database}`.`orders` FROM '{app.user}'@'%'",
        f"ALTER USER '{app.user}'@'%'",
        f"ALTER USER '{app.user}'@'%' ACCOUNT UNLOCK",
    ], result.out
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert app.rights(app.user) == app.rights(app.green)
    use_definer_objects(app, fresh(store, layout).writer_url, "blue")


def test_a_column_right_outlives_revoking_its_tables_right(
    mariadb: Mariadb, tmp_path: Path, cli: Any
) -> None:
    """A table-level REVOKE takes the table's column rights with it: prepare gives blue
    the column right green has after revoking the table right green lacks."""
    app = definer_app(mariadb)
    db, store, layout = app.database, SqliteStore(tmp_path / "params.db"), Layout("columns")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    rotate(store, layout, admin_url=app.admin_url, options=opts())  # green is active
    mariadb.sql(
        f"GRANT SELECT (color) ON `{db}`.audit TO '{app.green}'@'%'",
        f"GRANT SELECT ON `{db}`.audit TO '{app.user}'@'%'",
    )
    planned = prepare_sql(cli(*command("rotate", app, store, layout, "--dry-run")).out)
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert app.rights(app.user) == app.rights(app.green)
    use_definer_objects(app, fresh(store, layout).writer_url, "blue")
    assert [s for s in planned if s.startswith(("GRANT", "REVOKE"))] == [
        f"REVOKE SELECT ON `{db}`.`audit` FROM '{app.user}'@'%'",
        f"GRANT SELECT (`color`) ON `{db}`.`audit` TO '{app.user}'@'%'",
    ]


@pytest.mark.parametrize("boundary", [1, 2, 3, 4])
def test_definer_objects_work_for_the_active_color_when_prepare_dies_after_a_statement(
    mariadb: Mariadb, tmp_path: Path, cli: Any, boundary: int
) -> None:
    """Prepare of blue runs four statements (grant, revoke, password, unlock: see the
    test above); killed after each, the active color's requests still work through
    the objects blue is the DEFINER of, and the next rotate finishes."""
    app, store, layout = drifted(mariadb, tmp_path, cli)
    proc = subprocess.run(
        [sys.executable, str(TESTS / "crash_rotate.py"), store.url, layout.env, "statements",
         str(boundary)],
        env={**os.environ, "CREDFLIP_ADMIN_URL": app.admin_url.secret},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 70, proc.stderr
    state = load_state(store, layout)
    assert state.current is not None and state.current.phase.value == "prepare"
    assert assert_pointer_connects(store, layout) is Color.GREEN
    use_definer_objects(app, stored_url(store, layout, Color.GREEN), "green")
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert assert_pointer_connects(store, layout) is Color.BLUE
    use_definer_objects(app, fresh(store, layout).writer_url, "blue")
    assert app.rights(app.user) == app.rights(app.green)


def test_prepare_keeps_an_account_the_active_user_lost_while_it_is_a_definer(
    mariadb: Mariadb, tmp_path: Path, cli: Any
) -> None:
    """The operator removed the active user's account at one host; the inactive user's
    account there is the DEFINER of a view the application reads, and no other account
    of that user matches its host (no '%'). Prepare refuses, as --retire drop does,
    before any statement (the dry run says so too): dropping the account would break
    the view for the active color. Breaks when prepare drops it (the view then fails:
    MariaDB refuses the application's query)."""
    app = make_my_app(mariadb, rich=False, hosts=("127.0.0.1", "10.9.%"))
    db, store, layout = app.database, SqliteStore(tmp_path / "params.db"), Layout("lost-host")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    mariadb.sql(
        f"CREATE DEFINER = '{app.green}'@'10.9.%' SQL SECURITY DEFINER VIEW `{db}`.recent "
        f"AS SELECT id FROM `{db}`.orders",
        f"DROP USER '{app.user}'@'10.9.%'",
    )
    refusal = (
        f"refusing to drop account '{app.green}'@'10.9.%' ({app.user!r} has no account at "
        f"that host any more): it is the DEFINER of view {db}.recent, which would fail "
        f"without it (no other account of {app.green!r} matches that host); change their "
        f"DEFINER (or create '{app.user}'@'10.9.%' again), then run the command again"
    )
    dry = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert (dry.code, dry.err) == (1, f"credflip: error: {refusal}\n")
    with pytest.raises(RotationError) as info:
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert str(info.value) == refusal
    green_at = "SELECT 1 FROM mysql.user WHERE User = %s AND Host = '10.9.%%'"
    assert mariadb.sql(green_at, args=(app.green,))  # kept, and the view still works
    assert app.execute(app.url, "SELECT COUNT(*) FROM recent") == [(0,)]
    assert assert_pointer_connects(store, layout) is Color.BLUE
    # The operator gives blue that host again: the same rotation goes on and finishes.
    mariadb.sql(
        f"CREATE USER '{app.user}'@'10.9.%' ACCOUNT LOCK",
        f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{app.user}'@'10.9.%'",
    )
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert app.execute(fresh(store, layout).writer_url, "SELECT COUNT(*) FROM recent") == [(0,)]
