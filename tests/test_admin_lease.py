"""The admin's temporary rights as a recorded lease: what it grants itself is recorded before
the grant and removed after the revoke; a run killed in between leaves a lease that
``status`` names and that the next command takes back, leaving the admin with exactly
the memberships it had (PostgreSQL 15 and 18; MySQL's admin lends itself nothing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from apps import App, make_app, serial
from clusters import ADMIN, PG_VERSIONS, Clusters, pg_id
from helpers import command
from psycopg import sql
from test_locks import Clock, Scripted

from credflip import commands
from credflip.engines import Lent
from credflip.engines.base import Step
from credflip.engines.postgres import plan as pg
from credflip.errors import ConfigurationError, LockTimeout
from credflip.layout import Layout
from credflip.rotation import Notice, RotateOptions, rollback, rotate
from credflip.rotation.lease import Lease, LeaseKeeper, read_lease
from credflip.state import Phase, load_state
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl

TESTS = Path(__file__).parent


def memberships(app: App) -> list[tuple[Any, ...]]:
    """The admin's memberships in the app's roles: role, grantor, ADMIN, INHERIT, SET."""
    options = "m.inherit_option, m.set_option" if app.cluster.version >= 16 else "NULL, NULL"
    with app.su() as conn:
        return conn.execute(
            f"SELECT r.rolname, g.rolname, m.admin_option, {options} FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles g ON g.oid = m.grantor "
            "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) "
            "AND r.rolname = ANY(%s) ORDER BY 1, 2",
            [ADMIN, [app.user, app.green, app.group]],
        ).fetchall()


def crash(what: str, app: App, store: SqliteStore, layout: Layout, granted: int) -> None:
    """Run *what* (rotate or init) in a child killed by SIGKILL after *granted* of the
    admin's grants to itself (0: before the first, its lease recorded)."""
    proc = subprocess.run(
        [sys.executable, str(TESTS / "crash_lease.py"), what, store.url, layout.env,
         str(granted)],
        env={**os.environ, "CREDFLIP_ADMIN_URL": app.admin_url.secret,
             "CREDFLIP_WRITER_URL": app.url.secret},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def owner(app: App, table: str) -> str:
    with app.su() as conn:
        row = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", [table])
        return str(row.fetchone()[0])  # type: ignore[index]


def opts() -> RotateOptions:
    return RotateOptions(client_ttl=0.2, quiet=0.2)


def initialised(app: App, store: SqliteStore) -> Layout:
    layout = Layout(f"lease-{serial()}")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    return layout


#: Versions whose memberships carry INHERIT and SET options (16+).
WITH_OPTIONS = [v for v in PG_VERSIONS if v >= 16]


@pytest.fixture(params=WITH_OPTIONS, ids=pg_id)
def app16(request: pytest.FixtureRequest, clusters: Clusters) -> App:
    """An app on each tested version of 16 or later."""
    return make_app(clusters.get(request.param))


@pytest.mark.parametrize("granted", [0, 1])
def test_a_rotation_killed_between_grant_and_revoke_leaves_a_lease_the_next_rotate_takes_back(
    app: App, tmp_path: Path, cli: Any, granted: int
) -> None:
    """Blue made a table as itself: its retire hands it to the group, for which the admin
    lends itself blue's privileges (and on 16+ SET on the group). Killed before the first
    grant and after it."""
    killed_between_grant_and_revoke(app, tmp_path, cli, granted)


def test_a_rotation_killed_after_both_grants_leaves_both_in_its_lease(
    app16: App, tmp_path: Path, cli: Any
) -> None:
    """16+: the admin lends itself two rights here (INHERIT on blue, SET on the group)."""
    killed_between_grant_and_revoke(app16, tmp_path, cli, 2)


def killed_between_grant_and_revoke(app: App, tmp_path: Path, cli: Any, granted: int) -> None:
    version = app.cluster.version
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store)
    app.execute(app.url, "SET ROLE NONE", "CREATE TABLE late_by_blue (id int)")
    before = memberships(app)

    crash("rotate", app, store, layout, granted)
    current = load_state(store, layout).current
    assert current is not None and current.phase is Phase.RETIRE
    assert (memberships(app) == before) is (granted == 0)  # the grants ran, or none did

    lent = [{"role": app.user, "option": ""}]
    if version >= 16:
        lent.append({"role": app.group, "option": "SET"})
    shown = cli(*command("status", app, store, layout))
    assert shown.code == 0, shown.err
    assert f"lease: admin '{ADMIN}' holds membership in {app.user}" in shown.out, shown.out
    assert "the next init, rotate or rollback takes it back first" in shown.out
    data = json.loads(cli(*command("status", app, store, layout, "--json")).out)
    assert data["lease"]["rights"] == lent and data["lease"]["by"] == "rotate"
    assert data["lease"]["admin"] == ADMIN

    notices: list[str] = []

    def on_event(event: object) -> None:
        if isinstance(event, Notice):
            notices.append(event.message)

    assert rotate(
        store, layout, admin_url=app.admin_url, options=opts(), on_event=on_event
    ).finished
    assert any(n.startswith("took back what a run that died left") for n in notices), notices
    assert memberships(app) == before
    assert read_lease(store, layout) is None
    assert owner(app, "late_by_blue") == app.group
    assert "lease:" not in cli(*command("status", app, store, layout)).out


