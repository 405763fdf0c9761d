"""PostgreSQL (>= 13) and Aurora PostgreSQL through psycopg 3.

Rights model: a NOLOGIN *group role* owns the schema objects and holds the
privileges. Both colors are members of it and carry the role setting
``role = <group>``, so every session starts with ``SET ROLE <group>`` and
whatever either color creates is owned by the group: the other color can
ALTER or DROP it after the next rotation.

The admin needs CREATEROLE, not SUPERUSER (as on RDS). It makes itself a member
of the group (to grant on the group's objects) and, for the few statements
that need it (``REASSIGN OWNED``, ``DROP OWNED``), briefly of the login users.

Passwords are sent only as SCRAM verifiers computed here
(:meth:`psycopg.pq.PGconn.encrypt_password`), so ``log_statement=all`` never
records a plaintext password.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

from ..errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectFailed,
    EngineError,
    InsufficientPrivilege,
    RotationError,
    is_auth_failure,
)
from ..urls import DbUrl, scrub
from . import pg_signals, register
from .base import Engine, Observation, SessionGroup, Sessions, Signal, UserState

__all__ = ["PostgresEngine", "connect_kwargs", "default_group", "scram_verifier"]

_Query = str | bytes | sql.SQL | sql.Composed

_MIN_VERSION = 130000

#: Privilege names as aclexplode() reports them; anything else is refused
#: rather than pasted into a statement.
_PRIVILEGES = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "MAINTAIN",
        "USAGE",
        "CREATE",
        "CONNECT",
        "TEMPORARY",
        "EXECUTE",
    }
)

#: GUCs whose value is a list: each element must be its own literal, or
#: ``search_path = 'a, b'`` would name one schema called "a, b".
_LIST_SETTINGS = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "local_preload_libraries",
        "datestyle",
    }
)

# Every object-level privilege granted *directly* to a role in the current
# database. Routines carry their identity arguments as the server prints
# them; that text is the server's own quoting of a signature, not input.
_GRANTS_SQL = """
WITH r AS (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname,
       '', '', a.privilege_type, a.is_grantable
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL aclexplode(c.relacl) a
 WHERE a.grantee = (SELECT oid FROM r)
UNION ALL
SELECT 'COLUMN', n.nspname, c.relname, '', att.attname, a.privilege_type, a.is_grantable
  FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL aclexplode(att.attacl) a
 WHERE a.grantee = (SELECT oid FROM r) AND NOT att.attisdropped
UNION ALL
SELECT 'SCHEMA', '', n.nspname, '', '', a.privilege_type, a.is_grantable
  FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
 WHERE a.grantee = (SELECT oid FROM r)
UNION ALL
SELECT 'ROUTINE', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), '',
       a.privilege_type, a.is_grantable
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  CROSS JOIN LATERAL aclexplode(p.proacl) a
 WHERE a.grantee = (SELECT oid FROM r)
UNION ALL
SELECT CASE WHEN t.typtype = 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname, '', '',
       a.privilege_type, a.is_grantable
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  CROSS JOIN LATERAL aclexplode(t.typacl) a
 WHERE a.grantee = (SELECT oid FROM r)
"""

_DATABASE_GRANTS_SQL = """
SELECT 'DATABASE', '', d.datname, '', '', a.privilege_type, a.is_grantable
  FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
 WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
"""

# Default privileges a role set up for objects it creates (FOR ROLE it).
_DEFAULT_ACL_SQL = """
SELECT coalesce(n.nspname, ''), d.defaclobjtype, coalesce(g.rolname, ''),
       a.privilege_type, a.is_grantable
  FROM pg_default_acl d
  LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
  CROSS JOIN LATERAL aclexplode(d.defaclacl) a
  LEFT JOIN pg_roles g ON g.oid = a.grantee
 WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
   AND a.grantee <> d.defaclrole
"""

# Schemas the users own, directly or (public) as owner of the database.
_SCHEMAS_OF_SQL = """
SELECT n.nspname FROM pg_namespace n
 WHERE pg_get_userbyid(n.nspowner) = ANY(%s)
    OR (pg_get_userbyid(n.nspowner) = 'pg_database_owner'
        AND (SELECT pg_get_userbyid(datdba) FROM pg_database
              WHERE datname = current_database()) = ANY(%s))
 ORDER BY 1
