"""Reading PostgreSQL's catalog: roles, memberships, settings, grants, databases.

Nothing here changes the database. Every function takes ``run``, the admin
connection's executor (``run(query, params)``), bound to a database when the
catalog of another one is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ...errors import ConfigurationError

__all__ = [
    "Attributes",
    "DefaultGrant",
    "Grant",
    "Membership",
    "attributes",
    "database_grants",
    "databases_of",
    "default_acl",
    "default_privileges",
    "exists",
    "grants_in",
    "memberships",
    "settings",
]

Run = Callable[..., list[tuple[Any, ...]]]

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

# What the objects each role creates in the current database get: per kind the
# global entry or, without one, the built-in default (acldefault, whose kind
# letter for sequences is 's'); then the per-schema entries, which only add.
# The role itself is listed too, as the owner.
_DEFAULT_PRIVILEGES_SQL = """
WITH r AS (SELECT oid, rolname FROM pg_roles WHERE rolname = ANY(%(roles)s)),
acls AS (
  SELECT r.rolname, r.oid AS owner, '' AS nsp, k.kind,
         coalesce(d.defaclacl, acldefault(k.builtin::"char", r.oid)) AS acl
    FROM r CROSS JOIN (VALUES ('r', 'r'), ('S', 's'), ('f', 'f'), ('T', 'T'), ('n', 'n'))
         AS k(kind, builtin)
    LEFT JOIN pg_default_acl d ON d.defaclrole = r.oid AND d.defaclnamespace = 0
         AND d.defaclobjtype = k.kind::"char"
  UNION ALL
  SELECT r.rolname, r.oid, n.nspname, d.defaclobjtype::text, d.defaclacl
    FROM pg_default_acl d JOIN r ON r.oid = d.defaclrole
    JOIN pg_namespace n ON n.oid = d.defaclnamespace
)
SELECT acls.rolname, acls.nsp, acls.kind, coalesce(g.rolname, ''), a.privilege_type,
       a.is_grantable
  FROM acls CROSS JOIN LATERAL aclexplode(acls.acl) a
  LEFT JOIN pg_roles g ON g.oid = a.grantee
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


class DefaultGrant(NamedTuple):
    """One privilege that new objects of one kind get, by default, from their creator."""

    schema: str  # '' for every schema (the global entry)
    kind: str  # pg_default_acl.defaclobjtype: r, S, f, T, n
    grantee: str  # '' for PUBLIC
    privilege: str
    grantable: bool


class Attributes(NamedTuple):
    """The role attributes a color copies from the other."""

    createdb: bool
    inherit: bool
    connlimit: int


def _grant_row(row: tuple[Any, ...]) -> Grant:
    kind, schema, name, args, column, privilege, grantable = row
    return Grant(
        str(kind), str(schema), str(name), str(args), str(column), str(privilege), bool(grantable)
    )


