"""MySQL and MariaDB rights as data, and the statements that make one account's equal
another's: pure, no server.

An account's rights are sets of atoms read from the catalog (:mod:`.catalog`):
one privilege on one object (``GRANT OPTION`` is a privilege of its object,
a column privilege names its column), one role (with or without ADMIN
OPTION), one proxy grant, and the default roles. :func:`plan_sync` compares a
target's atoms with a source's and plans the difference only, in two lists:
what the target lacks (granted first) and what it has extra (revoked after
every grant). Equal rights plan nothing. So whatever runs with the target's
rights (the views, routines, triggers and events it is the DEFINER of) never
loses a right the source also has, at any statement boundary, but in two cases:
a table-level ``REVOKE`` takes the same privilege on the table's columns too, so
the column privileges the target keeps there are granted right after it (until
then, only those columns' privileges are missing); and an option the server
cannot take alone (a role's ADMIN OPTION on MySQL, a proxy's GRANT OPTION) goes
with its role or proxy, granted again by the next statement (see :func:`plan_sync`).

Every identifier is backtick-quoted here (doubling backticks); accounts are
``%s@%s`` parameters, quoted by the driver when the step runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import groupby

from ...errors import EngineError
from ..base import Step

__all__ = ["GRANT_OPTION", "Privilege", "Rights", "Role", "ident", "plan_sync"]

GRANT_OPTION = "GRANT OPTION"
# Privilege names as the server spells them: SELECT, CREATE TEMPORARY TABLES, BINLOG_ADMIN.
_PRIVILEGE = re.compile(r"[A-Z][A-Z_ ]*[A-Z]")
_ROUTINES = ("FUNCTION", "PACKAGE", "PACKAGE BODY", "PROCEDURE")
_GRANT_HINT = (
    "the admin must hold each right WITH GRANT OPTION (and roles WITH ADMIN OPTION) to give it"
)
_REVOKE_HINT = (
    "the admin must hold each right WITH GRANT OPTION (and roles WITH ADMIN OPTION) to take it back"
)


def ident(name: str) -> str:
    """*name* as a backtick-quoted identifier, ``%`` doubled for the driver's substitution."""
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


@dataclass(frozen=True, order=True)
class Privilege:
    """One privilege on one object: ``*.*`` (kind ""), a database, a table, a routine."""

    #: "" (global), "DATABASE", "TABLE", or a routine type ("PROCEDURE", ...).
    kind: str
    db: str
    #: The table or routine ("" for global and database privileges).
    name: str
    privilege: str
    column: str = ""

    def __post_init__(self) -> None:
        if not _PRIVILEGE.fullmatch(self.privilege) or self.kind not in (
            "",
            "DATABASE",
            "TABLE",
            *_ROUTINES,
        ):
            raise EngineError(f"cannot read the privilege {self.privilege!r} ({self.kind!r})")

    @property
    def on(self) -> tuple[str, str, str]:
        """The object, as a sort and group key."""
        return (self.kind, self.db, self.name)

    def object_sql(self) -> str:
        """``*.*``, ```db`.*``, ```db`.`t``` or ``PROCEDURE `db`.`p```."""
        if not self.kind:
            return "*.*"
        if self.kind == "DATABASE":
            return f"{ident(self.db)}.*"
        prefix = "" if self.kind == "TABLE" else f"{self.kind} "
        return f"{prefix}{ident(self.db)}.{ident(self.name)}"

    def describe(self) -> str:
        """``UPDATE (color) ON shop.orders``: for messages."""
        column = f" ({self.column})" if self.column else ""
        where = {"": "*.*", "DATABASE": f"{self.db}.*"}.get(self.kind, f"{self.db}.{self.name}")
        kind = f"{self.kind.lower()} " if self.kind in _ROUTINES else ""
        return f"{self.privilege}{column} ON {kind}{where}"


@dataclass(frozen=True, order=True)
class Role:
    """A role: MariaDB names it alone (host None), MySQL as an account."""

    name: str
    host: str | None = None

    def sql(self) -> str:
        return ident(self.name) + ("" if self.host is None else "@" + ident(self.host))

    def describe(self) -> str:
        return f"role {self.name}" + ("" if self.host is None else f"@{self.host}")