"""

_DEFAULT_ACL_KINDS = {
    "r": "TABLES",
    "S": "SEQUENCES",
    "f": "FUNCTIONS",
    "T": "TYPES",
    "n": "SCHEMAS",
}


class Membership(NamedTuple):
    """The options of a membership; INHERIT and SET exist on PostgreSQL 16+ only."""

    admin: bool
    inherit: bool | None = None
    set: bool | None = None


class Grant(NamedTuple):
    """One privilege on one object, as held directly by a role."""

    kind: str
    schema: str
    name: str
    args: str
    column: str
    privilege: str
    grantable: bool
    database: str = ""

    def describe(self) -> str:
        """``SELECT on table app.orders`` — for messages."""
        target = ".".join(p for p in (self.schema, self.name) if p)
        if self.args or self.kind == "ROUTINE":
            target += f"({self.args})"
        if self.column:
            target += f" column {self.column}"
        kind = "table" if self.kind == "COLUMN" else self.kind.lower()
        where = f" in database {self.database}" if self.database else ""
        return f"{self.privilege} on {kind} {target}{where}"


def connect_kwargs(url: DbUrl) -> dict[str, Any]:
    """libpq keyword arguments for *url* (query options such as sslmode pass through)."""
    kwargs: dict[str, Any] = dict(url.query)
    kwargs.update(host=url.host, user=url.user, dbname=url.database or url.user)
    if url.port is not None:
        kwargs["port"] = url.port
    if url.password is not None:
        kwargs["password"] = url.password
    return kwargs


@register
@dataclass
class PostgresEngine(Engine):
    """PostgreSQL through psycopg 3, with a CREATEROLE admin."""

    name = "postgresql"
    schemes = ("postgresql", "postgres", "psql")
    driver_error = psycopg.Error

    _conn: psycopg.Connection[tuple[Any, ...]] | None = field(default=None, repr=False)
    _statements: tuple[Signal, pg_signals.Statements | None] | None = field(
        default=None, repr=False
    )

    # -- connections -----------------------------------------------------

    def _connect(self, url: DbUrl, *, what: str) -> psycopg.Connection[tuple[Any, ...]]:
        kwargs = connect_kwargs(url)
        kwargs.setdefault("connect_timeout", max(1, int(self.connect_timeout)))
        kwargs.setdefault("application_name", "credflip")
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
        return ConnectFailed(
            f"cannot connect {what} to PostgreSQL at {where}: {message}; check host, port and "
            f"that the server is running"
        )

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The admin connection, opened on first use."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect(self.admin_url, what="the admin URL")
        return self._conn

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

    def close(self) -> None:
        """Close the admin connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _diag(self, exc: BaseException) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = first.removeprefix("connection failed: ")
        secrets = [*self._secrets, *([self.admin_url.password] if self.admin_url.password else [])]
        return scrub(first, secrets)

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
        try:
            cur = target.execute(query, params)
            return cur.fetchall() if cur.description else []
        except psycopg.errors.InsufficientPrivilege as exc:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} was refused: {self._diag(exc)}"
                + (f"; {hint}" if hint else "; see the README for the rights the admin needs")
            ) from exc
        except psycopg.Error as exc:
            raise EngineError(f"PostgreSQL refused a statement: {self._diag(exc)}") from exc

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
        rows = self._run("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [user])
        if not rows:
            return UserState(user, exists=False)
        return UserState(user, exists=True, can_login=bool(rows[0][0]))

    def _exists(self, role: str) -> bool:
        return bool(self._run("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]))

    def adopt(self, *, active: str, inactive: str, group: str | None) -> str:
        """Create the group, move ownership and rights to it, and create *inactive*."""
        group = group or default_group(active)
        if len({active, inactive, group}) != 3:
            raise ConfigurationError(
                f"users {active!r}, {inactive!r} and group {group!r} must all differ: pass "
                f"--green-user or --group-role"
            )
        self.check_admin()
        for user in (active, inactive):
            rows = self._run("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [user])
            if rows and rows[0][0]:
                raise ConfigurationError(
                    f"user {user!r} is a superuser: credflip cannot manage it; give the "
                    f"application an ordinary user"
                )
        rows = self._run("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [group])
        if rows and rows[0][0]:
            raise ConfigurationError(
                f"group role {group!r} exists and can log in; pick another with --group-role"
            )
        self._require_admin_option([u for u in (active, inactive, group) if self._exists(u)])
        if not rows:
            self._run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        self._ensure_admin_member(group)

        users = [u for u in (active, inactive) if self._exists(u)]
        self._check_can_move_databases(users)
        # Membership first: once REASSIGN OWNED hands the tables to the group,
        # the application's sessions reach them through it. In the other
        # order they would lose their own tables for a moment (and on a
        # lagging replica for as long as it lags).
        self._run(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(active)))
        with self._acting_as(users, to=group):
            # Ownership of everything the users own moves to the group, in
            # every database: REASSIGN OWNED only sees the current one.
            for dbname in self._databases_of(users, deptypes=("o",)):
                with self._database(dbname) as conn:
                    # REASSIGN OWNED may reach a function or type before its
                    # schema, and the new owner needs CREATE on that schema.
                    for (schema,) in self._run(_SCHEMAS_OF_SQL, [users, users], conn=conn):
                        self._run(
                            sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                                sql.Identifier(schema), sql.Identifier(group)
                            ),
                            conn=conn,
                        )
                    self._run(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            sql.SQL(", ").join(map(sql.Identifier, users)), sql.Identifier(group)
                        ),
                        conn=conn,
                    )
                    for user in users:
                        self._copy_default_acl(user, group, conn)
        # The group must be able to do whatever the active user could on
        # its own, because sessions will run as the group.
        self._sync_memberships(active, group, revoke_extra=False, exclude={group})
        self._sync_grants(active, group, revoke_extra=False)
        self._run(
            sql.SQL("ALTER ROLE {} SET role = {}").format(
                sql.Identifier(active), sql.Literal(group)
            )
        )
        if not self._exists(inactive):
            self._run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(inactive)))
        self.sync_rights(active, inactive)
        return group

    def _check_can_move_databases(self, users: Sequence[str]) -> None:
        # Changing a database's owner needs CREATEDB on the admin; say so
        # before anything changes rather than half way through.
        owned = self._run(
            "SELECT string_agg(datname, ', ' ORDER BY datname) FROM pg_database "
            "WHERE datdba IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%s))",
            [list(users)],
        )[0][0]
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

    def prepare_user(self, user: str, password: str, *, like: str, group: str | None) -> None:
        """Create or update *user*: rights of *like* first, then password and LOGIN."""
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self._require_admin_option([r for r in (user, group) if r is not None and self._exists(r)])
        if not self._exists(user):
            self._run(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(user)))
        if group:
            # Sessions run as the group (SET ROLE), so a right someone granted
            # to the active user directly only takes effect once the group
            # holds it too. Adding it is what the operator meant.
            self._sync_memberships(like, group, revoke_extra=False, exclude={group})
            self._sync_grants(like, group, revoke_extra=False)
        self.sync_rights(like, user)
        verifier = scram_verifier(self.conn, user, password)
        self._run(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(verifier)
            )
        )

    def lock_user(self, user: str) -> None:
        """``ALTER ROLE user NOLOGIN``: open sessions stay, new logins are refused."""
        if self._exists(user):
            self._run(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(user)))

    def unlock_user(self, user: str) -> None:
        """``ALTER ROLE user LOGIN``."""
        self._run(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(user)))

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """Reassign and drop what *user* owns, then ``DROP ROLE``; refuse if anything is lost."""
        if not self._exists(user):
            return
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
        owned = self._databases_of([user], deptypes=("o",))
        if owned and not group:
            problems.append(
                f"it owns objects in database(s) {', '.join(owned)} and no group "
                f"role is set up to take them"
            )
        if problems:
            raise RotationError(
                f"refusing to drop user {user!r}: {'; '.join(problems)}; retire it with "
                f"--retire lock instead, or move those rights first"
            )
        with self._acting_as([user], to=group, revoke_after=False):
            for dbname in self._databases_of([user], deptypes=("o", "a")):
                with self._database(dbname) as conn:
                    if group:
                        self._run(
                            sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                                sql.Identifier(user), sql.Identifier(group)
                            ),
                            conn=conn,
                        )
                    self._run(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)), conn=conn)
            self._run(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))

    # -- rights ------------------------------------------------------------

    def sync_rights(self, source: str, target: str) -> None:
        """Make *target*'s attributes, memberships, settings and grants equal *source*'s."""
        self._sync_attributes(source, target)
        self._sync_memberships(source, target, revoke_extra=True, exclude=set())
        self._sync_settings(source, target)
        self._sync_grants(source, target, revoke_extra=True)

    def _sync_attributes(self, source: str, target: str) -> None:
        rows = self._run(
            "SELECT rolcreatedb, rolinherit, rolconnlimit FROM pg_roles WHERE rolname = %s",
            [source],
        )
        createdb, inherit, connlimit = rows[0]
        self._run(
            sql.SQL("ALTER ROLE {} WITH {} {} CONNECTION LIMIT {}").format(
                sql.Identifier(target),
                sql.SQL("CREATEDB" if createdb else "NOCREATEDB"),
                sql.SQL("INHERIT" if inherit else "NOINHERIT"),
                sql.Literal(int(connlimit)),
            )
        )

    @property
    def _options_on_memberships(self) -> bool:
        """PostgreSQL 16+: memberships carry INHERIT and SET options besides ADMIN."""
        return int(self.conn.info.server_version) >= 160000

    def _memberships(self, role: str) -> dict[str, Membership]:
        """The roles *role* is a member of, with the options it holds (ORed over grantors)."""
        options = (
            "bool_or(m.inherit_option), bool_or(m.set_option)"
            if self._options_on_memberships
            else "NULL::bool, NULL::bool"
        )
        rows = self._run(
            f"SELECT g.rolname, bool_or(m.admin_option), {options} FROM pg_auth_members m "
            "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
            "WHERE u.rolname = %s GROUP BY 1",
            [role],
        )
        return {str(name): Membership(bool(a), i, s) for name, a, i, s in rows}

    def _sync_memberships(
        self, source: str, target: str, *, revoke_extra: bool, exclude: set[str]
    ) -> None:
        want = {k: v for k, v in self._memberships(source).items() if k not in exclude}
        have = self._memberships(target)
        hint = (
            "on PostgreSQL 16+ the admin needs ADMIN OPTION on that role: as a superuser run "
            "GRANT <role> TO <admin> WITH ADMIN OPTION"
        )
        for role, options in want.items():
            held = have.get(role)
            if held == options:
                continue
            if self._options_on_memberships:
                # One statement sets all three options of the admin's grant.
                self._run(
                    sql.SQL("GRANT {} TO {} WITH ADMIN {}, INHERIT {}, SET {}").format(
                        sql.Identifier(role),
                        sql.Identifier(target),
                        *(sql.SQL("TRUE" if o else "FALSE") for o in options),
                    ),
                    hint=hint,
                )
            elif held is None or (options.admin and not held.admin):
                self._run(
                    sql.SQL("GRANT {} TO {}{}").format(
                        sql.Identifier(role),
                        sql.Identifier(target),
                        sql.SQL(" WITH ADMIN OPTION" if options.admin else ""),
                    ),
                    hint=hint,
                )
            else:
                self._run(
                    sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}").format(
                        sql.Identifier(role), sql.Identifier(target)
                    ),
                    hint=hint,
                )
        if revoke_extra:
            for role in set(have) - set(want):
                self._run(
                    sql.SQL("REVOKE {} FROM {}").format(
                        sql.Identifier(role), sql.Identifier(target)
                    ),
                    hint=hint,
                )

    def _settings(self, role: str) -> dict[tuple[str, str], str]:
        rows = self._run(
            "SELECT coalesce(d.datname, ''), s.setconfig FROM pg_db_role_setting s "
            "LEFT JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            [role],
        )
        out: dict[tuple[str, str], str] = {}
        for dbname, config in rows:
            for item in config or []:
                name, _, value = str(item).partition("=")
                out[(str(dbname), name)] = value
        return out

    def _sync_settings(self, source: str, target: str) -> None:
        want, have = self._settings(source), self._settings(target)
        for (dbname, name), value in want.items():
            if have.get((dbname, name)) != value:
                self._run(
                    sql.SQL("ALTER ROLE {}{} SET {} TO {}").format(
                        sql.Identifier(target),
                        _in_database(dbname),
                        sql.Identifier(*name.split(".")),
                        _setting_value(name, value),
                    )
                )
        for dbname, name in set(have) - set(want):
            self._run(
                sql.SQL("ALTER ROLE {}{} RESET {}").format(
                    sql.Identifier(target), _in_database(dbname), sql.Identifier(*name.split("."))
                )
            )

    def _databases_of(self, roles: Sequence[str], *, deptypes: Sequence[str]) -> list[str]:
        """Databases holding objects the roles own ('o') or have rights on ('a')."""
        rows = self._run(
            "SELECT DISTINCT d.datname, d.datallowconn FROM pg_shdepend s "
            "JOIN pg_database d ON d.oid = s.dbid "
            "WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype = ANY(%s) "
            "AND s.refobjid IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%s)) "
            "ORDER BY 1",
            [list(deptypes), list(roles)],
        )
        closed = [str(name) for name, allowed in rows if not allowed]
        if closed:
            raise ConfigurationError(
                f"database(s) {', '.join(closed)} hold objects of {', '.join(roles)} but do not "
                f"allow connections; move those objects first"
            )
        names = [str(name) for name, _ in rows]
        main = self.admin_url.database or self.admin_url.user
        return [main, *[n for n in names if n != main]]

    def _grants_in(self, role: str, conn: psycopg.Connection[tuple[Any, ...]]) -> set[Grant]:
        return {_grant_row(r) for r in self._run(_GRANTS_SQL, {"role": role}, conn=conn)}

    def _database_grants(self, role: str) -> set[Grant]:
        return {_grant_row(r) for r in self._run(_DATABASE_GRANTS_SQL, {"role": role})}

    def _all_grants(self, role: str) -> set[Grant]:
        grants = self._database_grants(role)
        for dbname in self._databases_of([role], deptypes=("a",)):
            with self._database(dbname) as conn:
                grants |= {g._replace(database=dbname) for g in self._grants_in(role, conn)}
        return grants

    def _sync_grants(self, source: str, target: str, *, revoke_extra: bool) -> None:
        self._apply_grants(
            self._database_grants(source),
            self._database_grants(target),
            target,
            revoke_extra=revoke_extra,
            conn=self.conn,
        )
        for dbname in self._databases_of([source, target], deptypes=("a",)):
            with self._database(dbname) as conn:
                self._apply_grants(
                    self._grants_in(source, conn),
                    self._grants_in(target, conn),
                    target,
                    revoke_extra=revoke_extra,
                    conn=conn,
                )

    def _apply_grants(
        self,
        want: set[Grant],
        have: set[Grant],
        target: str,
        *,
        revoke_extra: bool,
        conn: psycopg.Connection[tuple[Any, ...]],
    ) -> None:
        def key(g: Grant) -> Grant:
            return g._replace(grantable=False)

        have_by_key = {key(g): g for g in have}
        want_keys = {key(g) for g in want}
        hint_for = "the admin must own the object, be a member of its owner, or hold the right "
        for grant in sorted(want):
            held = have_by_key.get(key(grant))
            if held is None or (grant.grantable and not held.grantable):
                self._run(
                    _grant_sql(grant, target, revoke=False),
                    conn=conn,
                    hint=hint_for + f"WITH GRANT OPTION to give {grant.describe()}",
                )
            elif held.grantable and not grant.grantable:
                self._run(_grant_sql(grant, target, revoke=True, option_only=True), conn=conn)
        if revoke_extra:
            for grant in sorted(have):
                if key(grant) not in want_keys:
                    self._run(
                        _grant_sql(grant, target, revoke=True),
                        conn=conn,
                        hint=hint_for + f"to take back {grant.describe()}",
                    )

    def _copy_default_acl(
        self, source: str, target: str, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> None:
        """Repeat ``ALTER DEFAULT PRIVILEGES FOR ROLE source`` entries for *target*."""
        for schema, objtype, grantee, privilege, grantable in self._run(
            _DEFAULT_ACL_SQL, {"role": source}, conn=conn
        ):
            _check_privilege(str(privilege))
            self._run(
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} GRANT {} ON {} TO {}{}").format(
                    sql.Identifier(target),
                    sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema))
                    if schema
                    else sql.SQL(""),
                    sql.SQL(str(privilege)),
                    sql.SQL(_DEFAULT_ACL_KINDS[str(objtype)]),
                    sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                ),
                conn=conn,
            )

    def _ensure_admin_member(self, role: str) -> None:
        """Let the admin act with *role*'s privileges (to grant on and give to its objects).

        On PostgreSQL 16+ it grants itself INHERIT only, never SET: it never
        needs to become the group.
        """
        if not self._has_privileges_of(role):
            self._grant_self(role)

    def _require_admin_option(self, roles: Sequence[str]) -> None:
        """PostgreSQL 16+: CREATEROLE covers only roles the admin holds ADMIN OPTION on.

        Checked before anything changes, so that a missing grant is one clear
        message instead of a half-done init or prepare.
        """
        if not self._options_on_memberships:
            return
        missing = [
            str(name)
            for name, ok in self._run(
                "SELECT rolname, pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION') "
                "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                [list(roles)],
            )
            if not ok
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

    def _has_privileges_of(self, role: str) -> bool:
        rows = self._run(
            "SELECT pg_has_role(current_user, oid, 'USAGE') FROM pg_roles WHERE rolname = %s",
            [role],
        )
        return bool(rows and rows[0][0])

    def _grant_self(self, role: str) -> None:
        self._run(
            sql.SQL("GRANT {} TO CURRENT_USER{}").format(
                sql.Identifier(role),
                sql.SQL(" WITH INHERIT TRUE, SET FALSE" if self._options_on_memberships else ""),
            ),
            hint="on PostgreSQL 16+ run as a superuser (RDS/Aurora: the master user): GRANT "
            f"{role} TO {self.admin_url.user} WITH ADMIN OPTION",
        )

    def _own_grant(self, role: str) -> bool:
        """Whether the admin already holds a membership in *role* that it granted itself."""
        return bool(
            self._run(
                "SELECT 1 FROM pg_auth_members WHERE roleid = (SELECT oid FROM pg_roles "
                "WHERE rolname = %s) AND member = (SELECT oid FROM pg_roles WHERE rolname = "
                "current_user) AND grantor = (SELECT oid FROM pg_roles WHERE rolname = "
                "current_user)",
                [role],
            )
        )

    @contextlib.contextmanager
    def _acting_as(
        self, roles: Sequence[str], *, to: str | None = None, revoke_after: bool = True
    ) -> Iterator[None]:
        """Give the admin what ``REASSIGN OWNED BY roles TO to`` / ``DROP OWNED`` need.

        That is the privileges (INHERIT) of each of *roles*, and on PostgreSQL
        16+ the right to SET ROLE to *to* (giving it a database needs that).
        The admin grants itself only those options and afterwards takes back
        exactly what it added: an option on a grant of its own that existed
        before, or the whole grant it made.
        """
        added: list[tuple[str, str]] = []  # (role, what to revoke)
        for role in roles:
            if not self._has_privileges_of(role):
                existed = self._options_on_memberships and self._own_grant(role)
                self._grant_self(role)
                added.append((role, "INHERIT OPTION FOR " if existed else ""))
        if to is not None:
            self._ensure_admin_member(to)
            if (
                self._options_on_memberships
                and not self._run(
                    "SELECT pg_has_role(current_user, oid, 'SET') FROM pg_roles WHERE rolname = %s",
                    [to],
                )[0][0]
            ):
                existed = self._own_grant(to)
                self._run(
                    sql.SQL("GRANT {} TO CURRENT_USER WITH SET TRUE").format(sql.Identifier(to))
                )
                added.append((to, "SET OPTION FOR " if existed else ""))
        try:
            yield
        finally:
            if revoke_after:
                for role, what in added:
                    with contextlib.suppress(EngineError):
                        self._run(
                            sql.SQL("REVOKE {}{} FROM CURRENT_USER").format(
                                sql.SQL(what), sql.Identifier(role)
                            )
                        )

    # -- clients ---------------------------------------------------------

    @classmethod
    def client_connect(cls, url: DbUrl, *, timeout: float = 5.0) -> Any:
        """A psycopg connection as an application would open it."""
        return psycopg.connect(**connect_kwargs(url), connect_timeout=max(1, int(timeout)))

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

    def begin_watch(self, user: str, group: str | None) -> None:
        """Let *user*'s new logins run as itself, so pg_stat_statements counts them as its own.

        Its sessions normally switch to the group role at login, where both
        colors look the same. Only called once the pointer names the other
        color, and only when *user* inherits the group's rights.
        """
        if group is None or self.count_problem(user, group) is not None:
            return
        if pg_signals.role_settings(self._run, user):
            self._run(sql.SQL("ALTER ROLE {} RESET role").format(sql.Identifier(user)))

    def end_watch(self, user: str, group: str | None) -> None:
        """Restore *user*'s ``role`` setting and give the group what late sessions created."""
        if group is None or not self._exists(user):
            return
        if not pg_signals.role_settings(self._run, user):
            self._run(
                sql.SQL("ALTER ROLE {} SET role = {}").format(
                    sql.Identifier(user), sql.Literal(group)
                )
            )
        owned = self._run(
            "SELECT 1 FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass "
            "AND deptype = 'o' AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) "
            "LIMIT 1",
            [user],
        )
        if not owned:
            return
        with self._acting_as([user], to=group):
            for dbname in self._databases_of([user], deptypes=("o",)):
                with self._database(dbname) as conn:
                    self._run(
                        sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                            sql.Identifier(user), sql.Identifier(group)
                        ),
                        conn=conn,
                    )

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


