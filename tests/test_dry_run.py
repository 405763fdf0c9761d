"""``rotate --dry-run`` on real servers: it changes nothing, takes no lock, fails like the
real run would, and the real rotation then runs exactly the statements it printed."""

from __future__ import annotations

import re
from typing import Any

from apps import AnyApp
from helpers import command, dump, stored_url

from credflip import commands
from credflip.layout import Color, Layout
from credflip.rotation import RotateOptions, rotate
from credflip.state import load_state, read_lock
from credflip.stores.base import Store

# SET: each plan's connection gets its lock and statement timeouts first.
DDL = re.compile(
    r"(ALTER|GRANT|REVOKE|CREATE|DROP|REASSIGN|SET lock_timeout|SET statement_timeout"
    r"|SET SESSION lock_wait_timeout) "
)
# What the servers log instead of the dry run's ***: verifier or hash.
LOGGED_SECRET = re.compile(r"'(SCRAM-SHA-256\$[^']*|\*[0-9A-F]{40})'")


def catalog(app: AnyApp) -> Any:
    return [(u, app.user_exists(u), app.rights(u)) for u in (app.user, app.green)]


def printed_sql(out: str) -> list[str]:
    """Every statement the dry run printed, in order."""
    return [
        line.strip().removesuffix(";")
        for line in out.splitlines()
        if line.startswith("    ") and DDL.match(line.strip())
    ]


def logged_sql(app: AnyApp, before: int) -> list[str]:
    """The changing statements the server logged after offset *before*, secrets masked."""
    log = app.server_log()[before:]
    if app.engine == "postgresql":
        found = re.findall(r"LOG:  statement: (.*)", log)
    else:
        found = re.findall(r"\d+ Query\t(.*)", log)
    return [LOGGED_SECRET.sub("'***'", s.strip()) for s in found if DDL.match(s.strip())]


def test_dry_run_changes_nothing_then_the_rotation_runs_what_it_printed(
    any_app: AnyApp, store: Store, layout: Layout, cli: Any
) -> None:
    app = any_app
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    before = (dump(store), catalog(app))
    mark = len(app.server_log())
    result = cli(
        *command(
            "rotate", app, store, layout, "--dry-run", "--client-ttl", "200ms", "--quiet", "200ms"
        )
    )
    assert result.code == 0, result.err
    for secret in (app.password, app.admin_url.password):
        assert secret and secret not in result.text
    assert "nothing was changed and no lock taken" in result.out
    assert "/green/writer-db-url  SecureString" in result.out and "***" in result.out
    assert "pg_stat_statements" in result.out or "user_statistics" in result.out
    assert "5. retire (lock): one last reading of every instance" in result.out
    planned = printed_sql(result.out)
    assert planned and any("PASSWORD" in s for s in planned)
    assert "SET lock_timeout = '1000ms'" in planned or any(
        s.startswith("SET SESSION lock_wait_timeout = 1,") for s in planned
    )
    assert (dump(store), catalog(app)) == before
    assert read_lock(store, layout) is None
    assert logged_sql(app, mark) == []  # the dry run sent no change at all

    mark = len(app.server_log())
    assert rotate(
        store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.2, quiet=0.2)
    ).finished
    assert logged_sql(app, mark) == planned


def test_dry_run_refuses_what_the_real_run_would(
    any_app: AnyApp, store: Store, layout: Layout, cli: Any
) -> None:
    app = any_app
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    # A rotation under way (held by a client still on blue): plan only new ones.
    with app.open(app.url):
        stuck = cli(*command("rotate", app, store, layout, "--yes", "--client-ttl", "200ms",
                             "--quiet", "200ms", "--drain-timeout", "300ms"))  # fmt: skip
    assert stuck.code == 4
    before = dump(store)
    mid = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert mid.code == 1 and mid.err.count("\n") == 1
    assert "is under way (phase drain)" in mid.err and "--dry-run plans a new rotation" in mid.err
    assert dump(store) == before
    resumed = cli(*command("rotate", app, store, layout, "--yes", "--client-ttl", "200ms",
                           "--quiet", "200ms"))  # fmt: skip
    # Exit 0 is also a paused run: the resumed rotation must have finished.
    assert resumed.code == 0, resumed.err
    state = load_state(store, layout)
    assert state.current is None and [h.result for h in state.history] == ["done"], state
    # After a rollback green is inactive but may still have clients: a client on it
    # stops both runs alike, before anything changes.
    assert cli(*command("rollback", app, store, layout, "--yes")).code == 0
    with app.open(stored_url(store, layout, Color.GREEN)):
        planned = cli(*command("rotate", app, store, layout, "--dry-run"))
        real = cli(*command("rotate", app, store, layout, "--yes"))
    assert planned.code == real.code == 1
    assert planned.err == real.err and "still has 1 session(s)" in planned.err


def test_dry_run_after_a_rollback_that_switched_names_the_predrain(
    any_app: AnyApp, store: Store, layout: Layout, cli: Any
) -> None:
    """Clients moved to green before the rollback: the next rotation drains green before it
    changes green's password, and its dry run says so, with the window, before prepare."""
    app = any_app
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    fast = ("--client-ttl", "200ms", "--quiet", "300ms")
    assert cli(*command("rotate", app, store, layout, "--yes", *fast)).code == 0
    assert cli(*command("rollback", app, store, layout, "--yes")).code == 0
    before = dump(store)
    planned = cli(*command("rotate", app, store, layout, "--dry-run", *fast))
    assert planned.code == 0, planned.err
    assert dump(store) == before
    out = planned.out
    first = f"1. prepare: first drain {app.green!r} (green) like an old user"
    assert first in out and "rolled back at" in out
    assert "quiet window 300ms, at the earliest" in out
    assert out.index(first) < out.index("SQL when that drain starts") < out.index("then SQL")
    # The real run drains green first, then rotates; after it, nothing is left to predrain.
    options = RotateOptions(client_ttl=0.2, quiet=0.3)
    assert rotate(store, layout, admin_url=app.admin_url, options=options).finished
    again = cli(*command("rotate", app, store, layout, "--dry-run", *fast))
    assert again.code == 0 and "first drain" not in again.out
