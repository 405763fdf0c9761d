"""What MySQL and MariaDB say about accounts: hosts, ``SHOW CREATE USER``, an account's
rights as data (:class:`~.rights.Rights`, from ``information_schema.*_PRIVILEGES``
and ``mysql.*``), ``SHOW GRANTS`` (the admin's own, its roles' included; any
account's, normalised, for comparing), and the objects a user is the DEFINER
of. Statements are planned (:mod:`.plan`, :mod:`.rights`) from these reads."""

from __future__ import annotations

import re

from ...errors import ConnectFailed, EngineError
from . import plan
from .connection import MysqlConnection
from .rights import GRANT_OPTION, Privilege, Rights, Role

__all__ = ["MysqlCatalog"]

# A quoted role as SHOW GRANTS prints it: `name` or `name`@`host`.
_NAME = r"`(?:[^`]|``)*`(?:@`(?:[^`]|``)*`)?"
# Global, database, table and column privileges: (kind, db, name, privilege, column, grantable).
_PRIVILEGE_VIEWS = (
    "SELECT '', '', '', PRIVILEGE_TYPE, '', IS_GRANTABLE FROM information_schema.USER_PRIVILEGES",
    "SELECT 'DATABASE', TABLE_SCHEMA, '', PRIVILEGE_TYPE, '', IS_GRANTABLE "
    "FROM information_schema.SCHEMA_PRIVILEGES",
    "SELECT 'TABLE', TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE, '', IS_GRANTABLE "
    "FROM information_schema.TABLE_PRIVILEGES",
    "SELECT 'TABLE', TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE, COLUMN_NAME, IS_GRANTABLE "
    "FROM information_schema.COLUMN_PRIVILEGES",
)


class MysqlCatalog(MysqlConnection):
    """Reads of the server's accounts and grants, as the admin."""

    # -- the admin ---------------------------------------------------------

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

    def rights(self, user: str, host: str) -> Rights:
        """The rights of *user@host* as data: privileges per object, roles, proxies."""
        # information_schema names the grantee so; the admin sees every
        # account's rows through its SELECT on mysql.*.
        grantee = "'" + user + "'@'" + host + "'"
        privileges: set[Privilege] = set()
        for query in _PRIVILEGE_VIEWS:
            for kind, db, name, privilege, column, grantable in self._run(
                query + " WHERE GRANTEE = %s", [grantee]
            ):
                on = (str(kind), str(db), str(name))
                if privilege != "USAGE":
                    privileges.add(Privilege(*on, str(privilege), str(column)))
                if grantable == "YES":  # a column's GRANT OPTION is its table's
                    privileges.add(Privilege(*on, GRANT_OPTION))
        for kind, db, name, procs in self._run(
            "SELECT Routine_type, Db, Routine_name, Proc_priv FROM mysql.procs_priv "
            "WHERE User = %s AND Host = %s",
            [user, host],
        ):
            for word in filter(None, str(procs).split(",")):
                grant = GRANT_OPTION if word == "Grant" else word.upper()
                privileges.add(Privilege(str(kind), str(db), str(name), grant))
        proxies = {
            (str(u), str(h)): bool(int(g))
            for u, h, g in self._run(
                "SELECT Proxied_user, Proxied_host, With_grant FROM mysql.proxies_priv "
                "WHERE User = %s AND Host = %s AND Proxied_user <> ''",
                [user, host],
            )
        }
        roles, default = self._roles(user, host)
        return Rights(frozenset(privileges), roles, proxies, default)

    def _roles(self, user: str, host: str) -> tuple[dict[Role, bool], tuple[Role, ...]]:
        """The roles granted to *user@host* (with ADMIN OPTION or not), its default roles."""
        if self.is_mariadb:
            granted = self._run(
                "SELECT Role, NULL, Admin_option FROM mysql.roles_mapping "
                "WHERE User = %s AND Host = %s",
                [user, host],
            )
            default = self._run(
                "SELECT default_role, NULL FROM mysql.user "
                "WHERE User = %s AND Host = %s AND default_role <> ''",
                [user, host],
            )
        else:
            granted = self._run(
                "SELECT FROM_USER, FROM_HOST, WITH_ADMIN_OPTION FROM mysql.role_edges "
                "WHERE TO_USER = %s AND TO_HOST = %s",
                [user, host],
            )
            default = self._run(
                "SELECT DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles "
                "WHERE USER = %s AND HOST = %s",
                [user, host],
            )

        def role(name: object, role_host: object) -> Role:
            return Role(str(name), None if role_host is None else str(role_host))

        roles = {role(n, h): str(admin) == "Y" for n, h, admin in granted}
        return roles, tuple(sorted(role(n, h) for n, h in default))

    def normalized_grants(self, user: str) -> dict[str, list[str]]:
        """Each host's grants with the grantee replaced by ``<grantee>``, sorted (for comparing)."""
        out: dict[str, list[str]] = {}
        for host in self._hosts(user):
            quoted = plan.quoted_account(user, host)
            out[host] = sorted(g.replace(quoted, "<grantee>") for g in self._grants(user, host))
        return out

    def definer_objects(self, user: str, host: str | None = None) -> list[str]:
        """Views, routines, triggers and events whose DEFINER is *user* (at any host, or
        the account *user@host* alone)."""
        # DEFINER reads user@host, unquoted.
        if host is None:
            match, args = "SUBSTRING_INDEX(DEFINER, '@', 1) = %s", user
        else:
            match, args = "DEFINER = %s", f"{user}@{host}"
        rows = self._run(
            "SELECT CONCAT('view ', TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.VIEWS "
            f"WHERE {match} "
            "UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_SCHEMA, '.', ROUTINE_NAME) "
            f"FROM information_schema.ROUTINES WHERE {match} "
            "UNION ALL SELECT CONCAT('trigger ', TRIGGER_SCHEMA, '.', TRIGGER_NAME) "
            f"FROM information_schema.TRIGGERS WHERE {match} "
            "UNION ALL SELECT CONCAT('event ', EVENT_SCHEMA, '.', EVENT_NAME) "
            f"FROM information_schema.EVENTS WHERE {match}",
            [args] * 4,
        )
        return sorted(str(r[0]) for r in rows)