def test_a_grant_the_admin_made_itself_before_keeps_its_options(app16: App, tmp_path: Path) -> None:
    """On 16+ the admin had granted itself blue with SET and without INHERIT: credflip lends
    itself only INHERIT on that grant, records only that, and takes back only that."""
    app = app16
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store)
    with app.connect(app.admin_url) as conn:
        conn.execute(
            sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE").format(
                sql.Identifier(app.user)
            )
        )
    app.execute(app.url, "SET ROLE NONE", "CREATE TABLE late_by_blue (id int)")
    before = memberships(app)
    crash("rotate", app, store, layout, 1)
    lease = read_lease(store, layout)
    assert lease is not None and Lent(app.user, "INHERIT") in lease.rights
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    assert memberships(app) == before
    assert (app.user, ADMIN, False, False, True) in before


def shape(app: App) -> list[tuple[Any, ...]]:
    """:func:`memberships` with the app's own names replaced, to compare two apps."""
    names = {app.user: "user", app.green: "green", app.group: "group", ADMIN: "admin"}
    return sorted(
        (names[role], names.get(grantor, "superuser"), *options)
        for role, grantor, *options in memberships(app)
    )


def test_an_init_killed_between_grant_and_revoke_is_named_and_taken_back_by_the_next_init(
    app: App, tmp_path: Path, cli: Any
) -> None:
    twin = make_app(app.cluster)
    initialised(twin, SqliteStore(tmp_path / "twin.db"))  # an init that was not killed
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout(f"lease-{serial()}")
    crash("init", app, store, layout, 1)
    shown = cli("status", "--env", layout.env, "--store", store.url)
    assert shown.code != 0
    assert "an init that died left a lease" in shown.err, shown.err
    assert f"holds membership in {app.user}" in shown.err, shown.err
    assert "run 'credflip init' again" in shown.err
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    assert read_lease(store, layout) is None
    assert shape(app) == shape(twin)


def test_the_dry_run_shows_a_lease_and_rollback_takes_it_back(
    app: App, tmp_path: Path, cli: Any
) -> None:
    """A lease left by a run that died: the dry run prints the revoke the next run makes
    first; ``rollback`` makes it, leaving the admin's memberships as they were."""
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store)
    assert rotate(store, layout, admin_url=app.admin_url, options=opts()).finished
    before = memberships(app)
    options = " WITH INHERIT TRUE, SET FALSE" if app.cluster.version >= 16 else ""
    with app.connect(app.admin_url) as conn:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER" + options).format(sql.Identifier(app.user)))
    # As a rollback killed in its restore of blue would leave it.
    lease = Lease(ADMIN, "db:5432", (Lent(app.user), Lent(app.green, "SET")), time.time(), "x")
    store.put(layout.lease, lease.to_json(), secure=False)
    dry = cli(*command("rotate", app, store, layout, "--dry-run"))
    assert dry.code == 0, dry.err
    assert "0. first take back what a run that died lent the admin" in dry.out, dry.out
    # Only what the admin still holds: nothing for the SET it never got on green.
    first = dry.out.split("0. first take back", 1)[1].split("1. prepare", 1)[0]
    assert f'REVOKE "{app.user}" FROM CURRENT_USER;' in first, first
    assert app.green not in first.split("SQL", 1)[1]
    rollback(store, layout, admin_url=app.admin_url)
    assert memberships(app) == before
    assert read_lease(store, layout) is None


def test_another_admin_is_refused_and_the_lease_kept(app: App, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "params.db")
    layout = initialised(app, store)
    lease = Lease("someone_else", "db:5432", (Lent(app.user),), time.time(), "rotate")
    store.put(layout.lease, lease.to_json(), secure=False)
    with pytest.raises(ConfigurationError, match="only that admin can"):
        rotate(store, layout, admin_url=app.admin_url, options=opts())
    assert store.get(layout.lease) == lease.to_json()
    assert load_state(store, layout).current is None


# -- without a server -----------------------------------------------------------


class Book:
    """A lease book that notes when it was written, in the plan's steps."""

    def __init__(self, eng: Scripted) -> None:
        self.eng, self.events = eng, []

    def record(self, rights: Any) -> None:
        self.events.append(("record", tuple(rights), len(self.eng.ran)))

    def clear(self, rights: Any) -> None:
        self.events.append(("clear", tuple(rights), len(self.eng.ran)))


