"""MySQL 8, MariaDB >= 10.6 and Aurora MySQL through PyMySQL.

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Hashable, Sequence
from typing import Any

import pymysql
import pymysql.cursors

from ..errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    EngineError,
    InsufficientPrivilege,
    RotationError,
    UsageError,
    is_auth_failure,
)
from ..urls import DbUrl, scrub
from . import register
from .base import Engine, Observation, SessionGroup, Sessions, Signal, UserState

__all__ = ["MysqlEngine", "connect_kwargs", "native_password_hash"]

# A quoted role as SHOW GRANTS prints it: `name` or `name`@`host`.
_NAME = r"`(?:[^`]|``)*`(?:@`(?:[^`]|``)*`)?"
_PS = "performance_schema.accounts"
_US = "user_statistics"
_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370, 1410, 1698, 1095}

# In SHOW GRANTS / SHOW CREATE USER: the authentication part, never replayed.
_IDENTIFIED = re.compile(
    r" IDENTIFIED (?:BY PASSWORD '[^']*'|WITH \S+(?: AS '[^']*'| BY '[^']*')?|VIA .*?)"
    r"(?=( REQUIRE | WITH | PASSWORD | ACCOUNT |$))"
)
_REQUIRE = re.compile(r" REQUIRE (.+?)(?= WITH | PASSWORD | ACCOUNT |$)")
_LIMITS = re.compile(r" WITH ((?:MAX_\w+ \d+ ?)+)")


def native_password_hash(password: str) -> str:
    """``mysql_native_password``'s stored form: ``*`` + upper-hex SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the plugin's own format
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


