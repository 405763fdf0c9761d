"""What a rotation says to the operator: every message in one place.

Each message is one line that says what happened and what to do next. The
functions return text, or the error to raise; none prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..drain import DrainStatus, Reading
from ..durations import format_duration
from ..errors import (
    ConfigurationError,
    CredflipError,
    DrainBlocked,
    DrainTimeout,
    RotationError,
    UsedAtRetire,
)
from ..instances import Instance
from ..layout import Color
from ..legacy import LegacyReport
from ..state import Phase
from ..urls import DbUrl

__all__: list[str] = []


# -- the phase loop --------------------------------------------------------


def deadline_stop(phase: Phase) -> str:
    return f"stopping before {phase} to respect the deadline; run again to resume"


def deadline_in(phase: Phase, exc: CredflipError) -> str:
    return f"stopping in {phase} to respect the deadline ({exc}); run again to resume"


def retrying_start(exc: CredflipError, delay: float, left: float) -> str:
    return (
        f"before the rotation (re)starts: {exc}; trying again in {delay:.1f}s "
        f"({left:.0f}s of --reconnect-timeout left)"
    )


def not_started(exc: CredflipError, env: str, resumable: bool) -> RotationError:
    where = "the rotation under way was left as recorded" if resumable else "nothing was changed"
    return RotationError(
        f"could not start: {exc}; {where}; run 'credflip rotate --env {env}' again once the "
        f"database answers"
    )


def retrying(phase: Phase, exc: CredflipError, delay: float, left: float) -> str:
    return (
        f"{phase}: {exc}; trying the phase again in {delay:.1f}s "
        f"({left:.0f}s of --reconnect-timeout left)"
    )


def stopped(phase: Phase, exc: CredflipError, pointer: Color, env: str) -> RotationError:
    return RotationError(
        f"stopped in {phase}: {exc}; the pointer names {pointer}; run "
        f"'credflip rotate --env {env}' again once the database answers"
    )


def resuming(rotation_id: str, from_color: Color, to_color: Color, phase: Phase) -> str:
    return f"resuming rotation {rotation_id} ({from_color} → {to_color}) at {phase}"


def using_recorded(name: str, recorded: float, given: float) -> str:
    return (
        f"using --{name.replace('_', '-')} {format_duration(recorded)} recorded "
        f"when this rotation started (more than {format_duration(given)})"
    )


# -- before anything changes ----------------------------------------------


def missing_counters(
    gaps: Sequence[str], *, required: bool = False, revoked: bool = False
) -> ConfigurationError:
    """The refusal to drain without a login counter (the default, and ``--require-counters``)."""
    accept = (
        "or run without --require-counters and with --sessions-only to accept the risk"
        if required
        else 'or accept the risk with --sessions-only (Lambda: "sessions_only": true)'
    )
    return ConfigurationError(
        f"{'--require-counters: ' if required else ''}no login counter, so the drain could "
        f"miss a client that connects and leaves between two samples: {'; '.join(gaps)}; "
        f"enable one, {accept}; nothing {'else ' if revoked else ''}was changed"
    )


def sessions_only_revoked(env: str) -> str:
    return (
        f"--require-counters: env {env} no longer accepts draining on open sessions alone "
        f"(its stored --sessions-only is cleared); every rotation now needs a login counter on "
        f"every instance, or --sessions-only for one run"
    )


def inactive_unobservable(target: str, inst: Instance, exc: CredflipError) -> RotationError:
    return RotationError(
        f"cannot check whether the inactive user {target!r} is idle on "
        f"{inst.address} ({inst.source}): {exc}; start it, or if it was removed "
        f"for good, add --forget-instance {inst.address}"
    )


def inactive_in_use(
    target: str, inactive: Color, active: Color, address: str, count: int, who: str
) -> RotationError:
    return RotationError(
        f"the inactive user {target!r} ({inactive}) still has {count} "
        f"session(s) on {address} ({who}): clients still use it; "
        f"wait until they move to {active} (one client TTL after the last switch) "
        f"and run rotate again"
    )


_UNWATCHED = "the drain would not see clients of the old user on replicas that no instance watches"


def unwatched_before_switch(blocking: Sequence[str], *, started: bool) -> ConfigurationError:
    unchanged = "the pointer was not moved" if started else "nothing was changed"
    return ConfigurationError(f"{_UNWATCHED}: {'; '.join(blocking)}; {unchanged}")


# -- prepare and verify ----------------------------------------------------


def pointer_moved(pointer: Color, from_color: Color, env: str) -> RotationError:
    return RotationError(
        f"the pointer names {pointer} but this rotation started from "
        f"{from_color}: it was changed outside credflip; run 'credflip "
        f"rollback --env {env}' to abandon this rotation"
    )


def wrong_user(name: str, found: str | None, user: str) -> RotationError:
    return RotationError(f"{name} logs in as {found!r}, not {user!r}; run 'credflip rotate' again")


def waiting_for_replica(label: str, left: float) -> str:
    return (
        f"waiting for the {label} to accept the new password (a replica that "
        f"has not replayed it yet); {left:.0f}s left"
    )


def waiting_for_pooler(label: str, left: float) -> str:
    return (
        f"waiting for the {label} to accept the new password (PgBouncer may retry a failed "
        f"server login only after server_login_retry); {left:.0f}s left"
    )


def pooler_refused(
    to_color: Color, from_color: Color, label: str, url: DbUrl, exc: CredflipError, env: str
) -> RotationError:
    return RotationError(
        f"verify failed for the {to_color} {label} ({url}): {exc}; the server itself accepts "
        f"the new password, PgBouncer does not: with auth_query, check its auth_user and lookup "
        f"function; with an auth_file, put the lines of 'credflip pooler-userlist --env {env}' "
        f"in it and RELOAD PgBouncer; then run 'credflip rotate' again (the same password is "
        f"verified). The pointer still names {from_color}"
    )


def verify_deadline_stop(label: str) -> str:
    return (
        f"stopping in verify to respect the deadline: the {label} has not accepted the new "
        f"password yet; run again to resume (the same password is verified)"
    )


def verify_timed_out(
    to_color: Color,
    from_color: Color,
    label: str,
    url: DbUrl,
    exc: CredflipError,
    *,
    timeout: float,
    why: str,
) -> RotationError:
    """A replica (or RDS Proxy) still refused the new password at ``--replica-lag-timeout``."""
    check = "" if why else "check its replication, or "
    why = why or "a replica that has not replayed the new password yet?"
    return RotationError(
        f"verify failed for the {to_color} {label} ({url}): still refused after "
        f"--replica-lag-timeout {timeout:g}s ({why}): {exc}; {check}allow more time with "
        f"--replica-lag-timeout. The pointer still names {from_color}; run 'credflip rotate' "
        f"again to resume (the same password is verified), or 'credflip rollback'"
    )


def verify_failed(
    to_color: Color, from_color: Color, label: str, url: DbUrl, exc: CredflipError
) -> RotationError:
    return RotationError(
        f"verify failed for the {to_color} {label} ({url}): {exc}; the pointer still "
        f"names {from_color}; fix the cause and run 'credflip rotate' again, or "
        f"'credflip rollback'"
    )


# -- drain and retire ------------------------------------------------------


def pooled_ended(user: str, pooler: str, ended: int, left: int) -> str:
    if left:
        return (
            f"{pooler} still lists {left} server connection(s) of {user!r} after ending "
            f"{ended}: the user is locked, so PgBouncer cannot open new ones, and it drops "
            f"these the next time it uses them (or at server_idle_timeout)"
        )
    return f"ended the {ended} server connection(s) {pooler} kept of {user!r}"


def predraining(user: str, color: Color) -> str:
    return (
        f"the last rotation was rolled back: draining {user!r} ({color}) like an old user "
        f"before its password changes"
    )


def not_switched(pointer: Color, to_color: Color, env: str) -> RotationError:
    return RotationError(
        f"the pointer names {pointer}, but this rotation switched to "
        f"{to_color}: a rollback was interrupted or someone moved it; the "
        f"{pointer} user is left alone; run 'credflip rollback --env {env}' "
        f"to finish the rollback"
    )


def watching(old: str, parts: Sequence[str]) -> str:
    return f"drain: watching {old!r} on {'; '.join(parts)}"


def counter_gaps(gaps: Sequence[str], sample_interval: float, *, accepted: bool = True) -> str:
    missed = (
        f"a client that connects and leaves within one sample "
        f"({format_duration(sample_interval)}) may be missed"
    )
    if accepted:
        return (
            f"draining on open sessions alone, a risk accepted with --sessions-only: "
            f"{'; '.join(gaps)}; {missed}"
        )
    return (
        f"no login counter: {'; '.join(gaps)}; the drain does not finish while an instance "
        f"it reads counts no logins (there {missed}): enable a counter, or accept the risk "
        f"with --sessions-only"
    )


def drain_deadline_stop() -> str:
    return "stopping in the drain to respect the deadline; run again to resume"


def drain_timeout(
    old: str,
    env: str,
    status: DrainStatus,
    readings: Sequence[Reading],
    waited: float,
    legacy: LegacyReport | None = None,
) -> DrainTimeout:
    # The clients that do not follow the pointer, by name: what the operator must fix.
    named = f"; legacy clients: {legacy.names()}" if legacy else ""
    # The last use this run saw past the timeout (maybe between the last run and
    # this one), then whatever else this sample saw.
    reasons = (*status.used_late, *(r for r in status.reasons if r not in status.used_late))
    if reasons:
        message = (
            f"drain timed out ({waited:.0f}s in this run, {status.waited:.0f}s since the "
            f"switch): user {old!r} is still in use; the old user keeps its login; find those "
            f"clients ('credflip status --env {env}' names them), then run 'credflip rotate "
            f"--env {env}' to continue the drain ({'; '.join(reasons)}){named}"
        )
    elif status.stuck:
        message = (
            f"drain timed out ({status.waited:.0f}s since the switch): user {old!r} shows no "
            f"use for two quiet windows ({format_duration(2 * status.needed_quiet)}), but the "
            f"window started over in this run and cannot carry over to the next "
            f"({'; '.join(status.stuck)}); the old user keeps its login; fix that, then run "
            f"'credflip rotate --env {env}' to continue the drain{named}"
        )
    else:
        message = (
            f"drain timed out after {waited:.0f}s: user {old!r} shows no use, but the quiet "
            f"window or --min-drain needs {format_duration(status.done_in)} more{named}; run "
            f"'credflip rotate --env {env}' again later to continue the drain"
        )
    down = [r.instance for r in readings if r.error is not None]
    if down:
        message += (
            f"; an instance that cannot be reached counts as in use: start "
            f"{', '.join(down)}, or if it was removed for good, run 'credflip rotate --env "
            f"{env} --forget-instance {down[0]}'"
        )
    return DrainTimeout(message)


def unwatched_at_retire(
    old: str, blocking: Sequence[str], env: str, *, predrain: bool = False
) -> DrainBlocked:
    what = "preparing" if predrain else "retiring"
    return DrainBlocked(
        f"not {what} {old!r}: {_UNWATCHED}: {'; '.join(blocking)}; it keeps its login; "
        f"run 'credflip rotate --env {env}' again with the option named (the "
        f"drain resumes, watching what was added)"
    )


def used_at_retire(old: str, reasons: Sequence[str]) -> UsedAtRetire:
    return UsedAtRetire(
        f"not retiring {old!r}: one last reading right before the retire saw use or could "
        f"not rule it out ({'; '.join(reasons) or 'no answer'}); it keeps its login and the "
        f"drain goes on"
    )


def cannot_terminate(old: str, down: Sequence[str]) -> RotationError:
    return RotationError(
        f"cannot end the sessions of {old!r}: {', '.join(down)} cannot be reached; the "
        f"old user is not retired; start it, or drop it with --forget-instance"
    )


def terminated(count: int, old: str) -> str:
    return (
        f"terminated {count} session(s) of {old!r}, idle for longer than the quiet window "
        f"(--terminate)"
    )


# -- rollback --------------------------------------------------------------


def nothing_to_roll_back(never_rotated: bool) -> RotationError:
    why = (
        "no rotation has run yet" if never_rotated else "the last rotation was already rolled back"
    )
    return RotationError(f"nothing to roll back: {why}")


def rollback_pointer_moved(pointer: Color, away: Color) -> RotationError:
    return RotationError(
        f"cannot roll back: the pointer names {pointer}, not {away}; it was changed "
        f"outside credflip"
    )


def rollback_user_dropped(user: str, back: Color) -> RotationError:
    return RotationError(
        f"cannot roll back: user {user!r} ({back}) was dropped when it was retired; "
        f"run 'credflip rotate' to move to a fresh password instead"
    )


def rollback_url_fails(
    back: Color, role: str, url: DbUrl, exc: CredflipError, away: Color
) -> RotationError:
    return RotationError(
        f"cannot roll back: the {back} {role} URL ({url}) does not connect: "
        f"{exc}; the pointer still names {away}"
    )


def unlocked(user: str, color: Color) -> str:
    return f"unlocked {user!r} ({color})"


def dry_run_under_way(rotation_id: str, phase: Phase, env: str) -> RotationError:
    return RotationError(
        f"rotation {rotation_id} is under way (phase {phase}): --dry-run "
        f"plans a new rotation only; run 'credflip rotate --env {env}' to resume it or "
        f"'credflip rollback --env {env}'"
    )
