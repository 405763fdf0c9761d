"""verify: log in with exactly the URLs prepare wrote, on every instance.

The writer took the new password synchronously and must accept it at once.
A replica may not have replayed it yet: PostgreSQL standbys are waited for
up to their replay position, and any replica's refused login is retried
until ``--replica-lag-timeout`` (a :class:`~credflip.waiting.Wait`, which also
ends at the run's deadline: the rotation then stops resumably in verify). Any
other failure stops the rotation here, with the pointer untouched.

Behind PgBouncer, the new color logs in on the server itself first (so that a
refusal there means the password, and prepare runs again), then through
PgBouncer: a refusal only there stops the rotation in verify, naming what
PgBouncer lacks, and the next run verifies the same password again.
"""

from __future__ import annotations

import dataclasses

from ...errors import AuthenticationFailed, CredflipError, DatabaseUnavailable, RotationError
from ...instances import Fleet, format_address
from ...layout import Role
from ...poolers import PgBouncer
from ...state import Phase
from ...urls import DbUrl
from ...waiting import Wait
from .. import messages
from ..context import Context
from ..plan import Login, PhasePlan
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The logins: the writer URL, then the reader URL and each instance, once per address.

    Behind PgBouncer the first login goes to the primary directly (the server took
    the password), then every URL through PgBouncer (or the writer URL moved onto
    it, when none goes through it), then the rest as without it. Behind RDS Proxy
    the writer's login is made through the proxy too (:func:`_first`).
    """
    to, user = ctx.rot.to_color, ctx.new_user
    urls = ctx.urls(to)
    for role, url in urls.items():
        if url.user != user:
            raise messages.wrong_user(ctx.layout.url(to, role), url.user, user)
    pooler = ctx.fleet.pooler
    if pooler is None:
        logins = _first(ctx, urls["writer"])
        candidates = [("reader URL", urls["reader"])]
    else:
        logins = _pooled_logins(ctx, pooler, urls)
        urls = {role: _direct(pooler, url) for role, url in urls.items()}
        candidates = [(f"{role} URL", url) for role, url in urls.items()]
    seen = {_address(login.url, ctx.fleet) for login in logins if not login.pooler}
    candidates += [
        (f"instance {inst.address} ({inst.source})", inst.on(urls["reader"]))
        for inst in ctx.fleet.instances
    ]
    for label, url in candidates:
        address = _address(url, ctx.fleet)
        if address not in seen and (pooler is None or not pooler.serves(url)):
            seen.add(address)
            logins.append(Login(label, url, replica=True))
    return PhasePlan(Phase.VERIFY, logins=logins)


def _first(ctx: Context, writer: DbUrl) -> list[Login]:
    """The writer's login (direct: it must accept the new password at once), then behind
    RDS Proxy the same login through the proxy's endpoint.

    The proxy logs in to the database with the secret prepare wrote; a refusal is
    retried like a replica's, within ``--replica-lag-timeout``, in case the proxy
    has not read the new version yet.
    """
    proxy = ctx.rds_proxy
    if proxy is None:
        return [Login("writer URL", writer)]
    why = f"RDS Proxy {proxy.name} may not have read the new secret yet"
    if not proxy.setting.is_endpoint(writer.host):
        through = Login(f"RDS Proxy {proxy.name}", proxy.via(writer), replica=True, why=why)
        return [Login("writer URL", writer), through]
    primary = ctx.fleet.instances[0]
    return [
        Login(f"writer URL directly at {primary.address}", primary.on(writer)),
        Login(f"writer URL through RDS Proxy {proxy.name}", writer, replica=True, why=why),
    ]


def _pooled_logins(ctx: Context, pooler: PgBouncer, urls: dict[Role, DbUrl]) -> list[Login]:
    """Behind PgBouncer: the writer on the primary itself, then each URL through PgBouncer."""
    primary = ctx.fleet.instances[0]
    writer = urls["writer"]
    first = writer if not pooler.serves(writer) else primary.on(_direct(pooler, writer))
    label = "writer URL" if first is writer else f"writer URL directly on {primary.address}"
    logins = [Login(label, first)]
    through = {(role, url.database): url for role, url in urls.items() if pooler.serves(url)}
    if not through:
        moved = dataclasses.replace(writer, host=pooler.host, port=pooler.port)
        through = {("writer", writer.database): moved}
    for (role, _db), url in through.items():
        if all(url != login.url for login in logins):
            logins.append(Login(f"{role} URL through {pooler.label}", url, pooler=True))
    return logins


def _direct(pooler: PgBouncer, url: DbUrl) -> DbUrl:
    """*url* with the server's name of the database that PgBouncer's database names."""
    if not pooler.serves(url):
        return url
    return dataclasses.replace(url, database=pooler.backend_database(url.database))


def run(ctx: Context) -> bool:
    """Log in everywhere the plan says; wait for replicas within the lag timeout (and the
    deadline: then stop resumably, still in verify, with the same password)."""
    ctx.redo_prepare = True
    writer, *others = plan(ctx).logins
    _login(ctx, writer, wait=None)
    ctx.redo_prepare = False
    wait = Wait(ctx.options.replica_lag_timeout, deadline=ctx.options.deadline)
    ctx.fleet.wait_replayed(
        ctx.rot.position, wait=wait, why=f"the new password of {ctx.new_user!r}", notice=ctx.notice
    )
    for login in others:
        if not _login(ctx, login, wait=wait):
            ctx.notice(messages.verify_deadline_stop(login.label))
            return False
    return True


def _login(ctx: Context, login: Login, *, wait: Wait | None) -> bool:
    """Log in with *login*; on a replica, retry a refused login while *wait* lasts.

    False when the caller's deadline ended the wait before the login went through.
    """
    while True:
        try:
            ctx.connector.verify(login.url, probe=ctx.options.probe)
            return True
        except AuthenticationFailed as exc:
            if wait is None or not wait.left():
                if wait is not None and wait.by_deadline:
                    return False
                raise _failed(ctx, login, exc, waited=wait) from exc
            if wait.note_due():
                ctx.notice(_waiting(login, wait.left()))
            wait.pause()
        except DatabaseUnavailable:
            raise  # the server, not the password: the phase is tried again
        except CredflipError as exc:
            raise _failed(ctx, login, exc) from exc


def _waiting(login: Login, left: float) -> str:
    if login.pooler:
        return messages.waiting_for_pooler(login.label, left)
    if not login.why:
        return messages.waiting_for_replica(login.label, left)
    return (
        f"waiting for the {login.label} to accept the new password ({login.why}); {left:.0f}s left"
    )


def _failed(
    ctx: Context, login: Login, exc: CredflipError, *, waited: Wait | None = None
) -> RotationError:
    """Why verify stops at *login*; *waited*: the wait for a replica that ran out."""
    rot = ctx.rot
    if login.pooler and isinstance(exc, AuthenticationFailed):
        return messages.pooler_refused(
            rot.to_color, rot.from_color, login.label, login.url, exc, ctx.layout.env
        )
    if waited is not None:
        return messages.verify_timed_out(
            rot.to_color,
            rot.from_color,
            login.label,
            login.url,
            exc,
            timeout=waited.timeout,
            why=login.why,
        )
    return messages.verify_failed(rot.to_color, rot.from_color, login.label, login.url, exc)


def _address(url: DbUrl, fleet: Fleet) -> str:
    port = url.port or fleet.instances[0].port
    return format_address(url.host.lower(), port)


HANDLER = PhaseHandler(plan, run)
