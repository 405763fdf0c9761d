"""PostgreSQL statements as data: pure functions from catalog snapshots to steps.

Every identifier and literal goes through ``psycopg.sql``; nothing here talks
to a server, so plans are unit-tested without one, and ``rotate --dry-run``
prints exactly the statements a rotation runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from psycopg import sql

from ...errors import EngineError
from ..base import Step
from .catalog import Attributes, Grant, Membership

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

_MEMBERSHIP_HINT = (
    "on PostgreSQL 16+ the admin needs ADMIN OPTION on that role: as a superuser run "
    "GRANT <role> TO <admin> WITH ADMIN OPTION"
)
_GRANT_HINT = "the admin must own the object, be a member of its owner, or hold the right "


def _id(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _bool(value: bool | None) -> str:
    return "TRUE" if value else "FALSE"


def create_role(role: str) -> Step:
    """``CREATE ROLE role NOLOGIN``."""
    return Step(sql.SQL("CREATE ROLE {} NOLOGIN").format(_id(role)))


def set_login(role: str, login: bool) -> Step:
    """``ALTER ROLE role LOGIN`` / ``NOLOGIN``."""
    return Step(
        sql.SQL("ALTER ROLE {} {}").format(_id(role), sql.SQL("LOGIN" if login else "NOLOGIN"))
    )


def set_password(role: str, verifier: str) -> Step:
    """``ALTER ROLE role WITH LOGIN PASSWORD '<SCRAM verifier>'``: never the password."""
    return Step(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(_id(role), sql.Literal(verifier))
    )


def set_role_setting(role: str, group: str | None) -> Step:
    """``ALTER ROLE role SET role = group``, or ``RESET role`` without a group."""
    if group is None:
        return Step(sql.SQL("ALTER ROLE {} RESET role").format(_id(role)))
    return Step(sql.SQL("ALTER ROLE {} SET role = {}").format(_id(role), sql.Literal(group)))


def grant_role(role: str, member: str) -> Step:
    """``GRANT role TO member`` with the server's default options."""
    return Step(sql.SQL("GRANT {} TO {}").format(_id(role), _id(member)), hint=_MEMBERSHIP_HINT)


def grant_self(role: str, *, options: bool, held: bool = False) -> Step:
    """The admin's own membership in *role* for its privileges: INHERIT, never SET (16+).

    *held*: the admin already holds a grant of its own in *role* (16+); then only its
    INHERIT option is set, and its SET option stays as it was.
    """
    hint = (
        f"on PostgreSQL 16+ run as a superuser (RDS/Aurora: the master user): GRANT {role} TO "
        f"<admin> WITH ADMIN OPTION"
    )
    if not options:
        return Step(sql.SQL("GRANT {} TO CURRENT_USER").format(_id(role)), hint=hint)
    with_options = "INHERIT TRUE" if held else "INHERIT TRUE, SET FALSE"
    return Step(
        sql.SQL("GRANT {} TO CURRENT_USER WITH {}").format(_id(role), sql.SQL(with_options)),
        hint=hint,
    )


def grant_self_set(role: str) -> Step:
    """Add SET to the admin's own membership in *role* (16+: giving it a database needs it)."""
    return Step(sql.SQL("GRANT {} TO CURRENT_USER WITH SET TRUE").format(_id(role)))


def revoke_self(role: str, option: str = "") -> Step:
    """Take back the admin's own grant in *role*, or only its INHERIT or SET option."""
    if option not in ("", "INHERIT", "SET"):
        raise EngineError(f"unknown membership option {option!r}")
    return Step(
        sql.SQL("REVOKE {}{} FROM CURRENT_USER").format(
            sql.SQL(f"{option} OPTION FOR " if option else ""), _id(role)
        )
    )


def reassign_owned(users: Sequence[str], to: str, database: str) -> Step:
    """``REASSIGN OWNED BY users TO to`` in *database*."""
    return Step(
        sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.SQL(", ").join(map(_id, users)), _id(to)),
        database=database,
    )


def drop_owned(user: str, database: str) -> Step:
    """``DROP OWNED BY user`` in *database* (its remaining grants there)."""
    return Step(sql.SQL("DROP OWNED BY {}").format(_id(user)), database=database)


def drop_role(user: str) -> Step:
    """``DROP ROLE user``."""
    return Step(sql.SQL("DROP ROLE {}").format(_id(user)))


def grant_create_on_schema(schema: str, role: str, database: str) -> Step:
    """``GRANT CREATE ON SCHEMA schema TO role``: REASSIGN OWNED may need it first."""
    return Step(
        sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(_id(schema), _id(role)),
        database=database,
    )


def set_attributes(target: str, attrs: Attributes) -> Step:
    """``ALTER ROLE target WITH [NO]CREATEDB [NO]INHERIT CONNECTION LIMIT n``."""
    return Step(
        sql.SQL("ALTER ROLE {} WITH {} {} CONNECTION LIMIT {}").format(
            _id(target),
            sql.SQL("CREATEDB" if attrs.createdb else "NOCREATEDB"),
            sql.SQL("INHERIT" if attrs.inherit else "NOINHERIT"),
            sql.SQL(str(int(attrs.connlimit))),  # an int: no quoting needed, none possible
        )
    )