@dataclass(frozen=True)
class Rights:
    """Everything an account holds that another account can be given."""

    privileges: frozenset[Privilege] = frozenset()
    #: Each role granted, and whether WITH ADMIN OPTION.
    roles: Mapping[Role, bool] = field(default_factory=dict)
    #: Each proxied account ``(user, host)``, and whether WITH GRANT OPTION.
    proxies: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    default_roles: tuple[Role, ...] = ()

    def beyond(self, other: Rights) -> list[str]:
        """What this account holds that *other* lacks, described (sorted)."""
        lost = [p.describe() for p in sorted(self.privileges - other.privileges)]
        for role, admin in sorted(self.roles.items()):
            if role not in other.roles or (admin and not other.roles[role]):
                lost.append(role.describe() + (" WITH ADMIN OPTION" if admin else ""))
        for (user, host), grant in sorted(self.proxies.items()):
            if (user, host) not in other.proxies or (grant and not other.proxies[(user, host)]):
                lost.append(f"PROXY ON {user}@{host}" + (" WITH GRANT OPTION" if grant else ""))
        return lost


def plan_sync(
    source: Rights, target: Rights, user: str, host: str, *, mariadb: bool
) -> tuple[list[Step], list[Step]]:
    """The steps that make user@host's rights (*target*) equal *source*: the grants, and
    what runs after every grant (of every account): the revokes, then the default roles.

    A right the target keeps is never revoked to be granted again, but for the
    column privileges a table-level revoke takes (:func:`_revokes`) and where the
    server has no statement that narrows a grant: a role's ADMIN OPTION on MySQL
    (no ``REVOKE ADMIN OPTION FOR``) and a proxy grant's GRANT OPTION (both
    servers). There the role or proxy is revoked and granted again at once,
    after every other revoke: between the two statements the account lacks that
    role (or proxy). The default roles are set last, and set again after such a
    revoke of a default role on MySQL: whether or not MySQL forgets a revoked role
    as a default role, it is one again.
    """
    grants: list[Step] = []
    revokes: list[Step] = []
    narrowed: list[Step] = []  # revoked and granted again, last
    for role, admin in sorted(source.roles.items()):
        if role not in target.roles or (admin and not target.roles[role]):
            grants.append(_role_step("GRANT", role, user, host, admin=admin))
    regranted: set[Role] = set()
    for role, admin in sorted(target.roles.items()):
        if role not in source.roles:
            revokes.append(_role_step("REVOKE", role, user, host))
        elif admin and not source.roles[role]:
            narrowed += _drop_admin_option(role, user, host, mariadb=mariadb)
            if not mariadb:
                regranted.add(role)
    for proxied, grant in sorted(source.proxies.items()):
        if proxied not in target.proxies or (grant and not target.proxies[proxied]):
            grants.append(_proxy_step("GRANT", proxied, user, host, grant_option=grant))
    for proxied, grant in sorted(target.proxies.items()):
        if proxied not in source.proxies:
            revokes.append(_proxy_step("REVOKE", proxied, user, host))
        elif grant and not source.proxies[proxied]:
            # A proxy grant loses its GRANT OPTION only with the grant itself.
            narrowed.append(_proxy_step("REVOKE", proxied, user, host))
            narrowed.append(_proxy_step("GRANT", proxied, user, host, grant_option=False))
    extra = target.privileges - source.privileges
    wiped = _wiped(extra, source.privileges)
    grants += privilege_steps("GRANT", source.privileges - target.privileges - wiped, user, host)
    after = _revokes(extra, wiped, user, host) + revokes + narrowed
    if source.default_roles != target.default_roles or regranted & set(source.default_roles):
        after.append(_default_roles(source.default_roles, user, host, mariadb=mariadb))
    return grants, after


def _wiped(revoked: Iterable[Privilege], kept: Iterable[Privilege]) -> set[Privilege]:
    """The column privileges of *kept* that revoking *revoked* takes away too: a table-level
    ``REVOKE SELECT ON t`` revokes ``SELECT (c) ON t`` as well."""
    on_tables = {(p.on, p.privilege) for p in revoked if p.kind == "TABLE" and not p.column}
    return {p for p in kept if p.column and (p.on, p.privilege) in on_tables}