#: URL query options passed to PyMySQL, with how to read their text.
_QUERY_OPTIONS: dict[str, Any] = {
    "charset": str,
    "collation": str,
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_disabled": "bool",
    "ssl_verify_cert": "bool",
    "ssl_verify_identity": "bool",
    "connect_timeout": int,
    "read_timeout": int,
    "write_timeout": int,
    "init_command": str,
    "sql_mode": str,
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def connect_kwargs(url: DbUrl) -> dict[str, Any]:
    """PyMySQL keyword arguments for *url*.

    Query options PyMySQL understands pass through (``ssl_ca``, ``charset``,
    ...); any other is refused rather than dropped, so that a URL asking for
    TLS never connects without it.
    """
    kwargs: dict[str, Any] = {
        "host": url.host,
        "port": url.port or 3306,
        "user": url.user,
        "password": url.password or "",
    }
    if url.database:
        kwargs["database"] = url.database
    for key, value in url.query:
        kind = _QUERY_OPTIONS.get(key)
        if kind is None:
            raise UsageError(
                f"MySQL URL option {key!r} is not supported: use "
                f"{', '.join(sorted(_QUERY_OPTIONS))} (for TLS: ssl_ca=PATH, "
                f"ssl_verify_cert=true)"
            )
        if kind == "bool":
            if value.lower() not in _TRUE | _FALSE:
                raise UsageError(f"MySQL URL option {key!r} takes true or false")
            kwargs[key] = value.lower() in _TRUE
        elif kind is int:
            if not value.isdigit():
                raise UsageError(f"MySQL URL option {key!r} takes a number of seconds")
            kwargs[key] = int(value)
        else:
            kwargs[key] = value
    return kwargs


@register
@dataclasses.dataclass
class MysqlEngine(Engine):
    """MySQL or MariaDB through PyMySQL, with an admin that has CREATE USER."""

    name = "mysql"
    schemes = ("mysql", "mariadb")
    driver_error = pymysql.err.MySQLError

    _conn: Any = dataclasses.field(default=None, repr=False)
    _signals: list[Signal] | None = dataclasses.field(default=None, repr=False)

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> Any:
        kwargs = connect_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, int(self.connect_timeout)))
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
        return ConnectFailed(
            f"cannot connect {what} to MySQL at {where}: {message}; check host, port and that "
            f"the server is running"
        )

    @property
    def conn(self) -> Any:
        """The admin connection, opened on first use."""
        if self._conn is None or not self._conn.open:
            self._conn = self._connect(self.admin_url, what="the admin URL")
        return self._conn

    def close(self) -> None:
        """Close the admin connection."""
        if self._conn is not None:
            if self._conn.open:
                self._conn.close()
            self._conn = None

    def _diag(self, exc: BaseException) -> str:
        args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
        text = str(args[1]) if len(args) > 1 else str(exc)
        secrets = [*self._secrets, *([self.admin_url.password] if self.admin_url.password else [])]
        return scrub(text.strip().splitlines()[0] if text.strip() else type(exc).__name__, secrets)

    def _run(self, query: str, args: Sequence[Any] | None = None, *, hint: str = "") -> list[Any]:
        """Execute one statement as admin; translate driver errors."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall()) if cur.description else []
        except pymysql.err.MySQLError as exc:
            if _errno(exc) in _PRIVILEGE_ERRORS or is_auth_failure(exc):
                raise InsufficientPrivilege(
                    f"admin user {self.admin_url.user!r} was refused: {self._diag(exc)}"
                    + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
                ) from exc
            raise EngineError(f"MySQL refused a statement: {self._diag(exc)}") from exc

    def _account(self, user: str, host: str) -> str:
        """``'user'@'host'``, both quoted by the driver."""
        return f"{self.conn.escape(user)}@{self.conn.escape(host)}"

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

    # -- users -----------------------------------------------------------

    def _hosts(self, user: str) -> list[str]:
        rows = self._run("SELECT Host FROM mysql.user WHERE User = %s ORDER BY Host", [user])
        return [str(r[0]) for r in rows]

    def _create_user_text(self, user: str, host: str) -> str:
        return str(self._run(f"SHOW CREATE USER {self._account(user, host)}")[0][0])

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
            self._sync(active, inactive)
        # An inactive user that already exists (a hand-made setup) may still
        # serve clients: its rights are synced in prepare, once it is idle.
        return None

    def prepare_user(self, user: str, password: str, *, like: str, group: str | None) -> None:
        """Sync accounts and rights from *like*, then set the password and unlock."""
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self._sync(like, user)
        mariadb = self.is_mariadb
        plugins = {
            str(h): str(p)
            for h, p in self._run("SELECT Host, plugin FROM mysql.user WHERE User = %s", [like])
        }
        for host in self._hosts(user):
            plugin = plugins.get(host) or "mysql_native_password"
            # User and host are parameters here: the driver quotes them, and a
            # host such as '%' cannot collide with the placeholders.
            if mariadb or plugin in ("mysql_native_password", ""):
                clause = (
                    "IDENTIFIED BY PASSWORD %s"
                    if mariadb
                    else "IDENTIFIED WITH mysql_native_password AS %s"
                )
                self._run(
                    f"ALTER USER %s@%s {clause}", [user, host, native_password_hash(password)]
                )
            else:
                # caching_sha2_password salts on the server: MySQL rewrites
                # this statement's secret as <secret> in its logs.
                self._run(
                    "ALTER USER %s@%s IDENTIFIED WITH caching_sha2_password BY %s",
                    [user, host, password],
                )
            self._run(f"ALTER USER {self._account(user, host)} ACCOUNT UNLOCK")

    def _grants(self, user: str, host: str) -> list[str]:
        """``SHOW GRANTS`` lines without their authentication part."""
        rows = self._run(f"SHOW GRANTS FOR {self._account(user, host)}")
        return [_IDENTIFIED.sub("", str(r[0])) for r in rows]

    def normalized_grants(self, user: str) -> dict[str, list[str]]:
        """Each host's grants with the grantee replaced by ``<grantee>``, sorted (for comparing)."""
        out: dict[str, list[str]] = {}
        for host in self._hosts(user):
            quoted = _quoted_account(user, host)
            out[host] = sorted(g.replace(quoted, "<grantee>") for g in self._grants(user, host))
        return out

    def _sync(self, source: str, target: str) -> None:
        """Make *target*'s accounts and rights equal *source*'s (target must be idle)."""
        source_hosts, target_hosts = self._hosts(source), self._hosts(target)
        for host in set(target_hosts) - set(source_hosts):
            self._run(f"DROP USER {self._account(target, host)}")
        for host in source_hosts:
            account = self._account(target, host)
            if host not in target_hosts:
                self._run(f"CREATE USER {account} ACCOUNT LOCK")
            else:
                self._revoke_everything(target, host)
            quoted = _quoted_account(source, host)
            for line in self._grants(source, host):
                if line.startswith("GRANT USAGE ON *.* TO ") and "GRANT OPTION" not in line:
                    # No privilege in it; TLS and limits are copied below with
                    # ALTER USER, which needs no global GRANT OPTION.
                    continue
                if quoted not in line:
                    raise EngineError(f"cannot read SHOW GRANTS line for {source}@{host}")
                self._run(
                    line.replace(quoted, account),
                    hint="the admin must hold each right WITH GRANT OPTION (and roles WITH ADMIN "
                    "OPTION) to give it",
                )
            self._copy_tls_and_limits(source, target, host)

    def _revoke_everything(self, user: str, host: str) -> None:
        account = self._account(user, host)
        quoted = _quoted_account(user, host)
        for line in self._grants(user, host):
            role = re.fullmatch(r"GRANT (`(?:[^`]|``)*`) TO " + re.escape(quoted), line)
            if role:
                self._run(f"REVOKE {role.group(1)} FROM {account}")
            proxy = re.fullmatch(r"GRANT PROXY ON (\S+) TO " + re.escape(quoted) + ".*", line)
            if proxy:
                self._run(f"REVOKE PROXY ON {proxy.group(1)} FROM {account}")
        self._run(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")

    def _copy_tls_and_limits(self, source: str, target: str, host: str) -> None:
        text = _IDENTIFIED.sub("", self._create_user_text(source, host))
        require = _REQUIRE.search(text)
        limits = _LIMITS.search(text)
        tls = require.group(1) if require else "NONE"
        if not re.fullmatch(
            r"(NONE|SSL|X509|(?:(?:AND )?(?:ISSUER|SUBJECT|CIPHER) '[^']*' ?)+)", tls.strip()
        ):
            raise EngineError(f"cannot copy the TLS requirement of {source}@{host}: {tls!r}")
        with_limits = (
            limits.group(1).strip()
            if limits
            else (
                "MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 "
                "MAX_USER_CONNECTIONS 0"
            )
        )
        # Both parts are the server's own rendering of the source account.
        self._run(f"ALTER USER {self._account(target, host)} REQUIRE {tls} WITH {with_limits}")

    def lock_user(self, user: str) -> None:
        """``ACCOUNT LOCK`` every account of *user*; open sessions stay."""
        self._set_account_lock(user, "LOCK")

    def unlock_user(self, user: str) -> None:
        """``ACCOUNT UNLOCK`` every account of *user*."""
        self._set_account_lock(user, "UNLOCK")

    def _set_account_lock(self, user: str, state: str) -> None:
        for host in self._hosts(user):
            self._run(f"ALTER USER {self._account(user, host)} ACCOUNT {state}")

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

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """``DROP USER`` every account of *user*, refused while anything depends on it."""
        hosts = self._hosts(user)
        if not hosts:
            return
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
        for host in hosts:
            self._run(f"DROP USER {self._account(user, host)}")

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A PyMySQL connection as an application would open it."""
        kwargs = connect_kwargs(url)
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
            self._signals = self._find_signals()
        return list(self._signals)

    def _find_signals(self) -> list[Signal]:
        admin = self.admin_url.user
        on_all = self._global_privileges()
        process = "ALL PRIVILEGES" in on_all or "PROCESS" in on_all
        # Without PROCESS both views silently show only the admin's own rows.
        need_process = f"GRANT PROCESS ON *.* TO {admin} (without it the view is silently empty)"
        out = [
            Signal(
                "processlist",
                cumulative=False,
                available=process,
                detail="open sessions" if process else need_process,
            )
        ]
        row = self._run("SELECT @@performance_schema")[0]
        if not row[0]:
            ps = Signal(
                _PS,
                cumulative=True,
                available=False,
                detail="set performance_schema=ON in the server's configuration and restart "
                "(RDS/Aurora: the DB parameter group)",
            )
        else:
            try:
                self._run("SELECT 1 FROM performance_schema.accounts LIMIT 0")
                ps = Signal(_PS, cumulative=True, available=True, detail="logins per account")
            except EngineError:
                ps = Signal(
                    _PS,
                    cumulative=True,
                    available=False,
                    detail=f"GRANT SELECT ON performance_schema.* TO {admin}",
                )
        out.append(ps)
        if self.is_mariadb:
            userstat = bool(self._run("SELECT @@userstat")[0][0])
            if not userstat:
                detail = (
                    "SET GLOBAL userstat = 1, and userstat = 1 in the server's configuration to "
                    "keep it after a restart (RDS: the DB parameter group)"
                )
            else:
                detail = "logins per user" if process else need_process
            out.append(Signal(_US, cumulative=True, available=userstat and process, detail=detail))
        return out

    def observe(self, user: str) -> Observation:
        """Threads of *user*, and its login counts where the server keeps them."""
        sessions = self.sessions(user)
        available = {s.name for s in self.signals() if s.cumulative and s.available}
        counters: dict[str, Hashable] = {}
        if _PS in available:
            row = self._run(
                "SELECT COALESCE(SUM(TOTAL_CONNECTIONS), 0), COUNT(*) "
                "FROM performance_schema.accounts WHERE USER = %s",
                [user],
            )[0]
            # When the accounts table is full, new accounts go uncounted
            # ("lost"): a rise there may be this user.
            lost = self._run("SHOW GLOBAL STATUS LIKE 'Performance_schema_accounts_lost'")
            counters[_PS] = (int(row[0]), int(row[1]), str(lost[0][1]) if lost else "")
        if _US in available:
            rows = self._run(
                "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS WHERE USER = %s",
                [user],
            )
            counters[_US] = int(rows[0][0]) if rows else None
        return Observation(sessions, counters)

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


def _quoted_account(user: str, host: str) -> str:
    """The account as SHOW GRANTS prints it: ```user`@`host```."""
    return "`" + user.replace("`", "``") + "`@`" + host.replace("`", "``") + "`"
