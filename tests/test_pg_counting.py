"""PostgreSQL settings under which pg_stat_statements is there but cannot count the old
user's statements: ``compute_query_id = off`` or ``pg_stat_statements.track = none`` for
the server, the user, its database or every role, and a ``role`` setting for a database
or for every role (its logins then run, and are counted, as that role). ``rotate``
refuses before anything changes, naming the statement that fixes it; once run, the
rotation goes through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from apps import App, make_app
from clusters import Cluster
from helpers import FAST, dump, login_error, rotate_args, wait_until
from psycopg import sql

from credflip import commands
from credflip.engines.postgres.counting import setting_problems
from credflip.layout import Layout
from credflip.state import load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import libpq_kwargs

# -- which settings apply, without a server ------------------------------------


def test_the_first_setting_of_a_login_decides() -> None:
    """(user, db), (user), (db), (every role): the first one that sets it applies."""
    user = "shop"
    off_for_all = {(False, ""): {"compute_query_id": "off"}}
    (problem,) = setting_problems(off_for_all, user, watched=True)
    assert (
        "applies to every login" in problem and "ALTER ROLE ALL RESET compute_query_id" in problem
    )
    # The user's own setting comes first: it counts.
    assert (
        setting_problems(
            {**off_for_all, (True, ""): {"compute_query_id": "on"}}, user, watched=True
        )
        == []
    )
    # A database's setting for every login comes after the user's own for that database.
    mixed = {
        (False, "app"): {"pg_stat_statements.track": "NONE"},
        (True, "app"): {"pg_stat_statements.track": "all"},
        (False, "reports"): {"pg_stat_statements.track": "none"},
    }
    (problem,) = setting_problems(mixed, user, watched=True)
    assert problem.startswith(
        "pg_stat_statements.track = none applies to every login to database 'reports'"
    )
    assert problem.endswith('run ALTER DATABASE "reports" RESET pg_stat_statements.track')
    (problem,) = setting_problems({(True, "app"): {"compute_query_id": "0"}}, user, watched=True)
    assert 'ALTER ROLE "shop" IN DATABASE "app" RESET compute_query_id' in problem


def test_a_role_setting_of_every_role_hides_the_old_user_from_the_drain() -> None:
    user = "shop"
    for key, fix in (
        ((False, "app"), 'ALTER DATABASE "app" RESET role'),
        ((False, ""), "ALTER ROLE ALL RESET role"),
    ):
        settings = {key: {"role": "grp"}, (True, ""): {"role": "grp"}}
        # The drain resets the user's own setting at the switch: the other one applies then.
        (problem,) = setting_problems(settings, user, watched=True)
        assert "runs as role 'grp', those of 'shop' too" in problem and problem.endswith(fix)
        # Not watched (no group): its own setting stays and comes first.
        assert setting_problems(settings, user, watched=False) == []
    # Its own setting for that database comes first too.
    settings = {(False, "app"): {"role": "grp"}, (True, "app"): {"role": "grp"}}
    assert setting_problems(settings, user, watched=True) == []
    # A setting that changes nobody's role, or names the user itself.
    for harmless in ("none", "shop"):
        assert setting_problems({(False, ""): {"role": harmless}}, user, watched=True) == []


# -- on a server --------------------------------------------------------------


def superuser(cluster: Cluster, *statements: sql.Composable) -> None:
    with cluster.su() as su:
        for statement in statements:
            su.execute(statement)


def reloaded(cluster: Cluster, app: App, value: str) -> None:
    """Wait until a new session of the admin sees compute_query_id = *value* (a reload
    reaches the server's processes asynchronously)."""

    def seen() -> bool:
        with psycopg.connect(**libpq_kwargs(app.admin_url)) as conn:
            row = conn.execute("SELECT current_setting('compute_query_id')").fetchone()
        return row == (value,)

    wait_until(seen, f"compute_query_id = {value} after the reload")


def ids(user: str, database: str, group: str) -> dict[str, sql.Identifier]:
    return {"u": sql.Identifier(user), "d": sql.Identifier(database), "g": sql.Identifier(group)}


#: (what the DBA set, the statement the refusal names to undo it) as templates.
CASES: dict[str, tuple[str, str]] = {
    "server": (
        "ALTER SYSTEM SET compute_query_id = off",
        "ALTER SYSTEM SET compute_query_id = auto",
    ),
    "role": (
        "ALTER ROLE {u} SET compute_query_id = off",
        "ALTER ROLE {u} RESET compute_query_id",
    ),
    "database": (
        "ALTER DATABASE {d} SET compute_query_id = off",
        "ALTER DATABASE {d} RESET compute_query_id",
    ),
    "role in database": (
        "ALTER ROLE {u} IN DATABASE {d} SET pg_stat_statements.track = none",
        "ALTER ROLE {u} IN DATABASE {d} RESET pg_stat_statements.track",
    ),
    "every role": (
        "ALTER ROLE ALL SET pg_stat_statements.track = none",
        "ALTER ROLE ALL RESET pg_stat_statements.track",
    ),
    "database role": ("ALTER DATABASE {d} SET role = {g}", "ALTER DATABASE {d} RESET role"),
    "every role in database": (
        "ALTER ROLE ALL IN DATABASE {d} SET role = {g}",
        "ALTER DATABASE {d} RESET role",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rotate_refuses_a_counter_that_cannot_see_the_old_user_and_names_the_fix(
    own_cluster: Cluster, case: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    app = make_app(own_cluster, rich=False)
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("counting")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    names = ids(app.user, app.database, app.group)
    setup, fix = (sql.SQL(t).format(**names) for t in CASES[case])
    reload = sql.SQL("SELECT pg_reload_conf()")
    superuser(own_cluster, setup, reload)
    try:
        if case == "server":
            reloaded(own_cluster, app, "off")
        before = dump(store)
        refused = cli(*rotate_args(app, store, layout, *FAST))
        assert refused.code == 1, refused.err
        (line,) = [x for x in refused.err.splitlines() if x.startswith("credflip: error:")]
        assert line.startswith("credflip: error: no login counter"), line
        assert fix.as_string(None) in line and "--sessions-only" in line, line
        assert line.endswith("nothing was changed")
        assert dump(store) == before and load_state(store, layout).current is None
        # The statement named in the refusal is the fix.
        superuser(own_cluster, fix, reload)
        if case == "server":
            reloaded(own_cluster, app, "auto")
        done = cli(*rotate_args(app, store, layout, *FAST))
        assert done.code == 0, done.err
        assert app.locked_marker in login_error(app.url)  # blue retired
    finally:
        undo = sql.SQL(CASES[case][1]).format(**names)
        superuser(own_cluster, undo, reload)
