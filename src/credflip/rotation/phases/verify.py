"""verify: log in with exactly the URLs prepare wrote, on every instance.

The writer took the new password synchronously and must accept it at once.
A replica may not have replayed it yet: PostgreSQL standbys are waited for
up to their replay position, and any replica's refused login is retried
until ``--replica-lag-timeout``. Any other failure stops the rotation here,
with the pointer untouched.
"""

from __future__ import annotations

import time

from ...backoff import Wait
from ...errors import (
    AuthenticationFailed,
    CredflipError,
    DatabaseUnavailable,
    DeadlineReached,
    RotationError,
)
from ...instances import Fleet, format_address
from ...state import Phase
from ...urls import DbUrl
from .. import messages
from ..context import Context
from ..plan import Login, PhasePlan
from . import PhaseHandler

__all__ = ["HANDLER"]


def plan(ctx: Context) -> PhasePlan:
    """The logins: the writer URL, then the reader URL and each instance, once per address."""
    to, user = ctx.rot.to_color, ctx.new_user
    urls = ctx.urls(to)
    for role, url in urls.items():
        if url.user != user:
            raise messages.wrong_user(ctx.layout.url(to, role), url.user, user)
    logins = [Login("writer URL", urls["writer"])]
    seen = {_address(urls["writer"], ctx.fleet)}
    candidates = [("reader URL", urls["reader"])] + [
        (f"instance {inst.address} ({inst.source})", inst.on(urls["reader"]))
        for inst in ctx.fleet.instances
    ]
    for label, url in candidates:
        address = _address(url, ctx.fleet)
        if address not in seen:
            seen.add(address)
            logins.append(Login(label, url, replica=True))
    return PhasePlan(Phase.VERIFY, logins=logins)


def run(ctx: Context) -> bool:
    """Log in everywhere the plan says; wait for replicas within the lag timeout."""
    ctx.redo_prepare = True
    writer, *others = plan(ctx).logins
    _login(ctx, writer)
    ctx.redo_prepare = False
    opts = ctx.options
    # Replicas are waited for until the lag timeout, or the caller's deadline
    # (then the run stops resumably, here, with the same password).
    lag = Wait(time.monotonic(), opts.replica_lag_timeout, opts.deadline)
    ctx.fleet.wait_replayed(
        ctx.rot.position,
        timeout=opts.replica_lag_timeout,
        why=f"the new password of {ctx.new_user!r}",
        notice=ctx.notice,
        deadline=opts.deadline,
    )
    for login in others:
        _login(ctx, login, lag=lag)
    return True


def _login(ctx: Context, login: Login, *, lag: Wait | None = None) -> None:
    """Log in with *login*; on a replica, retry a refused login while *lag* lasts."""
    last_note = time.monotonic()
    while True:
        try:
            ctx.engine.verify(login.url, probe=ctx.options.probe)
            return
        except AuthenticationFailed as exc:
            now = time.monotonic()
            if lag is not None and lag.cut_short(now):
                raise DeadlineReached(f"{login.label} did not yet accept the new password") from exc
            if lag is None or lag.over(now):
                raise _failed(ctx, login, exc) from exc
            if now - last_note >= 2.0:
                ctx.notice(messages.waiting_for_replica(login.label, lag.left(now)))
                last_note = now
            time.sleep(0.2)
        except DatabaseUnavailable:
            raise  # the server, not the password: the phase is tried again
        except CredflipError as exc:
            raise _failed(ctx, login, exc) from exc


def _failed(ctx: Context, login: Login, exc: CredflipError) -> RotationError:
    rot = ctx.rot
    return messages.verify_failed(rot.to_color, rot.from_color, login.label, login.url, exc)


def _address(url: DbUrl, fleet: Fleet) -> str:
    port = url.port or fleet.instances[0].port
    return format_address(url.host.lower(), port)


HANDLER = PhaseHandler(plan, run)