def sync_memberships(
    want: Mapping[str, Membership],
    have: Mapping[str, Membership],
    target: str,
    *,
    revoke_extra: bool,
    options: bool,
) -> list[Step]:
    """Give *target* the memberships in *want* with their options; with *revoke_extra*,
    take back those it has beyond them. *options*: the server has INHERIT/SET (16+)."""
    steps: list[Step] = []
    for role, wanted in sorted(want.items()):
        held = have.get(role)
        if held == wanted:
            continue
        if options:
            # One statement sets all three options of the admin's grant.
            steps.append(
                Step(
                    sql.SQL("GRANT {} TO {} WITH ADMIN {}, INHERIT {}, SET {}").format(
                        _id(role), _id(target), *(sql.SQL(_bool(o)) for o in wanted)
                    ),
                    hint=_MEMBERSHIP_HINT,
                )
            )
        elif held is None or (wanted.admin and not held.admin):
            steps.append(
                Step(
                    sql.SQL("GRANT {} TO {}{}").format(
                        _id(role),
                        _id(target),
                        sql.SQL(" WITH ADMIN OPTION" if wanted.admin else ""),
                    ),
                    hint=_MEMBERSHIP_HINT,
                )
            )
        elif held.admin and not wanted.admin:
            steps.append(
                Step(
                    sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}").format(_id(role), _id(target)),
                    hint=_MEMBERSHIP_HINT,
                )
            )
    if revoke_extra:
        for role in sorted(set(have) - set(want)):
            steps.append(
                Step(
                    sql.SQL("REVOKE {} FROM {}").format(_id(role), _id(target)),
                    hint=_MEMBERSHIP_HINT,
                )
            )
    return steps


def sync_settings(
    want: Mapping[tuple[str, str], str], have: Mapping[tuple[str, str], str], target: str
) -> list[Step]:
    """Make *target*'s role settings (per database too) equal *want*."""
    steps: list[Step] = []
    for (dbname, name), value in sorted(want.items()):
        if have.get((dbname, name)) != value:
            steps.append(
                Step(
                    sql.SQL("ALTER ROLE {}{} SET {} TO {}").format(
                        _id(target),
                        _in_database(dbname),
                        sql.Identifier(*name.split(".")),
                        _setting_value(name, value),
                    )
                )
            )
    for dbname, name in sorted(set(have) - set(want)):
        steps.append(
            Step(
                sql.SQL("ALTER ROLE {}{} RESET {}").format(
                    _id(target), _in_database(dbname), sql.Identifier(*name.split("."))
                )
            )
        )
    return steps


def sync_grants(
    want: Iterable[Grant], have: Iterable[Grant], target: str, *, revoke_extra: bool, database: str
) -> list[Step]:
    """GRANT (and with *revoke_extra* REVOKE) so that *target* holds exactly *want*: every
    grant first, then every revoke.

    A table-level REVOKE takes the same privilege on the table's columns too: the
    column grants *target* keeps there are given again in the same statement string,
    which the server runs as one transaction, so that no moment lacks them.
    """

    def key(g: Grant) -> Grant:
        return g._replace(grantable=False)

    wanted, held_set = sorted(set(want)), set(have)
    have_by_key = {key(g): g for g in held_set}
    want_keys = {key(g) for g in wanted}
    grants: list[Grant] = []
    revokes: list[tuple[Grant, bool]] = []  # and whether of the grant option only
    for grant in wanted:
        held = have_by_key.get(key(grant))
        if held is None or (grant.grantable and not held.grantable):
            grants.append(grant)
        elif held.grantable and not grant.grantable:
            revokes.append((grant, True))
    if revoke_extra:
        revokes += [(g, False) for g in sorted(held_set) if key(g) not in want_keys]
    wiped = {g: _wiped_by(g, wanted) for g, _option in revokes}
    given_again = {g for again in wiped.values() for g in again}
    steps = [_grant_step(g, target, database) for g in grants if g not in given_again]
    for grant, option_only in revokes:
        revoke = grant_sql(grant, target, revoke=True, option_only=option_only)
        again = [grant_sql(g, target, revoke=False) for g in wiped[grant]]
        needs = [] if option_only else [f"to take back {grant.describe()}"]
        needs += [f"WITH GRANT OPTION to give {g.describe()}" for g in wiped[grant]]
        hint = _GRANT_HINT + " and ".join(needs) if needs else ""
        steps.append(Step(sql.SQL("; ").join([revoke, *again]), database=database, hint=hint))
    return steps


def _wiped_by(revoked: Grant, wanted: Iterable[Grant]) -> list[Grant]:
    """The column grants of *wanted* that a REVOKE of *revoked* takes away too."""
    if revoked.kind != "TABLE":
        return []
    on = (revoked.schema, revoked.name, revoked.privilege)
    return [g for g in wanted if g.kind == "COLUMN" and (g.schema, g.name, g.privilege) == on]


def _grant_step(grant: Grant, target: str, database: str) -> Step:
    return Step(
        grant_sql(grant, target, revoke=False),
        database=database,
        hint=_GRANT_HINT + f"WITH GRANT OPTION to give {grant.describe()}",
    )


def check_privilege(privilege: str) -> None:
    """Refuse a privilege name this module does not know (it is pasted as SQL)."""
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


def grant_sql(grant: Grant, role: str, *, revoke: bool, option_only: bool = False) -> sql.Composed:
    """``GRANT priv ON kind object TO role`` (or the matching REVOKE), fully quoted."""
    check_privilege(grant.privilege)
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
