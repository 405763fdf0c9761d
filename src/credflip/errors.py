"""One exception hierarchy for everything credflip raises.

Every message is one line that says what is wrong and what to do about it.
Backend errors (psycopg, PyMySQL, sqlite3, botocore) are translated where they
happen and chained with ``raise ... from exc``, so callers only ever catch
:class:`CredflipError`. No message ever contains a password.
"""

from __future__ import annotations

import re

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectFailed",
    "CredflipError",
    "DatabaseUnavailable",
    "DeadlineReached",
    "DrainBlocked",
    "DrainTimeout",
    "EngineError",
    "Halted",
    "InsufficientPrivilege",
    "LockHeld",
    "LockLost",
    "LockTimeout",
    "NotInitialized",
    "OutsideWindow",
    "ParameterExists",
    "RotationError",
    "StoreAccessDenied",
    "StoreError",
    "StoreThrottled",
    "Unhealthy",
    "UsageError",
    "UsedAtRetire",
    "is_auth_failure",
    "is_read_only",
]


class CredflipError(Exception):
    """Root of every error credflip raises; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class UsageError(CredflipError):
    """The input is malformed: a bad env name, URL, duration or option value."""

    exit_code = 2


class ConfigurationError(CredflipError):
    """The input is well formed but does not fit what is stored or deployed."""


class StoreError(CredflipError):
    """The parameter store failed or refused an operation."""


class StoreAccessDenied(StoreError):
    """The store refused access (file permissions, IAM, KMS)."""


class StoreThrottled(StoreError):
    """The store rejected the call for exceeding its request rate."""


class ParameterExists(StoreError):
    """A create-only write found the parameter already there."""


class NotInitialized(CredflipError):
    """The environment has no parameters that credflip manages."""


class EngineError(CredflipError):
    """The database failed or refused an operation."""


class ConnectFailed(EngineError):
    """The database could not be reached."""


class DatabaseUnavailable(ConnectFailed):
    """The database is down, restarting, failing over or not answering: worth retrying.

    Raised for a refused or timed-out connection, for a connection lost (or
    silent past its timeout) in the middle of a statement, and for a server
    that refuses writes because it is read-only: during a failover the
    writer's endpoint still reaches the old writer, now a reader, for a while.
    """


class LockTimeout(EngineError):
    """A statement waited longer than ``--lock-timeout`` for a lock another session holds.

    The server cancelled (and so rolled back) that statement; a plan retries it
    within its budget, then stops naming the holder.
    """


class AuthenticationFailed(ConnectFailed):
    """The database was reached but refused the user name or password."""


class InsufficientPrivilege(EngineError):
    """The admin user lacks a right that the operation needs."""


class Unhealthy(CredflipError):
    """``status --all`` ran and found an env halted, failing, or past its drain timeout.

    Exit 5, apart from 1 (the command itself failed), for a cron job or a monitoring
    check: what is wrong is in the rows printed before.
    """

    exit_code = 5


class RotationError(CredflipError):
    """A rotation, rollback or init could not proceed."""


class LockHeld(RotationError):
    """Another rotation holds the environment's lock."""

    exit_code = 3


class LockLost(LockHeld):
    """The lock this run held was taken over (or broken with ``unlock --force``) while it ran.

    Exit 3 like :class:`LockHeld`: the run stopped before its next write to the
    store, leaving what it had recorded for the new holder to resume.
    """


class Halted(RotationError):
    """The env is halted after repeated failed rotations: nothing rotates it until
    ``credflip unhalt``. The scheduled rotator answers ``halted``; the CLI exits 6."""

    exit_code = 6


class OutsideWindow(RotationError):
    """No rotation is under way and the rotation window is closed: nothing to do now.

    Not a failure: the CLI says so in one line and exits 0, the scheduled rotator
    answers ``idle``. A rotation under way continues outside its window.
    """

    exit_code = 0


class DeadlineReached(RotationError):
    """The caller's deadline (a Lambda's time) came in the middle of a wait.

    The rotation runner turns it into a resumable stop, like the drain at its deadline.
    """


class DrainTimeout(RotationError):
    """The old user still had sessions when ``--drain-timeout`` ran out."""

    exit_code = 4


class DrainBlocked(DrainTimeout):
    """The drain could finish, but a replica that may serve the old user is unwatched.

    Exit 4 like a timeout: the old user is kept and the rotation resumes
    (from the drain) once the replica is watched or accepted.
    """


class UsedAtRetire(DrainBlocked):
    """The last reading right before the retire's statements saw the old user in use.

    The old user keeps its login. The rotation runner takes the rotation back to
    the drain in the same run; anywhere else it is a blocked drain (exit 4, the
    next run drains again).
    """


# How drivers say "these credentials are refused"; no driver is imported here,
# errors are recognised by their attributes. PostgreSQL: SQLSTATE 28P01/28000
# (psycopg reports connection failures in the message only); PgBouncer says "SASL
# authentication failed" when a SCRAM login fails there, and "no such user" when its
# auth_query finds no login user of that name (a locked color).
# MySQL: 1045 access denied; 3118 (MySQL) and 4151 (MariaDB) account is locked.
_PG_SQLSTATES = frozenset({"28P01", "28000"})
_MYSQL_ERRNOS = frozenset({1045, 3118, 4151})
_PG_MESSAGES = re.compile(
    r"password authentication failed|SASL authentication failed|is not permitted to log in"
    r"|role \".*\" does not exist|FATAL:  no such user"
)


def is_auth_failure(exc: BaseException) -> bool:
    """True when *exc* (or what it wraps) is the database refusing the credentials.

    The engines use it to classify a failed login; applications use it (through
    :func:`credflip.call_with_refresh`) to decide when to re-resolve.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in _PG_SQLSTATES:
            return True
        args = getattr(current, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_ERRNOS:
            return True
        if type(current).__module__.startswith("psycopg") and _PG_MESSAGES.search(str(current)):
            return True
        # SQLAlchemy keeps the driver's error in .orig.
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


# How drivers say "this server is read-only": a failover demoted the writer the
# endpoint still reaches, or it is a standby. PostgreSQL: SQLSTATE 25006, and 55000
# "recovery is in progress" from a WAL function on a standby. MySQL: 1290 when the
# option it names is --read-only or --super-read-only (1290 names other options
# too); MariaDB: 1836 "running in read-only mode".
_PG_READ_ONLY = "25006"
_PG_IN_RECOVERY = "55000"
_MYSQL_OPTION_PREVENTS = 1290
_MARIADB_READ_ONLY_MODE = 1836


def is_read_only(exc: BaseException) -> bool:
    """True when driver error *exc* is a write refused by a read-only server.

    The engines translate it to :class:`DatabaseUnavailable`: a failover is
    waited out like a lost connection.
    """
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):  # MySQL and MariaDB: (errno, message)
        if args[0] == _MYSQL_OPTION_PREVENTS:
            return "read-only" in " ".join(str(a) for a in args[1:]).lower()
        return bool(args[0] == _MARIADB_READ_ONLY_MODE)
    # PyMySQL's errors have a sqlstate too (HY000): PostgreSQL's only after them.
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == _PG_IN_RECOVERY:
        return "recovery is in progress" in str(exc)
    return bool(sqlstate == _PG_READ_ONLY)