def _revokes(extra: Iterable[Privilege], wiped: set[Privilege], user: str, host: str) -> list[Step]:
    """``REVOKE`` *extra*, object by object, each followed by the ``GRANT`` of the column
    privileges it took away that the account keeps (*wiped*).

    The server has no statement that swaps a table privilege for column privileges, and
    its account statements are not transactional: between the two, the account lacks
    those columns' privileges (and nothing else the source has).
    """
    steps: list[Step] = []
    for on, group in groupby(sorted(extra), key=lambda p: p.on):
        steps += privilege_steps("REVOKE", group, user, host)
        steps += privilege_steps("GRANT", [p for p in wiped if p.on == on], user, host)
    return steps


def privilege_steps(verb: str, privileges: Iterable[Privilege], user: str, host: str) -> list[Step]:
    """One ``GRANT ... ON obj TO`` (or ``REVOKE ... ON obj FROM``) per object."""
    steps: list[Step] = []
    for _on, group in groupby(sorted(privileges), key=lambda p: p.on):
        atoms = list(group)
        option = any(p.privilege == GRANT_OPTION for p in atoms)
        items = _items([p for p in atoms if p.privilege != GRANT_OPTION])
        if verb == "GRANT":
            text = f"GRANT {', '.join(items) or 'USAGE'} ON {atoms[0].object_sql()} TO %s@%s"
            text += " WITH GRANT OPTION" if option else ""
        else:
            items += [GRANT_OPTION] if option else []
            text = f"REVOKE {', '.join(items)} ON {atoms[0].object_sql()} FROM %s@%s"
        steps.append(
            Step(text, (user, host), hint=_GRANT_HINT if verb == "GRANT" else _REVOKE_HINT)
        )
    return steps


def _items(atoms: list[Privilege]) -> list[str]:
    """``SELECT, UPDATE (`a`, `b`)``: the object's privileges, then its columns' grouped."""
    items = sorted(p.privilege for p in atoms if not p.column)
    on_columns = sorted((p.privilege, p.column) for p in atoms if p.column)
    for name, group in groupby(on_columns, key=lambda pc: pc[0]):
        items.append(f"{name} ({', '.join(ident(column) for _name, column in group)})")
    return items


def _role_step(verb: str, role: Role, user: str, host: str, *, admin: bool = False) -> Step:
    if verb == "GRANT":
        text = f"GRANT {role.sql()} TO %s@%s" + (" WITH ADMIN OPTION" if admin else "")
        return Step(text, (user, host), hint=_GRANT_HINT)
    return Step(f"REVOKE {role.sql()} FROM %s@%s", (user, host), hint=_REVOKE_HINT)


def _drop_admin_option(role: Role, user: str, host: str, *, mariadb: bool) -> list[Step]:
    if mariadb:
        text = f"REVOKE ADMIN OPTION FOR {role.sql()} FROM %s@%s"
        return [Step(text, (user, host), hint=_REVOKE_HINT)]
    # MySQL has no REVOKE ADMIN OPTION FOR: the role is granted again without it.
    return [_role_step("REVOKE", role, user, host), _role_step("GRANT", role, user, host)]


def _proxy_step(
    verb: str, proxied: tuple[str, str], user: str, host: str, *, grant_option: bool = False
) -> Step:
    if verb == "GRANT":
        text = "GRANT PROXY ON %s@%s TO %s@%s" + (" WITH GRANT OPTION" if grant_option else "")
        return Step(text, (*proxied, user, host), hint=_GRANT_HINT)
    return Step("REVOKE PROXY ON %s@%s FROM %s@%s", (*proxied, user, host), hint=_REVOKE_HINT)


def _default_roles(roles: tuple[Role, ...], user: str, host: str, *, mariadb: bool) -> Step:
    names = ", ".join(r.sql() for r in roles) or "NONE"
    if mariadb:
        # MariaDB lets only who may write mysql.* set another user's default role.
        hint = "the admin needs UPDATE ON mysql.* to set another user's default role"
        return Step(f"SET DEFAULT ROLE {names} FOR %s@%s", (user, host), hint=hint)
    return Step(f"ALTER USER %s@%s DEFAULT ROLE {names}", (user, host), hint=_GRANT_HINT)
