"""What MySQL and MariaDB say about accounts: hosts, ``SHOW CREATE USER``, ``SHOW
GRANTS`` (the admin's own, its roles' included), and the objects a user is the
DEFINER of. Statements are planned (:mod:`.plan`) from this text."""

from __future__ import annotations

import re

from ...errors import ConnectFailed, EngineError
from . import plan
from .connection import MysqlConnection

__all__ = ["MysqlCatalog"]

# A quoted role as SHOW GRANTS prints it: `name` or `name`@`host`.
_NAME = r"`(?:[^`]|``)*`(?:@`(?:[^`]|``)*`)?"


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