def exists(run: Run, role: str) -> bool:
    """Whether *role* exists."""
    return bool(run("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]))


def role_flag(run: Run, role: str, column: str) -> bool | None:
    """``rolsuper``/``rolcanlogin``/... of *role*; None when it does not exist."""
    if column not in {"rolsuper", "rolcanlogin", "rolcreaterole", "rolcreatedb"}:
        raise ValueError(column)
    rows = run(f"SELECT {column} FROM pg_roles WHERE rolname = %s", [role])
    return None if not rows else bool(rows[0][0])


def attributes(run: Run, role: str) -> Attributes:
    """CREATEDB, INHERIT and CONNECTION LIMIT of *role*."""
    rows = run(
        "SELECT rolcreatedb, rolinherit, rolconnlimit FROM pg_roles WHERE rolname = %s", [role]
    )
    createdb, inherit, connlimit = rows[0]
    return Attributes(bool(createdb), bool(inherit), int(connlimit))


def memberships(run: Run, role: str, *, options: bool) -> dict[str, Membership]:
    """The roles *role* is a member of, with the options it holds (ORed over grantors).

    *options*: the server has INHERIT and SET options on memberships (16+).
    """
    columns = (
        "bool_or(m.inherit_option), bool_or(m.set_option)" if options else "NULL::bool, NULL::bool"
    )
    rows = run(
        f"SELECT g.rolname, bool_or(m.admin_option), {columns} FROM pg_auth_members m "
        "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
        "WHERE u.rolname = %s GROUP BY 1",
        [role],
    )
    return {str(name): Membership(bool(a), i, s) for name, a, i, s in rows}


def settings(run: Run, role: str) -> dict[tuple[str, str], str]:
    """``{(database or '', name): value}`` of *role*'s settings."""
    rows = run(
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


def databases_of(
    run: Run, roles: Sequence[str], *, deptypes: Sequence[str], main: str
) -> list[str]:
    """*main* first, then the databases holding objects the roles own ('o') or have rights
    on ('a'); refuse when one of them does not allow connections."""
    rows = run(
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
    return [main, *[n for n in names if n != main]]


def owns_objects(run: Run, role: str) -> list[str]:
    """The databases (and shared objects) in which *role* owns something, by name.

    Its default privileges are not objects: each color keeps the group's.
    """
    rows = run(
        "SELECT DISTINCT coalesce(d.datname, '(shared)') FROM pg_shdepend s "
        "LEFT JOIN pg_database d ON d.oid = s.dbid "
        "WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype = 'o' "
        "AND s.classid <> 'pg_default_acl'::regclass "
        "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1",
        [role],
    )
    return [str(r[0]) for r in rows]


def grants_in(run: Run, role: str) -> set[Grant]:
    """Object privileges granted directly to *role* in the database *run* is bound to."""
    return {_grant_row(r) for r in run(_GRANTS_SQL, {"role": role})}


def database_grants(run: Run, role: str) -> set[Grant]:
    """Privileges on databases granted directly to *role*."""
    return {_grant_row(r) for r in run(_DATABASE_GRANTS_SQL, {"role": role})}


def default_acl(run: Run, role: str) -> list[tuple[Any, ...]]:
    """``ALTER DEFAULT PRIVILEGES FOR ROLE role`` entries in the bound database."""
    return run(_DEFAULT_ACL_SQL, {"role": role})


def default_privileges(run: Run, roles: Sequence[str]) -> dict[str, set[DefaultGrant]]:
    """What objects each of *roles* creates in the bound database get, as grants (a role
    that does not exist is left out)."""
    out: dict[str, set[DefaultGrant]] = {}
    for role, *grant in run(_DEFAULT_PRIVILEGES_SQL, {"roles": list(roles)}):
        schema, kind, grantee, privilege, grantable = grant
        out.setdefault(str(role), set()).add(
            DefaultGrant(str(schema), str(kind), str(grantee), str(privilege), bool(grantable))
        )
    return out


def schemas_of(run: Run, users: Sequence[str]) -> list[str]:
    """Schemas the users own, directly or (public) as owner of the database."""
    return [str(r[0]) for r in run(_SCHEMAS_OF_SQL, [list(users), list(users)])]


def owned_databases(run: Run, users: Sequence[str]) -> str | None:
    """``db1, db2``: the databases the users own, or None."""
    rows = run(
        "SELECT string_agg(datname, ', ' ORDER BY datname) FROM pg_database "
        "WHERE datdba IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%s))",
        [list(users)],
    )
    return None if not rows or rows[0][0] is None else str(rows[0][0])


def admin_has(run: Run, role: str, privilege: str) -> bool:
    """``pg_has_role(current_user, role, privilege)`` (False when *role* does not exist)."""
    if privilege not in {"USAGE", "MEMBER", "SET", "MEMBER WITH ADMIN OPTION"}:
        raise ValueError(privilege)
    rows = run(
        "SELECT pg_has_role(current_user, oid, %s) FROM pg_roles WHERE rolname = %s",
        [privilege, role],
    )
    return bool(rows and rows[0][0])


def self_grant(run: Run, role: str, *, options: bool) -> Membership | None:
    """The membership in *role* the admin granted itself, with its options; None when it
    holds none (or *role* does not exist). *options*: the server has INHERIT/SET (16+)."""
    columns = "m.inherit_option, m.set_option" if options else "NULL::bool, NULL::bool"
    rows = run(
        f"SELECT m.admin_option, {columns} FROM pg_auth_members m "
        "WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = %s) "
        "AND m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
        "AND m.grantor = m.member",
        [role],
    )
    if not rows:
        return None
    admin, inherit, set_ = rows[0]
    return Membership(bool(admin), inherit, set_)
