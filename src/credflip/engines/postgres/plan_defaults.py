"""Default privileges as data: ``ALTER DEFAULT PRIVILEGES`` statements from catalog snapshots.

The colors' sessions run as the group, so what they create is the group's and
gets the group's default privileges. A session that runs as a color itself
(the drain's watch lets the old user's new logins do that, so that they are
counted as its own) creates objects that color owns. Each color therefore
carries the group's default privileges, and grants the group what an owner
has: whatever it creates is usable by the group, and so by the other color, at
once, and by everyone the group's defaults name. Pure, like :mod:`.plan`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from psycopg import sql

from ..base import Step
from .catalog import DefaultGrant
from .plan import check_privilege

__all__ = ["BUILT_IN", "copy_default_acl", "like_group", "sync_default_acl"]

#: ``defaclobjtype`` → the word ``ALTER DEFAULT PRIVILEGES`` uses.
KINDS = {
    "r": "TABLES",
    "S": "SEQUENCES",
    "f": "FUNCTIONS",
    "T": "TYPES",
    "n": "SCHEMAS",
}

#: What a role that has no default privileges gives (besides itself, the owner):
#: PostgreSQL's built-in defaults (``acldefault``), the same on 13 to 18.
BUILT_IN = frozenset(
    {
        DefaultGrant("", "f", "", "EXECUTE", False),
        DefaultGrant("", "T", "", "USAGE", False),
    }
)


def like_group(group_defaults: Iterable[DefaultGrant], user: str) -> set[DefaultGrant]:
    """What *user*'s new objects get so that they are like the group's: the group's
    default privileges, the group's own (as owner) included. *user* itself, the owner
    of what it creates, is left out."""
    return {g for g in group_defaults if g.kind in KINDS and g.grantee != user}


def sync_default_acl(
    want: Iterable[DefaultGrant], have: Iterable[DefaultGrant], target: str, database: str
) -> list[Step]:
    """``ALTER DEFAULT PRIVILEGES FOR ROLE target`` so that its new objects get exactly
    *want* (besides its own rights as their owner): grants first, then revokes, one
    statement per schema, kind and grantee."""
    held = {_key(g): g for g in have if g.grantee != target and g.kind in KINDS}
    wanted = {_key(g): g for g in want}
    grant: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    narrow: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    revoke: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    for key, g in wanted.items():
        h = held.get(key)
        if h is None or (g.grantable and not h.grantable):
            grant[(g.schema, g.kind, g.grantee, g.grantable)].append(g.privilege)
        elif h.grantable and not g.grantable:
            narrow[(g.schema, g.kind, g.grantee, True)].append(g.privilege)
    for key, h in held.items():
        if key not in wanted:
            revoke[(h.schema, h.kind, h.grantee, False)].append(h.privilege)
    steps: list[Step] = []
    for action, groups in (("GRANT", grant), ("NARROW", narrow), ("REVOKE", revoke)):
        for (schema, kind, grantee, option), privileges in sorted(groups.items()):
            statement = _statement(target, schema, kind, action, privileges, grantee, option)
            steps.append(Step(statement, database=database))
    return steps


def copy_default_acl(rows: Iterable[Sequence[object]], target: str, database: str) -> list[Step]:
    """Repeat ``ALTER DEFAULT PRIVILEGES FOR ROLE source`` entries for *target*."""
    return [
        Step(
            _statement(
                target,
                str(schema),
                str(objtype),
                "GRANT",
                [str(privilege)],
                str(grantee),
                bool(grantable),
            ),
            database=database,
        )
        for schema, objtype, grantee, privilege, grantable in rows
    ]


def _key(g: DefaultGrant) -> tuple[str, str, str, str]:
    return (g.schema, g.kind, g.grantee, g.privilege)


def _statement(
    target: str,
    schema: str,
    kind: str,
    action: str,
    privileges: Sequence[str],
    grantee: str,
    option: bool,
) -> sql.Composed:
    """One ``ALTER DEFAULT PRIVILEGES`` statement; *action* GRANT, REVOKE or NARROW
    (``REVOKE GRANT OPTION FOR``); *option*: WITH GRANT OPTION on a GRANT."""
    for privilege in privileges:
        check_privilege(privilege)
    head = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} ").format(
        sql.Identifier(target),
        sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL(""),
    )
    what = sql.SQL("{} ON {}").format(
        sql.SQL(", ").join(sql.SQL(p) for p in sorted(privileges)), sql.SQL(KINDS[kind])
    )
    who = sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC")
    if action == "GRANT":
        tail = sql.SQL(" WITH GRANT OPTION" if option else "")
        return sql.SQL("{}GRANT {} TO {}{}").format(head, what, who, tail)
    prefix = "REVOKE GRANT OPTION FOR" if action == "NARROW" else "REVOKE"
    return sql.SQL("{}{} {} FROM {}").format(head, sql.SQL(prefix), what, who)
