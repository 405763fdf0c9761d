"""MySQL and MariaDB statements as data: pure functions from catalog text to steps.

Accounts and secrets are parameters (``%s@%s``), quoted by the driver when the
step runs. Grant lines come from the server's own ``SHOW GRANTS`` output and are
replayed with the source account replaced by the target's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from ...errors import EngineError
from ..base import Step

__all__ = [
    "IDENTIFIED",
    "copy_grants",
    "native_password_hash",
    "quoted_account",
    "revoke_everything",
    "set_password",
    "tls_and_limits",
]

# In SHOW GRANTS / SHOW CREATE USER: the authentication part, never replayed.
IDENTIFIED = re.compile(
    r" IDENTIFIED (?:BY PASSWORD '[^']*'|WITH \S+(?: AS '[^']*'| BY '[^']*')?|VIA .*?)"
    r"(?=( REQUIRE | WITH | PASSWORD | ACCOUNT |$))"
)
_REQUIRE = re.compile(r" REQUIRE (.+?)(?= WITH | PASSWORD | ACCOUNT |$)")
_LIMITS = re.compile(r" WITH ((?:MAX_\w+ \d+ ?)+)")
_NO_LIMITS = (
    "MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 "
    "MAX_USER_CONNECTIONS 0"
)
_GRANT_HINT = (
    "the admin must hold each right WITH GRANT OPTION (and roles WITH ADMIN OPTION) to give it"
)


def native_password_hash(password: str) -> str:
    """``mysql_native_password``'s stored form: ``*`` + upper-hex SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the plugin's own format
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


def quoted_account(user: str, host: str) -> str:
    """The account as SHOW GRANTS prints it: ```user`@`host```."""
    return "`" + user.replace("`", "``") + "`@`" + host.replace("`", "``") + "`"


def _on_account(text: str, user: str, host: str, hint: str = "") -> Step:
    """*text*, whose literal ``%`` are kept, with ``%s@%s`` bound to the account."""
    return Step(text, (user, host), hint=hint)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def create_user(user: str, host: str) -> Step:
    """``CREATE USER user@host ACCOUNT LOCK``."""
    return _on_account("CREATE USER %s@%s ACCOUNT LOCK", user, host)


def drop_user(user: str, host: str) -> Step:
    """``DROP USER user@host``."""
    return _on_account("DROP USER %s@%s", user, host)


def set_lock(user: str, host: str, *, locked: bool) -> Step:
    """``ALTER USER user@host ACCOUNT LOCK`` / ``UNLOCK``."""
    return _on_account(f"ALTER USER %s@%s ACCOUNT {'LOCK' if locked else 'UNLOCK'}", user, host)


def set_password(user: str, host: str, password: str, *, plugin: str, mariadb: bool) -> Step:
    """The statement that gives *user@host* its password, as a hash wherever possible."""
    if mariadb or plugin in ("mysql_native_password", ""):
        clause = (
            "IDENTIFIED BY PASSWORD %s"
            if mariadb
            else "IDENTIFIED WITH mysql_native_password AS %s"
        )
        return Step(f"ALTER USER %s@%s {clause}", (user, host, native_password_hash(password)))
    # caching_sha2_password salts on the server: MySQL rewrites this
    # statement's secret as <secret> in its logs.
    return Step(
        "ALTER USER %s@%s IDENTIFIED WITH caching_sha2_password BY %s", (user, host, password)
    )


def revoke_everything(lines: Sequence[str], user: str, host: str) -> list[Step]:
    """Statements that take every right shown in *lines* (SHOW GRANTS) away from user@host."""
    quoted = quoted_account(user, host)
    steps: list[Step] = []
    for line in lines:
        role = re.fullmatch(r"GRANT (`(?:[^`]|``)*`) TO " + re.escape(quoted), line)
        if role:
            steps.append(_on_account(f"REVOKE {_escape(role.group(1))} FROM %s@%s", user, host))
        proxy = re.fullmatch(r"GRANT PROXY ON (\S+) TO " + re.escape(quoted) + ".*", line)
        if proxy:
            steps.append(
                _on_account(f"REVOKE PROXY ON {_escape(proxy.group(1))} FROM %s@%s", user, host)
            )
    steps.append(_on_account("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", user, host))
    return steps


def copy_grants(lines: Sequence[str], source: str, target: str, host: str) -> list[Step]:
    """The source's SHOW GRANTS lines replayed for target@host."""
    quoted = quoted_account(source, host)
    steps: list[Step] = []
    for line in lines:
        if line.startswith("GRANT USAGE ON *.* TO ") and "GRANT OPTION" not in line:
            # No privilege in it; TLS and limits are copied with ALTER USER,
            # which needs no global GRANT OPTION.
            continue
        if quoted not in line:
            raise EngineError(f"cannot read SHOW GRANTS line for {source}@{host}")
        text = _escape(line).replace(_escape(quoted), "%s@%s", 1)
        if text.count("%s") != 2:
            raise EngineError(f"cannot read SHOW GRANTS line for {source}@{host}")
        steps.append(_on_account(text, target, host, hint=_GRANT_HINT))
    return steps


def tls_and_limits(create_user_text: str, source: str, target: str, host: str) -> Step:
    """``ALTER USER target@host REQUIRE ... WITH ...`` from the source's SHOW CREATE USER."""
    text = IDENTIFIED.sub("", create_user_text)
    require = _REQUIRE.search(text)
    limits = _LIMITS.search(text)
    tls = require.group(1) if require else "NONE"
    if not re.fullmatch(
        r"(NONE|SSL|X509|(?:(?:AND )?(?:ISSUER|SUBJECT|CIPHER) '[^']*' ?)+)", tls.strip()
    ):
        raise EngineError(f"cannot copy the TLS requirement of {source}@{host}: {tls!r}")
    with_limits = limits.group(1).strip() if limits else _NO_LIMITS
    # Both parts are the server's own rendering of the source account.
    return _on_account(
        f"ALTER USER %s@%s REQUIRE {_escape(tls)} WITH {_escape(with_limits)}", target, host
    )