def lending_plan() -> list[Step]:
    return [
        Step(sql.SQL("GRANT a TO CURRENT_USER"), lends=Lent("a")),
        Step(sql.SQL("GRANT b TO CURRENT_USER WITH SET TRUE"), lends=Lent("b", "SET")),
        Step(sql.SQL("REASSIGN OWNED BY a TO b")),
        Step(sql.SQL("REVOKE a FROM CURRENT_USER"), cleanup=True),
        Step(sql.SQL("REVOKE SET OPTION FOR b FROM CURRENT_USER"), cleanup=True),
    ]


def test_a_plan_records_its_lease_before_its_first_step_and_clears_it_after_its_last() -> None:
    eng = Scripted(Clock(), {}, budget=60)
    eng.leases = book = Book(eng)
    eng.execute(lending_plan())
    rights = (Lent("a"), Lent("b", "SET"))
    assert book.events == [("record", rights, 0), ("clear", rights, len(eng.ran))]
    assert eng.ran[-1] == "REVOKE SET OPTION FOR b FROM CURRENT_USER"
    book.events.clear()
    eng.execute([Step(sql.SQL("ALTER ROLE a NOLOGIN"))])
    assert book.events == []  # nothing lent, nothing written


def test_a_plan_refused_midway_still_takes_back_and_clears_its_lease() -> None:
    eng = Scripted(Clock(), {"REASSIGN OWNED BY a TO b": 99}, budget=1)
    eng.leases = book = Book(eng)
    with pytest.raises(LockTimeout):
        eng.execute(lending_plan())
    assert [e[0] for e in book.events] == ["record", "clear"]
    assert eng.ran[-2:] == [
        "REVOKE a FROM CURRENT_USER",
        "REVOKE SET OPTION FOR b FROM CURRENT_USER",
    ]


class Interrupted(Scripted):
    """Stopped in the middle of a statement (Ctrl-C): no later step runs."""

    def _execute(self, step: Step, watch: Any) -> None:
        if step.sql.as_string(None).startswith("REASSIGN"):
            raise KeyboardInterrupt
        super()._execute(step, watch)


@pytest.mark.parametrize("fails", ["REVOKE a FROM CURRENT_USER", "interrupted"])
def test_a_plan_that_cannot_take_back_or_is_stopped_keeps_its_lease(fails: str) -> None:
    if fails == "interrupted":
        eng: Scripted = Interrupted(Clock(), {}, budget=1)
        eng.leases = book = Book(eng)
        with pytest.raises(KeyboardInterrupt):
            eng.execute(lending_plan())
    else:
        eng = Scripted(Clock(), {fails: 99}, budget=1)
        eng.leases = book = Book(eng)
        eng.execute(lending_plan())  # a cleanup step's failure is not the plan's
        assert eng.ran[-1] == "REVOKE SET OPTION FOR b FROM CURRENT_USER"  # cleanup still ran
    assert [e[0] for e in book.events] == ["record"]


def test_the_keeper_merges_what_is_outstanding_and_removes_the_lease_when_nothing_is(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "params.db")
    layout = Layout("keeper")
    keeper = LeaseKeeper(store, layout, DbUrl.parse("postgresql://adm:pw@db:5433/app"), by="init")
    keeper.record([Lent("a")])
    keeper.record([Lent("a"), Lent("b", "SET")])
    lease = read_lease(store, layout)
    assert lease is not None
    assert (lease.admin, lease.server, lease.by) == ("adm", "db:5433", "init")
    assert lease.rights == (Lent("a"), Lent("b", "SET"))
    assert "pw" not in (store.get(layout.lease) or "")
    assert Lease.from_json(lease.to_json(), where="x") == lease
    keeper.clear([Lent("a")])
    lease = read_lease(store, layout)
    assert lease is not None and lease.rights == (Lent("b", "SET"),)
    keeper.clear([Lent("b", "SET")])
    assert store.get(layout.lease) is None
    store.put(layout.lease, "{not json", secure=False)
    with pytest.raises(ConfigurationError, match="is not a valid lease"):
        read_lease(store, layout)


def test_lending_inherit_on_a_grant_of_its_own_leaves_its_set_option_alone() -> None:
    assert [
        s.sql.as_string(None)
        for s in (
            pg.grant_self("app", options=True),
            pg.grant_self("app", options=True, held=True),
            pg.grant_self("app", options=False),
        )
    ] == [
        'GRANT "app" TO CURRENT_USER WITH INHERIT TRUE, SET FALSE',
        'GRANT "app" TO CURRENT_USER WITH INHERIT TRUE',
        'GRANT "app" TO CURRENT_USER',
    ]
    with pytest.raises(ValueError, match="unknown membership option"):
        Lent("app", "ADMIN")
