"""MySQL and MariaDB statements on accounts as data: pure functions from catalog text to
steps (rights are planned in :mod:`.rights`).

Accounts and secrets are parameters (``%s@%s``), quoted by the driver when the
step runs. TLS requirements and resource limits come from the server's own
``SHOW CREATE USER`` text.
"""

from __future__ import annotations

import hashlib
import re

from ...errors import EngineError
from ..base import Step

__all__ = [
    "IDENTIFIED",
    "host_matches",
    "native_password_hash",
    "quoted_account",
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


def native_password_hash(password: str) -> str:
    """``mysql_native_password``'s stored form: ``*`` + upper-hex SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the plugin's own format
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


def host_matches(pattern: str, host: str) -> bool:
    """Whether an account at host *pattern* (``%``, ``10.0.%``) is the one the server runs
    a DEFINER at *host* as, once the account at *host* itself is gone: *host* is matched
    as a name, with LIKE's wildcards, case-insensitively. An IP/netmask pattern is taken
    to match nothing (so that nothing is dropped on a guess)."""
    if "/" in pattern:
        return False
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, host, re.IGNORECASE | re.DOTALL) is not None


def quoted_account(user: str, host: str) -> str:
    """The account as SHOW GRANTS prints it: ```user`@`host``` (for comparing its lines)."""
    return "`" + user.replace("`", "``") + "`@`" + host.replace("`", "``") + "`"


def _on_account(text: str, user: str, host: str) -> Step:
    """*text*, whose literal ``%`` are kept, with ``%s@%s`` bound to the account."""
    return Step(text, (user, host))


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
