"""prepare: give the inactive user a fresh password and the active user's rights.

Behind RDS Proxy the new color's secret is written last, so that the proxy
can log in as it by the time verify logs in through the proxy.

The active user's rights are never changed (only its default privileges follow
the group's, for what its late sessions create in the coming drain). The new
color's URLs are written only after the database accepted the change; the
primary's write position is recorded so that verify can wait for the replicas
to replay it. When the new color was
active since it was last drained (a rollback after the switch, see
:func:`~credflip.state.predrain_due`), the plan starts with a predrain: it is
drained like an old user before its password changes, from the instant the
rotation recorded when it started.
"""

from __future__ import annotations

from ...state import Phase, save_state
from .. import messages
from ..context import Context
from ..params import new_password
from ..plan import PhasePlan, Predrain, SecretWrite, Write
from ..watch import drain_policy, watch, watch_steps
from . import PhaseHandler

__all__ = ["HANDLER"]

#: What a refused secret write leaves: the pointer unmoved, prepare to run again.
_UNMOVED = "the pointer was not moved; prepare runs again"


def plan(ctx: Context) -> PhasePlan:
    """The predrain (when one is due), the statements that prepare the new user, and its
    URLs with the fresh password."""
    first = plan_predrain(ctx)
    rot = ctx.rot
    password = new_password()
    ctx.secrets.append(password)
    steps = ctx.admin.plan_prepare(ctx.new_user, password, like=ctx.old_user, group=ctx.state.group)
    writes = [
        Write(
            ctx.layout.url(rot.to_color, role),
            url.with_credentials(ctx.new_user, password).secret,
            secure=True,
        )
        for role, url in ctx.urls(rot.from_color).items()
    ]
    secret = ctx.admin.planned_secret(ctx.new_user)
    if ctx.fleet.pooler is not None and secret is not None:
        # What an auth_file must hold for the new color (pooler-userlist prints it).
        writes.append(Write(ctx.layout.verifier(rot.to_color), secret, secure=True))
    proxy_secrets = []
    if ctx.rds_proxy is not None:
        login = ctx.urls(rot.from_color)["writer"].with_credentials(ctx.new_user, password)
        name = ctx.layout.proxy_secret(rot.to_color)
        proxy_secrets.append(SecretWrite(rot.to_color, name, login))
    return PhasePlan(
        Phase.PREPARE, steps=steps, writes=writes, predrain=first, secrets=proxy_secrets
    )


def plan_predrain(ctx: Context) -> Predrain | None:
    """The drain of the new color before its password changes, when one is due.

    Clients used it while the pointer named it (before a rollback); those that
    do not follow the pointer may still use it. It is drained like an old user,
    counting from when it stopped being active, as recorded when the rotation
    started (a resumed rotation never derives it again).
    """
    rot = ctx.rot
    since = None if rot.predrained else rot.predrain_since
    if since is None:
        return None
    policy = drain_policy(rot)
    return Predrain(
        user=ctx.new_user,
        color=rot.to_color,
        since=since,
        window=policy.window,
        shortest=policy.shortest,
        steps=watch_steps(ctx, ctx.new_user),
    )


def predrain(ctx: Context, planned: Predrain) -> bool:
    """Run *planned*: make the user's logins countable, drain it, then undo the watch
    (prepare then gives it the active user's settings back)."""
    user, group = planned.user, ctx.state.group
    # Asked before the watch changes what it looks at.
    counting = ctx.observer.count_problem(user, group) is None
    ctx.observer.execute(planned.steps)
    ctx.notice(messages.predraining(user, planned.color))
    if not watch(ctx, counting=counting, user=user, since=planned.since):
        return False
    # What late sessions created meanwhile goes to the group, as at retire.
    ctx.observer.end_watch(user, group)
    ctx.rot.predrained = True
    # The drain of the old user starts its own evidence and legacy clients.
    ctx.rot.evidence = {}
    ctx.rot.legacy = []
    return True


def run(ctx: Context) -> bool:
    """Predrain when the plan says so; prepare the new user, note the write position, then
    write its URLs."""
    pointer = ctx.pointer()
    if pointer is not ctx.rot.from_color:
        raise messages.pointer_moved(pointer, ctx.rot.from_color, ctx.layout.env)
    first = plan_predrain(ctx)
    if first is not None and not predrain(ctx, first):
        return False
    # Planned after the predrain, on the catalog as the predrain left it (a plan
    # without a predrain now: it is recorded as done).
    planned = plan(ctx)
    # Recorded before the first statement: a rollback from here on locks the new
    # color again, whatever step a crash stopped at.
    ctx.rot.prepared = True
    save_state(ctx.store, ctx.layout, ctx.state)
    ctx.admin.execute(planned.steps)
    # Replicas have the new password once they replayed this far.
    ctx.rot.position = ctx.observer.position()
    ctx.write(planned.writes)
    # RDS Proxy logs in with the secret: written before verify logs in through it.
    for secret in planned.secrets:
        assert ctx.rds_proxy is not None  # noqa: S101 - planned only with a proxy
        engine, direct = ctx.state.engine, ctx.fleet.primary.admin_url
        ctx.rds_proxy.write_secret(
            secret.color, secret.url, engine=engine, direct=direct, done=_UNMOVED
        )
    return True


HANDLER = PhaseHandler(plan, run)
