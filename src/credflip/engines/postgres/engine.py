"""PostgreSQL (13 to 18) and Aurora PostgreSQL through psycopg 3.

Rights model: a NOLOGIN *group role* owns the schema objects and holds the
privileges. Both colors are members of it and carry the role setting
``role = <group>``, so every session starts with ``SET ROLE <group>`` and
whatever either color creates is owned by the group: the other color can
ALTER or DROP it after the next rotation.

The admin needs CREATEROLE, not SUPERUSER (as on RDS); on 16+ also ADMIN
OPTION on the application's users. It gives itself the privileges of the group
(to grant on the group's objects) and, for the few statements that need it
(``REASSIGN OWNED``, ``DROP OWNED``), briefly those of the login users.

Every change is planned first (:mod:`.catalog` reads, :mod:`.plan` builds the
statements) and then executed in one place, so ``rotate --dry-run`` prints
exactly what a rotation runs. Passwords are sent only as SCRAM verifiers
computed here, so ``log_statement=all`` never records a plaintext password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ...errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    DatabaseUnavailable,
    EngineError,
    InsufficientPrivilege,
    RotationError,
    is_auth_failure,
)
from ...urls import DbUrl, libpq_kwargs, scrub
from .. import register
from ..base import Engine, Observation, SessionGroup, Sessions, Signal, Step, UserState
from . import catalog, plan
from . import signals as pg_signals

__all__ = ["PostgresEngine", "default_group", "scram_verifier"]

_Query = str | bytes | sql.SQL | sql.Composed

_MIN_VERSION = 130000

#: SQLSTATEs of a server that is shutting down, crashed or not yet accepting.
_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


@register
@dataclass
class PostgresEngine(Engine):
    """PostgreSQL through psycopg 3, with a CREATEROLE admin."""

    name = "postgresql"
    schemes = ("postgresql", "postgres", "psql")
    driver_error = psycopg.Error

    _statements: tuple[Signal, pg_signals.Statements | None] | None = field(
        default=None, repr=False
    )

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs = libpq_kwargs(url)
        kwargs.setdefault("connect_timeout", max(2, round(self.connect_timeout)))
        kwargs.setdefault("application_name", "credflip")
        # A peer that vanished (host down, network cut) is noticed by TCP;
        # a frozen server is caught by the statement guard.
        kwargs.setdefault("keepalives", 1)
        kwargs.setdefault("keepalives_idle", 10)
        kwargs.setdefault("keepalives_interval", 5)
        kwargs.setdefault("keepalives_count", 3)
        kwargs.setdefault("tcp_user_timeout", int(self.statement_timeout * 1000))
        try:
            return psycopg.connect(autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise self._connect_error(exc, url, what) from exc

    def _connect_error(self, exc: psycopg.Error, url: DbUrl, what: str) -> EngineError:
        message = self._diag(exc)
        low = message.lower()
        where = f"{url.host}:{url.port or 5432}"
        if is_auth_failure(exc):
            if exc.sqlstate == "28P01" or "password authentication failed" in low:
                return AuthenticationFailed(
                    f"{what} was refused: password authentication failed for user {url.user!r} "
                    f"at {where}; check the user and password"
                )
            return AuthenticationFailed(
                f"{what} was refused at {where}: {message}; the user is locked, lacks LOGIN or "
                f"does not exist"
            )
        if exc.sqlstate == "3D000" or ("database" in low and "does not exist" in low):
            return ConnectFailed(f"{what}: {message}; check the database name in the URL")
        return DatabaseUnavailable(
            f"cannot connect {what} to PostgreSQL at {where}: {message}; check host, port and "
            f"that the server is running"
        )

    @staticmethod
    def _is_open(conn: Any) -> bool:
        return not conn.closed

    @staticmethod
    def _message(exc: BaseException) -> str:
        return str(exc).strip().removeprefix("connection failed: ")

    @contextlib.contextmanager
    def _database(self, dbname: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An admin connection to *dbname* (the main one when it is the admin's database)."""
        if dbname == (self.admin_url.database or self.admin_url.user):
            yield self.conn
            return
        url = dataclasses.replace(self.admin_url, database=dbname)
        conn = self._connect(url, what=f"the admin to database {dbname!r}")
        try:
            yield conn
        finally:
            conn.close()

    def _run(
        self,
        query: _Query,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        conn: psycopg.Connection[tuple[Any, ...]] | None = None,
        hint: str = "",
    ) -> list[tuple[Any, ...]]:
        """Execute one statement as admin; translate driver errors."""
        target = conn if conn is not None else self.conn
        late: list[bool] = []
        try:
            with self._guard(target) as late:
                cur = target.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.errors.InsufficientPrivilege as exc:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} was refused: {self._diag(exc)}"
                + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
            ) from exc
        except psycopg.Error as exc:
            lost = self._lost(exc, target, late=bool(late), where=_where(target))
            if lost is not None:
                raise lost from exc
            raise EngineError(f"PostgreSQL refused a statement: {self._diag(exc)}") from exc

    @contextlib.contextmanager
    def _guard(self, conn: Any) -> Iterator[list[bool]]:
        """Give up on *conn* when the server stays silent past the statement timeout.

        libpq has no client-side timeout for a statement, and a stopped server
        keeps its socket open (the kernel still acknowledges our packets). A
        timer shuts the socket down, so the waiting call fails at once with
        "server closed the connection" instead of hanging.
        """
        late: list[bool] = []
        fd = _socket_of(conn)
        if fd is None:  # already closed: the call fails by itself
            yield late
            return

        def give_up() -> None:
            late.append(True)
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

        timer = threading.Timer(self.statement_timeout, give_up)
        timer.daemon = True
        timer.start()
        try:
            yield late
        finally:
            timer.cancel()

    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        if getattr(exc, "sqlstate", None) in _GOING_AWAY:
            return True
        return isinstance(exc, psycopg.OperationalError) and bool(conn.closed)

    def _execute(self, step: Step) -> None:
        with self._database(step.database or self._main) as conn:
            self._run(step.sql, step.params, conn=conn, hint=step.hint)

    def render(self, step: Step) -> str:
        """The statement as sent, with the password, verifier and admin password masked."""
        text = step.sql if isinstance(step.sql, str) else step.sql.as_string(self.conn)
        return scrub(str(text), self._known_secrets())

    @property
    def _main(self) -> str:
        return self.admin_url.database or self.admin_url.user

    def _in(self, dbname: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Call catalog *func* with a runner bound to database *dbname*."""
        with self._database(dbname) as conn:
            return func(functools.partial(self._run, conn=conn), *args, **kwargs)

    @property
    def _options_on_memberships(self) -> bool:
        """PostgreSQL 16+: memberships carry INHERIT and SET options besides ADMIN."""
        return int(self.conn.info.server_version) >= 160000

    def _memberships(self, role: str) -> dict[str, catalog.Membership]:
        return catalog.memberships(self._run, role, options=self._options_on_memberships)

    # -- admin -----------------------------------------------------------

    def check_admin(self) -> None:
        """Check the server version and that the admin has CREATEROLE."""
        version = self.conn.info.server_version
        if version < _MIN_VERSION:
            raise ConfigurationError(
                f"PostgreSQL {version // 10000} is not supported: credflip needs 13 or later"
            )
        rows = self._run(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        superuser, createrole = rows[0]
        if not (superuser or createrole):
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} lacks CREATEROLE: as a superuser (or the RDS master user) "
                f"run ALTER ROLE {admin} CREATEROLE"
            )

    # -- users -----------------------------------------------------------

    def user_state(self, user: str) -> UserState:
        """Return whether *user* exists and has LOGIN."""
        login = catalog.role_flag(self._run, user, "rolcanlogin")
        return UserState(user, exists=login is not None, can_login=bool(login))

    def _exists(self, role: str) -> bool:
        return catalog.exists(self._run, role)

    def adopt(self, *, active: str, inactive: str, group: str | None) -> str:
        """Create the group, move ownership and rights to it, and create *inactive*.

        Executed in stages, each planned from the catalog as the previous one
        left it (ownership moves change what the next stage copies).
        """
        group = group or default_group(active)
        if len({active, inactive, group}) != 3:
            raise ConfigurationError(
                f"users {active!r}, {inactive!r} and group {group!r} must all differ: pass "
                f"--green-user or --group-role"
            )
        self.check_admin()
        for user in (active, inactive):
            if catalog.role_flag(self._run, user, "rolsuper"):
                raise ConfigurationError(
                    f"user {user!r} is a superuser: credflip cannot manage it; give the "
                    f"application an ordinary user"
                )
        group_login = catalog.role_flag(self._run, group, "rolcanlogin")
        if group_login:
            raise ConfigurationError(
                f"group role {group!r} exists and can log in; pick another with --group-role"
            )
        self._require_admin_option([u for u in (active, inactive, group) if self._exists(u)])
        users = [u for u in (active, inactive) if self._exists(u)]
        self._check_can_move_databases(users)
        if group_login is None:
            self.execute([plan.create_role(group)])
        # Membership first: once REASSIGN OWNED hands the tables to the group,
        # the application's sessions reach them through it. In the other
        # order they would lose their own tables for a moment (and on a
        # lagging replica for as long as it lags).
        self.execute([*self._admin_privileges_of(group), plan.grant_role(group, active)])
        before, after = self._acting_as(users, to=group)
        steps = list(before)
        # Ownership of everything the users own moves to the group, in every
        # database: REASSIGN OWNED only sees the current one.
        for dbname in catalog.databases_of(self._run, users, deptypes=("o",), main=self._main):
            # REASSIGN OWNED may reach a function or type before its schema,
            # and the new owner needs CREATE on that schema.
            for schema in self._in(dbname, catalog.schemas_of, users):
                steps.append(plan.grant_create_on_schema(schema, group, dbname))
            steps.append(plan.reassign_owned(users, group, dbname))
            for user in users:
                steps += plan.copy_default_acl(
                    self._in(dbname, catalog.default_acl, user), group, dbname
                )
        self.execute([*steps, *(step for _, step in after)])
        # The group must be able to do whatever the active user could on its
        # own, because sessions will run as the group.
        self.execute(self._plan_copy_to_group(active, group))
        steps = [plan.set_role_setting(active, group)]
        if not self._exists(inactive):
            steps.append(plan.create_role(inactive))
        self.execute(steps)
        self.execute(self._plan_sync_rights(active, inactive))
        return group

    def _check_can_move_databases(self, users: Sequence[str]) -> None:
        # Changing a database's owner needs CREATEDB on the admin; say so
        # before anything changes rather than half way through.
        owned = catalog.owned_databases(self._run, users)
        if not owned:
            return
        can = self._run(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )[0][0]
        if not can:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"{', '.join(users)} own(s) database(s) {owned}; handing them to the group role "
                f"needs CREATEDB on the admin: as a superuser run ALTER ROLE {admin} CREATEDB"
            )

    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """Create or update *user*: the rights of *like* first, then password and LOGIN.

        One snapshot of the catalog suffices: the steps change only *user*
        and the group, never what they are computed from.
        """
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self._require_admin_option([r for r in (user, group) if r is not None and self._exists(r)])
        steps: list[Step] = []
        if not self._exists(user):
            steps.append(plan.create_role(user))
        if group:
            # Sessions run as the group (SET ROLE), so a right someone granted
            # to the active user directly only takes effect once the group
            # holds it too. Adding it is what the operator meant.
            steps += self._plan_copy_to_group(like, group)
        steps += self._plan_sync_rights(like, user)
        verifier = scram_verifier(self.conn, user, password)
        self.remember_secret(verifier)
        steps.append(plan.set_password(user, verifier))
        return steps

    def _plan_copy_to_group(self, source: str, group: str) -> list[Step]:
        want = {k: v for k, v in self._memberships(source).items() if k != group}
        steps = plan.sync_memberships(
            want,
            self._memberships(group),
            group,
            revoke_extra=False,
            options=self._options_on_memberships,
        )
        return steps + self._plan_sync_grants(source, group, revoke_extra=False)

    def _plan_sync_rights(self, source: str, target: str) -> list[Step]:
        """Make *target*'s attributes, memberships, settings and grants equal *source*'s."""
        steps = [plan.set_attributes(target, catalog.attributes(self._run, source))]
        steps += plan.sync_memberships(
            self._memberships(source),
            self._memberships(target),
            target,
            revoke_extra=True,
            options=self._options_on_memberships,
        )
        steps += plan.sync_settings(
            catalog.settings(self._run, source), catalog.settings(self._run, target), target
        )
        return steps + self._plan_sync_grants(source, target, revoke_extra=True)

    def _plan_sync_grants(self, source: str, target: str, *, revoke_extra: bool) -> list[Step]:
        steps = plan.sync_grants(
            catalog.database_grants(self._run, source),
            catalog.database_grants(self._run, target),
            target,
            revoke_extra=revoke_extra,
            database=self._main,
        )
        for dbname in catalog.databases_of(
            self._run, [source, target], deptypes=("a",), main=self._main
        ):
            steps += plan.sync_grants(
                self._in(dbname, catalog.grants_in, source),
                self._in(dbname, catalog.grants_in, target),
                target,
                revoke_extra=revoke_extra,
                database=dbname,
            )
        return steps

    def _all_grants(self, role: str) -> set[catalog.Grant]:
        grants = catalog.database_grants(self._run, role)
        for dbname in catalog.databases_of(self._run, [role], deptypes=("a",), main=self._main):
            grants |= {
                g._replace(database=dbname) for g in self._in(dbname, catalog.grants_in, role)
            }
        return grants

    def lock_user(self, user: str) -> None:
        """``ALTER ROLE user NOLOGIN``: open sessions stay, new logins are refused."""
        self.execute(self._plan_lock(user))

    def _plan_lock(self, user: str) -> list[Step]:
        return [plan.set_login(user, False)] if self._exists(user) else []

    def unlock_user(self, user: str) -> None:
        """``ALTER ROLE user LOGIN``."""
        self.execute([plan.set_login(user, True)])

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """Reassign and drop what *user* owns, then ``DROP ROLE``; refuse if anything is lost."""
        self.execute(self._plan_drop(user, keep=keep, group=group))

    def _plan_drop(self, user: str, *, keep: str, group: str | None) -> list[Step]:
        if not self._exists(user):
            return []
        problems: list[str] = []
        lost = sorted(self._all_grants(user) - self._all_grants(keep))
        if lost:
            problems.append(
                f"it holds rights {keep!r} lacks: "
                + ", ".join(g.describe() for g in lost[:5])
                + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            )
        missing = sorted(set(self._memberships(user)) - set(self._memberships(keep)))
        if missing:
            problems.append(f"it is a member of {', '.join(missing)} and {keep!r} is not")
        owned = catalog.owns_objects(self._run, user)
        if owned and not group:
            problems.append(
                f"it owns objects in {', '.join(owned)} and no group role is set up to take them"
            )
        if problems:
            raise RotationError(
                f"refusing to drop user {user!r}: {'; '.join(problems)}; retire it with "
                f"--retire lock instead, or move those rights first"
            )
        before, after = self._acting_as([user], to=group)
        steps = list(before)
        for dbname in catalog.databases_of(self._run, [user], deptypes=("o", "a"), main=self._main):
            if group:
                steps.append(plan.reassign_owned([user], group, dbname))
            steps.append(plan.drop_owned(user, dbname))
        steps.append(plan.drop_role(user))
        # Nothing to take back on a role that is gone.
        return steps + [step for role, step in after if role != user]

    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """Drop *user*, or lock it and undo the drain's watch."""
        if drop:
            return self._plan_drop(user, keep=keep, group=group)
        return self._plan_lock(user) + self._plan_end_watch(user, group, watched=watched)

    # -- the admin's own memberships -----------------------------------------

    def _admin_privileges_of(self, role: str) -> list[Step]:
        """Let the admin act with *role*'s privileges (to grant on and give to its objects).

        On PostgreSQL 16+ it grants itself INHERIT only, never SET: it never
        needs to become the group.
        """
        if catalog.admin_has(self._run, role, "USAGE"):
            return []
        return [plan.grant_self(role, options=self._options_on_memberships)]

    def _require_admin_option(self, roles: Sequence[str]) -> None:
        """PostgreSQL 16+: CREATEROLE covers only roles the admin holds ADMIN OPTION on.

        Checked before anything changes, so that a missing grant is one clear
        message instead of a half-done init or prepare.
        """
        if not self._options_on_memberships:
            return
        missing = [
            r
            for r in sorted(roles)
            if not catalog.admin_has(self._run, r, "MEMBER WITH ADMIN OPTION")
        ]
        if missing:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} lacks ADMIN OPTION on {', '.join(missing)}, which "
                f"PostgreSQL 16+ requires to manage a role: as a superuser (RDS/Aurora: the "
                f"master user) run "
                + "; ".join(
                    f"GRANT {m} TO {admin} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
                    for m in missing
                )
            )

    def _acting_as(
        self, roles: Sequence[str], *, to: str | None
    ) -> tuple[list[Step], list[tuple[str, Step]]]:
        """Steps that give the admin what ``REASSIGN OWNED BY roles TO to`` and ``DROP
        OWNED`` need, and the cleanup steps that take it back.

        That is the privileges (INHERIT) of each of *roles*, and on 16+ the
        right to SET ROLE to *to* (giving it a database needs that). The admin
        grants itself only those options and afterwards takes back exactly
        what it added: an option of a grant of its own that existed before,
        or the whole grant. It keeps INHERIT on the group.
        """
        options = self._options_on_memberships
        before: list[Step] = []
        after: list[tuple[str, Step]] = []
        for role in roles:
            if not catalog.admin_has(self._run, role, "USAGE"):
                existed = options and catalog.admin_granted_itself(self._run, role)
                before.append(plan.grant_self(role, options=options))
                after.append((role, _cleanup(plan.revoke_self(role, "INHERIT" if existed else ""))))
        if to is not None:
            kept = self._admin_privileges_of(to)
            before += kept
            if options and not catalog.admin_has(self._run, to, "SET"):
                existed = bool(kept) or catalog.admin_granted_itself(self._run, to)
                before.append(plan.grant_self_set(to))
                after.append((to, _cleanup(plan.revoke_self(to, "SET" if existed else ""))))
        return before, after

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A psycopg connection as an application would open it."""
        return psycopg.connect(**libpq_kwargs(url), connect_timeout=max(1, int(timeout)))

    def _begin(self, conn: Any) -> None:
        conn.autocommit = False

    def sessions(self, user: str) -> Sessions:
        """Sessions of *user* in ``pg_stat_activity``, by client address and application."""
        rows = self._run(pg_signals.SESSIONS_SQL, [user])
        return Sessions(tuple(SessionGroup(str(c), str(a), int(n)) for c, a, n in rows))

    def terminate(self, user: str) -> int:
        """``pg_terminate_backend`` every session of *user*, waiting until each has exited.

        The signal alone returns before the backend is gone; from 14 on the
        function waits (up to 5 s each) so the count is of sessions that ended.
        """
        wait = ", 5000" if int(self.conn.info.server_version) >= 140000 else ""
        rows = self._run(
            f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid{wait})) "
            "FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            [user],
            hint=f"grant it pg_signal_backend: GRANT pg_signal_backend TO {self.admin_url.user}",
        )
        return int(rows[0][0])

    # -- the drain ---------------------------------------------------------

    def _statements_source(self) -> tuple[Signal, pg_signals.Statements | None]:
        if self._statements is None:
            database = self.admin_url.database or self.admin_url.user
            self._statements = pg_signals.find_statements(self._run, database)
        return self._statements

    def signals(self) -> list[Signal]:
        """``pg_stat_activity`` (open sessions) and ``pg_stat_statements`` (cumulative)."""
        return [
            Signal("pg_stat_activity", cumulative=False, available=True, detail="open sessions"),
            self._statements_source()[0],
        ]

    def observe(self, user: str) -> Observation:
        """Open sessions of *user* and, where available, its pg_stat_statements entries."""
        sessions = self.sessions(user)
        source = self._statements_source()[1]
        if source is None:
            return Observation(sessions)
        return Observation(sessions, source.fingerprint(self._run, user))

    def enable_signals(self) -> list[str]:
        """``CREATE EXTENSION pg_stat_statements`` when it is preloaded and the admin may."""
        loaded, schema = pg_signals.extension_state(self._run)
        if not loaded or schema is not None:
            return []
        try:
            self._run("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except EngineError:
            return []  # signals() says who must run it
        self._statements = None
        database = self.admin_url.database or self.admin_url.user
        return [f"created extension pg_stat_statements in database {database}"]

    def count_problem(self, user: str, group: str | None) -> str | None:
        """Why *user*'s statements cannot be told apart from the other color's."""
        return pg_signals.watch_problem(self._run, user, group)

    def plan_watch(self, user: str, group: str | None) -> list[Step]:
        """Let *user*'s new logins run as itself, so pg_stat_statements counts them as its own.

        Its sessions normally switch to the group role at login, where both
        colors look the same. Only run once the pointer names the other
        color, and only when *user* inherits the group's rights.
        """
        if group is None or self.count_problem(user, group) is not None:
            return []
        if pg_signals.role_settings(self._run, user):
            return [plan.set_role_setting(user, None)]
        return []

    def end_watch(self, user: str, group: str | None) -> None:
        """Restore *user*'s ``role`` setting and give the group what late sessions created."""
        self.execute(self._plan_end_watch(user, group, watched=None))

    def _plan_end_watch(self, user: str, group: str | None, *, watched: bool | None) -> list[Step]:
        if group is None or not self._exists(user):
            return []
        steps: list[Step] = []
        has_setting = (
            bool(pg_signals.role_settings(self._run, user)) if watched is None else not watched
        )
        if not has_setting:
            steps.append(plan.set_role_setting(user, group))
        if catalog.owns_objects(self._run, user):
            before, after = self._acting_as([user], to=group)
            steps += before
            for dbname in catalog.databases_of(self._run, [user], deptypes=("o",), main=self._main):
                steps.append(plan.reassign_owned([user], group, dbname))
            steps += [step for _, step in after]
        return steps

    def is_standby(self) -> bool:
        """``pg_is_in_recovery()``."""
        return bool(self._run("SELECT pg_is_in_recovery()")[0][0])

    def position(self) -> str | None:
        """``pg_current_wal_insert_lsn()`` on a primary; None on a standby.

        The *insert* position: it includes the commit records of the admin's
        last statements even when ``synchronous_commit`` is off and they are
        not yet written (``pg_current_wal_lsn()`` can be behind them).
        """
        rows = self._run(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
            "ELSE pg_current_wal_insert_lsn()::text END"
        )
        return None if rows[0][0] is None else str(rows[0][0])

    def replay_gap(self, position: str) -> int | None:
        """Bytes until ``pg_last_wal_replay_lsn()`` reaches *position* (0 on the primary)."""
        return pg_signals.standby_gap(self._run, position)

    def cluster_members(self) -> list[str] | None:
        """Aurora PostgreSQL: instance identifiers from ``aurora_replica_status()``."""
        if not self._run("SELECT to_regproc('aurora_replica_status') IS NOT NULL")[0][0]:
            return None
        return [str(r[0]) for r in self._run(pg_signals.AURORA_MEMBERS_SQL)]


def scram_verifier(conn: psycopg.Connection[Any], user: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of *password*, computed here, never on the server."""
    return conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()


def default_group(user: str) -> str:
    """The group role for a user: ``app`` → ``app_owner``, ``app_blue`` → ``app_owner``."""
    for suffix in ("_blue", "-blue", "_green", "-green"):
        if user.endswith(suffix) and len(user) > len(suffix):
            user = user[: -len(suffix)]
            break
    return f"{user}_owner"


def _cleanup(step: Step) -> Step:
    """A step that runs even when an earlier one failed, its own failure ignored."""
    return dataclasses.replace(step, cleanup=True)


def _where(conn: Any) -> str:
    """``host:port`` of *conn*, even when it broke."""
    try:
        return f"{conn.info.host}:{conn.info.port}"
    except psycopg.Error:
        return "?"


def _socket_of(conn: Any) -> int | None:
    try:
        return int(conn.pgconn.socket)
    except psycopg.Error:
        return None
