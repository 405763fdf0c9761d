"""Whether ``pg_stat_statements`` counts a user's statements, by the settings that apply to
the user's sessions.

It counts nothing where ``pg_stat_statements.track`` is ``none``, nor (14+) where
``compute_query_id`` is ``off``: its entries are keyed by the query id. Both can
be set for the whole server (its configuration, ``ALTER SYSTEM``, its command
line), and, like ``role``, for a role in a database, a role, a database, or every
role (``ALTER ROLE ALL``): a login takes the first of these that sets it, in that
order, then the server's value. A ``role`` setting makes a login run its
statements as that role, counted for it. The server's value is checked with every
sample (a reload may change it); the others when a rotation starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

__all__ = ["QUERY_ID", "TRACK", "server_gap", "setting_problems"]

Run = Callable[..., list[tuple[Any, ...]]]

TRACK = "pg_stat_statements.track"
QUERY_ID = "compute_query_id"
#: The values with which pg_stat_statements counts nothing, and the value to set instead.
_BLIND = {
    TRACK: (frozenset({"none"}), "top"),
    QUERY_ID: (frozenset({"off", "false", "no", "0"}), "auto"),
}

#: Where the admin's own session may take a setting from, hiding the server's value.
_HIDING = {
    "database": "ALTER DATABASE {db} RESET {name}",
    "user": "ALTER ROLE {admin} RESET {name}",
    "database user": "ALTER ROLE {admin} IN DATABASE {db} RESET {name}",
}

#: A setting of pg_db_role_setting: (the user's own, database or '' for every one).
Key = tuple[bool, str]

_SETTINGS_SQL = (
    "SELECT s.setrole <> 0, coalesce(d.datname, ''), c "
    "FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS c "
    "LEFT JOIN pg_database d ON d.oid = s.setdatabase "
    "LEFT JOIN pg_roles r ON r.rolname = %s "
    "WHERE (s.setrole = 0 OR s.setrole = r.oid) "
    # Only the databases the user may log in to.
    "AND (s.setdatabase = 0 OR (d.datallowconn AND (r.oid IS NULL "
    "OR has_database_privilege(r.oid, d.oid, 'CONNECT')))) "
    "AND lower(split_part(c, '=', 1)) IN ('role', 'compute_query_id', 'pg_stat_statements.track')"
)


def blind(name: str, value: object) -> bool:
    """Whether setting *name* to *value* keeps pg_stat_statements from counting."""
    return str(value).strip().lower() in _BLIND[name][0]


def server_gap(run: Run, *, admin: str, database: str) -> str | None:
    """Why pg_stat_statements counts nothing on this server now (with the fix), or None.

    The server's value, as the admin's session sees it: where that session
    takes the setting from a role or database setting of its own, the server's
    is hidden, and the gap says how to let credflip see it. (A setting for
    every role, ``ALTER ROLE ALL``, applies to every login: :func:`setting_problems`.)
    """
    rows = run(
        "SELECT name, setting, source FROM pg_settings WHERE name IN (%s, %s) ORDER BY name",
        [QUERY_ID, TRACK],
    )
    for row in rows:
        gap = _gap(*(str(v) for v in row), admin=admin, database=database)
        if gap is not None:
            return gap
    return None


def _gap(name: str, setting: str, source: str, *, admin: str, database: str) -> str | None:
    """Why the admin's session value *setting* of *name* (from *source*) says the server
    counts nothing, or hides whether it does; None when it counts."""
    if source == "global":
        return None
    hiding = _HIDING.get(source)
    if hiding is not None:
        fix = (
            sql.SQL(hiding)
            .format(db=sql.Identifier(database), admin=sql.Identifier(admin), name=sql.SQL(name))
            .as_string(None)
        )
    elif source in ("client", "session"):
        fix = "remove it from the admin's connection options (PGOPTIONS)"
    elif blind(name, setting):
        how = (
            f"remove -c {name}={setting} from the server's command line and restart it"
            if source == "command line"
            else f"as a superuser run ALTER SYSTEM SET {name} = {_BLIND[name][1]} and SELECT "
            f"pg_reload_conf() (RDS/Aurora: set it in the DB parameter group)"
        )
        return f"{name} is {setting!r} on this server, so pg_stat_statements counts nothing: {how}"
    else:
        return None
    return (
        f"the admin's own sessions take {name} from a {source} setting, which hides whether "
        f"pg_stat_statements counts on this server: run {fix}"
    )


def settings_of(run: Run, user: str) -> dict[Key, dict[str, str]]:
    """The ``role``, ``compute_query_id`` and ``pg_stat_statements.track`` settings that
    may apply to *user*'s logins: its own and every role's, for every database it may
    log in to ('') and for one."""
    out: dict[Key, dict[str, str]] = {}
    for own, db, item in run(_SETTINGS_SQL, [user]):
        name, _, value = str(item).partition("=")
        out.setdefault((bool(own), str(db)), {})[name.strip().lower()] = value
    return out


def reset(key: Key, user: str, name: str) -> str:
    """The statement that removes setting *name* at *key*."""
    own, db = key
    template = {
        (True, True): "ALTER ROLE {user} IN DATABASE {db} RESET {name}",
        (True, False): "ALTER ROLE {user} RESET {name}",
        (False, True): "ALTER DATABASE {db} RESET {name}",
        (False, False): "ALTER ROLE ALL RESET {name}",
    }[(own, bool(db))]
    return (
        sql.SQL(template)
        .format(user=sql.Identifier(user), db=sql.Identifier(db), name=sql.SQL(name))
        .as_string(None)
    )


def _applies_to(key: Key, user: str) -> str:
    own, db = key
    if own:
        return repr(user) + (f" in database {db!r}" if db else "")
    return "every login" + (f" to database {db!r}" if db else "")


def setting_problems(settings: dict[Key, dict[str, str]], user: str, *, watched: bool) -> list[str]:
    """Why pg_stat_statements cannot count *user*'s statements by the role and database
    settings (:func:`settings_of`), with the statement that fixes each; [] when it can.

    *watched*: the drain resets *user*'s own ``role`` setting for all databases
    (the group's) at the switch, so the settings of every role are what its
    logins then take; its own per-database one is the caller's to judge.
    """
    problems: list[str] = []
    dbs = sorted({db for _own, db in settings if db})
    for name in (TRACK, QUERY_ID):
        found: set[Key] = set()
        for db in [*dbs, ""]:
            chain: list[Key] = [(True, db), (True, ""), (False, db), (False, "")]
            key = next((k for k in chain if name in settings.get(k, {})), None)
            if key is None or key in found or not blind(name, settings[key][name]):
                continue
            found.add(key)
            problems.append(
                f"{name} = {settings[key][name]} applies to {_applies_to(key, user)}, so "
                f"pg_stat_statements counts none of the statements of {user!r} there: run "
                f"{reset(key, user, name)}"
            )
    for key in ((False, db) for db in [*dbs, ""]):
        target = settings.get(key, {}).get("role")
        if target is None or target.strip().lower() == "none" or target == user:
            continue
        shadowed = "role" in settings.get((True, key[1]), {}) if key[1] else False
        if not watched and "role" in settings.get((True, ""), {}):
            shadowed = True
        if not shadowed:
            problems.append(
                f"{_applies_to(key, user)} runs as role {target!r}, those of {user!r} too, so "
                f"pg_stat_statements counts their statements for that role: run "
                f"{reset(key, user, 'role')}"
            )
    return problems