def _grant_row(row: tuple[Any, ...]) -> Grant:
    kind, schema, name, args, column, privilege, grantable = row
    return Grant(
        str(kind), str(schema), str(name), str(args), str(column), str(privilege), bool(grantable)
    )


def _check_privilege(privilege: str) -> None:
    if privilege not in _PRIVILEGES:
        raise EngineError(f"unknown privilege {privilege!r} reported by the server")


def _in_database(dbname: str) -> sql.Composed | sql.SQL:
    return sql.SQL(" IN DATABASE {}").format(sql.Identifier(dbname)) if dbname else sql.SQL("")


def _setting_value(name: str, value: str) -> sql.Composed | sql.Literal:
    """The right-hand side of ``SET name TO ...`` for a stored ``name=value``."""
    if name.lower() not in _LIST_SETTINGS:
        return sql.Literal(value)
    return sql.SQL(", ").join(sql.Literal(item) for item in _split_list(value))


def _split_list(value: str) -> list[str]:
    """Split a stored list setting (``app, "My Schema", public``) into its elements."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if quoted and i + 1 < len(value) and value[i + 1] == '"':
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current).strip())
    return [item for item in items if item]


def _grant_sql(grant: Grant, role: str, *, revoke: bool, option_only: bool = False) -> sql.Composed:
    """``GRANT priv ON kind object TO role`` (or the matching REVOKE), fully quoted."""
    _check_privilege(grant.privilege)
    obj: sql.Composable
    if grant.kind in {"TABLE", "SEQUENCE", "COLUMN", "TYPE", "DOMAIN"}:
        obj = sql.Identifier(grant.schema, grant.name)
    elif grant.kind in {"SCHEMA", "DATABASE"}:
        obj = sql.Identifier(grant.name)
    elif grant.kind == "ROUTINE":
        # The signature is the server's own rendering of argument types.
        obj = sql.SQL("{}({})").format(
            sql.Identifier(grant.schema, grant.name), sql.SQL(grant.args)
        )
    else:
        raise EngineError(f"unknown object kind {grant.kind!r}")
    kind = "TABLE" if grant.kind == "COLUMN" else grant.kind
    privilege: sql.Composable = sql.SQL(grant.privilege)
    if grant.column:
        privilege = sql.SQL("{} ({})").format(privilege, sql.Identifier(grant.column))
    if revoke:
        return sql.SQL("REVOKE {}{} ON {} {} FROM {}").format(
            sql.SQL("GRANT OPTION FOR " if option_only else ""),
            privilege,
            sql.SQL(kind),
            obj,
            sql.Identifier(role),
        )
    return sql.SQL("GRANT {} ON {} {} TO {}{}").format(
        privilege,
        sql.SQL(kind),
        obj,
        sql.Identifier(role),
        sql.SQL(" WITH GRANT OPTION" if grant.grantable else ""),
    )
