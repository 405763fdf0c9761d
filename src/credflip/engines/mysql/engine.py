"""MySQL 8, MariaDB >= 10.6 and Aurora MySQL through PyMySQL: the engine.

Accounts are ``user@host``: the new color is created for every host pattern
the active user has, and accounts of the old color that the active user no
longer has are dropped. Rights are copied statement by statement from
``SHOW GRANTS FOR`` (global, database, table, column, routine and proxy
privileges, role grants and default roles, ``WITH GRANT OPTION``) after
revoking everything from the inactive user, and TLS requirements and
resource limits from ``SHOW CREATE USER``.

Passwords go to the server as a ``mysql_native_password`` hash computed here
(``IDENTIFIED BY PASSWORD '*...'`` on MariaDB, ``IDENTIFIED WITH
mysql_native_password AS '*...'`` on MySQL) whenever the active user uses that
plugin; only ``caching_sha2_password`` on MySQL 8 needs the plaintext, which
MySQL rewrites as ``<secret>`` in its logs.

Every change is planned first (:mod:`.plan`) from the server's own text
(``SHOW GRANTS``, ``SHOW CREATE USER``) and executed in one place.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import pymysql
import pymysql.cursors

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
from ...urls import DbUrl, pymysql_kwargs, scrub
from .. import register
from ..base import Engine, Observation, SessionGroup, Sessions, Signal, Step, UserState
from . import plan
from . import signals as my_signals

__all__ = ["MysqlEngine"]

# A quoted role as SHOW GRANTS prints it: `name` or `name`@`host`.
_NAME = r"`(?:[^`]|``)*`(?:@`(?:[^`]|``)*`)?"
_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370, 1410, 1698, 1095}
# Client errors of a lost or unreachable server (2002-2013, 2055), the server
# shutting down (1053), a killed connection (1927) and too many connections
# (1040, 1203): the statement did not fail, the connection did.
_LOST_ERRORS = {1040, 1053, 1203, 1927, 2002, 2003, 2006, 2013, 2055}


@register
@dataclasses.dataclass
class MysqlEngine(Engine):
    """MySQL or MariaDB through PyMySQL, with an admin that has CREATE USER."""

    name = "mysql"
    schemes = ("mysql", "mariadb")
    driver_error = pymysql.err.MySQLError

    _signals: list[Signal] | None = dataclasses.field(default=None, repr=False)

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> Any:
        kwargs = pymysql_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        # Socket timeouts: a frozen server neither answers nor closes.
        kwargs.setdefault("read_timeout", max(1, round(self.statement_timeout)))
        kwargs.setdefault("write_timeout", max(1, round(self.statement_timeout)))
        try:
            return pymysql.connect(**kwargs, autocommit=True, program_name="credflip")
        except pymysql.err.MySQLError as exc:
            raise self._connect_error(exc, url, what) from exc

    def _connect_error(self, exc: BaseException, url: DbUrl, what: str) -> EngineError:
        code = _errno(exc)
        message = self._diag(exc)
        where = f"{url.host}:{url.port or 3306}"
        if is_auth_failure(exc):
            return AuthenticationFailed(
                f"{what} was refused at {where}: {message}; check the user and password, or "
                f"whether the account is locked"
            )
        if code == 1044:
            return InsufficientPrivilege(
                f"{what} was refused at {where}: {message}; grant that user access to the "
                f"database, or name another one in the URL"
            )
        if code == 1049:
            return ConnectFailed(f"{what}: {message}; check the database name in the URL")
        return DatabaseUnavailable(
            f"cannot connect {what} to MySQL at {where}: {message}; check host, port and that "
            f"the server is running"
        )

    @staticmethod
    def _is_open(conn: Any) -> bool:
        return bool(conn.open)

    @staticmethod
    def _message(exc: BaseException) -> str:
        args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
        return str(args[1]) if len(args) > 1 else str(exc)

    def _run(self, query: str, args: Sequence[Any] | None = None, *, hint: str = "") -> list[Any]:
        """Execute one statement as admin; translate driver errors."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall()) if cur.description else []
        except pymysql.err.MySQLError as exc:
            url = self.admin_url
            lost = self._lost(exc, None, late=False, where=f"{url.host}:{url.port or 3306}")
            if lost is not None:
                raise lost from exc
            if _errno(exc) in _PRIVILEGE_ERRORS or is_auth_failure(exc):
                raise InsufficientPrivilege(
                    f"admin user {self.admin_url.user!r} was refused: {self._diag(exc)}"
                    + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
                ) from exc
            raise EngineError(f"MySQL refused a statement: {self._diag(exc)}") from exc

    def _execute(self, step: Step) -> None:
        self._run(step.sql, step.params, hint=step.hint)

    def _connection_lost(self, exc: BaseException, conn: Any) -> bool:
        # A read timeout is error 2013 "Lost connection ... (timed out)".
        return _errno(exc) in _LOST_ERRORS

    def render(self, step: Step) -> str:
        """The statement as sent, with passwords and hashes masked."""
        with self.conn.cursor() as cur:
            text = cur.mogrify(step.sql, step.params)
        return scrub(str(text), self._known_secrets())

    @property
    def is_mariadb(self) -> bool:
        """True when the server is MariaDB."""
        return "mariadb" in str(self.conn.get_server_info()).lower()

    # -- admin -----------------------------------------------------------

    def check_admin(self) -> None:
        """Check the admin may create users and read account details."""
        on_all = self._global_privileges()
        if "ALL PRIVILEGES" not in on_all and "CREATE USER" not in on_all:
            raise InsufficientPrivilege(
                f"admin user {self.admin_url.user!r} lacks CREATE USER: as root run GRANT CREATE "
                f"USER ON *.* TO {self.admin_url.user}"
            )
        self._run(
            "SELECT 1 FROM mysql.user LIMIT 1",
            hint=f"it must read account details: GRANT SELECT ON mysql.* TO {self.admin_url.user}",
        )

    def _global_privileges(self) -> str:
        """The admin's privileges ``ON *.*``, its roles' included (as Aurora's master has them)."""
        found: list[str] = []
        todo: list[str] = ["CURRENT_USER()"]
        seen: set[str] = set()
        while todo and len(seen) < 20:
            who = todo.pop()
            if who in seen:
                continue
            seen.add(who)
            try:
                # Role names below come from the server's own SHOW GRANTS output.
                rows = self._run(f"SHOW GRANTS FOR {who}")
            except EngineError as exc:
                # A role we may not inspect adds nothing; anything else (the
                # server unreachable, our own grants unreadable) is the answer.
                if isinstance(exc, ConnectFailed) or who == "CURRENT_USER()":
                    raise
                continue
            for (line,) in rows:
                text = str(line)
                on_all = re.match(r"GRANT (.*?) ON \*\.\* TO ", text)
                if on_all:
                    found.append(on_all.group(1))
                roles = re.fullmatch(rf"GRANT ((?:{_NAME}(?:, )?)+) TO .*", text)
                if roles:
                    todo += re.findall(_NAME, roles.group(1))
        return ", ".join(found)

    # -- the catalog -------------------------------------------------------

    def _hosts(self, user: str) -> list[str]:
        rows = self._run("SELECT Host FROM mysql.user WHERE User = %s ORDER BY Host", [user])
        return [str(r[0]) for r in rows]

    def _create_user_text(self, user: str, host: str) -> str:
        return str(self._run("SHOW CREATE USER %s@%s", [user, host])[0][0])

    def _grants(self, user: str, host: str) -> list[str]:
        """``SHOW GRANTS`` lines without their authentication part."""
        rows = self._run("SHOW GRANTS FOR %s@%s", [user, host])
        return [plan.IDENTIFIED.sub("", str(r[0])) for r in rows]

    def normalized_grants(self, user: str) -> dict[str, list[str]]:
        """Each host's grants with the grantee replaced by ``<grantee>``, sorted (for comparing)."""
        out: dict[str, list[str]] = {}
        for host in self._hosts(user):
            quoted = plan.quoted_account(user, host)
            out[host] = sorted(g.replace(quoted, "<grantee>") for g in self._grants(user, host))
        return out

    def definer_objects(self, user: str) -> list[str]:
        """Views, routines, triggers and events whose DEFINER is *user*."""
        rows = self._run(
            "SELECT CONCAT('view ', TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.VIEWS "
            "WHERE SUBSTRING_INDEX(DEFINER, '@', 1) = %s "
            "UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_SCHEMA, '.', ROUTINE_NAME) "
            "FROM information_schema.ROUTINES WHERE SUBSTRING_INDEX(DEFINER, '@', 1) = %s "
            "UNION ALL SELECT CONCAT('trigger ', TRIGGER_SCHEMA, '.', TRIGGER_NAME) "
            "FROM information_schema.TRIGGERS WHERE SUBSTRING_INDEX(DEFINER, '@', 1) = %s "
            "UNION ALL SELECT CONCAT('event ', EVENT_SCHEMA, '.', EVENT_NAME) "
            "FROM information_schema.EVENTS WHERE SUBSTRING_INDEX(DEFINER, '@', 1) = %s",
            [user, user, user, user],
        )
        return sorted(str(r[0]) for r in rows)

    # -- users -----------------------------------------------------------

    def user_state(self, user: str) -> UserState:
        """Whether *user* exists (any host) and every account of it is unlocked."""
        hosts = self._hosts(user)
        if not hosts:
            return UserState(user, exists=False)
        locked = any(" ACCOUNT LOCK" in self._create_user_text(user, h) for h in hosts)
        return UserState(user, exists=True, can_login=not locked)

    def adopt(self, *, active: str, inactive: str, group: str | None) -> str | None:
        """Create *inactive* (locked) for every host of *active*, with the same rights."""
        if active == inactive:
            raise ConfigurationError("blue and green must be two different users")
        self.check_admin()
        if not self._hosts(active):
            raise ConfigurationError(f"user {active!r} does not exist on this server")
        if not self._hosts(inactive):
            self.execute(self._plan_sync(active, inactive))
        # An inactive user that already exists (a hand-made setup) may still
        # serve clients: its rights are synced in prepare, once it is idle.
        return None

    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """Sync accounts and rights from *like*, then set the password and unlock."""
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self.remember_secret(plan.native_password_hash(password))
        steps = self._plan_sync(like, user)
        mariadb = self.is_mariadb
        plugins = {
            str(h): str(p)
            for h, p in self._run("SELECT Host, plugin FROM mysql.user WHERE User = %s", [like])
        }
        for host in self._hosts(like):  # the target's hosts, once synced
            plugin = plugins.get(host) or "mysql_native_password"
            steps.append(plan.set_password(user, host, password, plugin=plugin, mariadb=mariadb))
            steps.append(plan.set_lock(user, host, locked=False))
        return steps

    def _plan_sync(self, source: str, target: str) -> list[Step]:
        """Make *target*'s accounts and rights equal *source*'s (target must be idle)."""
        source_hosts, target_hosts = self._hosts(source), self._hosts(target)
        steps = [plan.drop_user(target, h) for h in sorted(set(target_hosts) - set(source_hosts))]
        for host in source_hosts:
            if host not in target_hosts:
                steps.append(plan.create_user(target, host))
            else:
                steps += plan.revoke_everything(self._grants(target, host), target, host)
            steps += plan.copy_grants(self._grants(source, host), source, target, host)
            steps.append(
                plan.tls_and_limits(self._create_user_text(source, host), source, target, host)
            )
        return steps

    def lock_user(self, user: str) -> None:
        """``ACCOUNT LOCK`` every account of *user*; open sessions stay."""
        self.execute(self._plan_lock(user, locked=True))

    def unlock_user(self, user: str) -> None:
        """``ACCOUNT UNLOCK`` every account of *user*."""
        self.execute(self._plan_lock(user, locked=False))

    def _plan_lock(self, user: str, *, locked: bool) -> list[Step]:
        return [plan.set_lock(user, host, locked=locked) for host in self._hosts(user)]

    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """``ACCOUNT LOCK`` (logins count per user here: nothing to undo), or ``DROP USER``."""
        if drop:
            return self._plan_drop(user, keep=keep)
        return self._plan_lock(user, locked=True)

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """``DROP USER`` every account of *user*, refused while anything depends on it."""
        self.execute(self._plan_drop(user, keep=keep))

    def _plan_drop(self, user: str, *, keep: str) -> list[Step]:
        hosts = self._hosts(user)
        if not hosts:
            return []
        problems = []
        definers = self.definer_objects(user)
        if definers:
            shown = ", ".join(definers[:5]) + (
                f" and {len(definers) - 5} more" if len(definers) > 5 else ""
            )
            problems.append(f"it is the DEFINER of {shown}")
        mine, theirs = self.normalized_grants(user), self.normalized_grants(keep)
        lost = sorted({g for h, gs in mine.items() for g in gs if g not in theirs.get(h, [])})
        if lost:
            problems.append(f"it holds rights {keep!r} lacks: {'; '.join(lost[:3])}")
        if problems:
            raise RotationError(
                f"refusing to drop user {user!r}: {'; '.join(problems)}; retire it with "
                f"--retire lock instead, or change those DEFINERs first"
            )
        return [plan.drop_user(user, host) for host in hosts]

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A PyMySQL connection as an application would open it."""
        kwargs = pymysql_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, int(timeout)))
        return pymysql.connect(**kwargs)

    def _begin(self, conn: Any) -> None:
        conn.begin()

    def sessions(self, user: str) -> Sessions:
        """Threads of *user* in the processlist, by client host."""
        rows = self._run(
            "SELECT SUBSTRING_INDEX(HOST, ':', 1), COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND ID <> CONNECTION_ID() GROUP BY 1 ORDER BY 2 DESC, 1",
            [user],
            hint=f"it needs PROCESS to see other users' sessions: GRANT PROCESS ON *.* TO "
            f"{self.admin_url.user}",
        )
        return Sessions(tuple(SessionGroup(str(host or "local"), "", int(n)) for host, n in rows))

    # -- the drain ---------------------------------------------------------

    def signals(self) -> list[Signal]:
        """The processlist, and the cumulative login counts this server keeps."""
        if self._signals is None:
            self._signals = my_signals.find_signals(
                self._run,
                admin=self.admin_url.user,
                privileges=self._global_privileges(),
                mariadb=self.is_mariadb,
            )
        return list(self._signals)

    def observe(self, user: str) -> Observation:
        """Threads of *user*, and its login counts where the server keeps them."""
        available = {s.name for s in self.signals() if s.cumulative and s.available}
        return Observation(self.sessions(user), my_signals.counters(self._run, user, available))

    def cluster_members(self) -> list[str] | None:
        """Aurora MySQL: instance identifiers from ``information_schema.replica_host_status``."""
        exists = self._run(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'information_schema' "
            "AND TABLE_NAME = 'REPLICA_HOST_STATUS'"
        )
        if not exists:
            return None
        rows = self._run(
            "SELECT SERVER_ID FROM information_schema.replica_host_status "
            "WHERE SESSION_ID = 'MASTER_SESSION_ID' "
            "OR time_to_sec(timediff(now(), LAST_UPDATE_TIMESTAMP)) <= 300 ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def terminate(self, user: str) -> int:
        """``KILL CONNECTION`` every thread of *user*."""
        ids = self._run(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND ID <> CONNECTION_ID()",
            [user],
        )
        ended = 0
        for (thread,) in ids:
            try:
                self._run(
                    "KILL CONNECTION %s",
                    [int(thread)],
                    hint=f"it needs CONNECTION ADMIN (or SUPER): GRANT CONNECTION ADMIN ON *.* TO "
                    f"{self.admin_url.user}",
                )
                ended += 1
            except EngineError as exc:
                if "Unknown thread id" not in str(exc):
                    raise
        return ended


def _errno(exc: BaseException) -> int:
    """The server's error number of a PyMySQL error (0 when it has none)."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return args[0] if args and isinstance(args[0], int) else 0
