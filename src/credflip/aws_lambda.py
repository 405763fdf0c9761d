"""Rotation as a scheduled AWS Lambda (EventBridge).

Each invocation advances the rotation as far as the time it has left allows
(``context.get_remaining_time_in_millis()`` minus a safety margin), records
where it stopped, and returns a JSON summary; the next invocation resumes.
A drain longer than a Lambda's 15 minutes therefore works: schedule the
function every few minutes. A wait that the deadline cuts short (verify's
replicas, ``--terminate``'s) pauses the rotation the same way.

Event (all but ``env`` optional)::

    {"env": "prod", "prefix": "/db", "store": "ssm://",
     "client_ttl": "60s", "quiet": "40m", "drain_timeout": "2h", "terminate": false,
     "retire": "lock", "probe": null, "margin": "30s",
     "min_drain": "0s", "replica_lag_timeout": "30s",
     "sessions_only": false, "require_counters": false,
     "reconnect_timeout": "60s", "lock_timeout": "1s", "unwatched_ok": [],
     "rds_proxy": null, "rds_proxy_endpoint": null,
     "mode": "rotate", "min_interval": "30d",
     "window": "Mon-Fri 09:00-16:00 Asia/Seoul", "halt_after": 3, "events": "default"}

``lock_timeout`` bounds how long one statement waits for a lock an application
session holds (requests queue behind it meanwhile); it is retried within
``reconnect_timeout`` and the invocation's time.

Where an instance counts no logins the rotation is refused (the invocation
fails, nothing changes) unless ``sessions_only`` is true or the env stored
``init --sessions-only``; ``require_counters`` refuses despite the stored
choice and clears it.

``rds_proxy`` names the env's RDS Proxy (``rotate --rds-proxy``): an env not
yet behind it is put behind it (its two secrets written; nothing else changes
until the proxy lists them, the invocation failing with the command that
registers them); an env behind another proxy is refused. Empty: the env's own
(``init --rds-proxy``), if any.

``mode`` is ``"rotate"`` (start a rotation when none is under way, unless the
last one finished less than ``min_interval`` ago) or ``"resume"`` (only
continue an unfinished one). The quiet window defaults to 40 client TTLs (at
least 40 s) and the drain timeout to the shortest drain plus 15 minutes, counted from the
switch, across invocations. Past it, each invocation keeps draining until its
own end and answers ``drain_timeout`` (the alarm) while the old user is kept;
the drain's evidence is in the state, so the first invocation after the
legacy clients are gone finishes the rotation. The instances the drain
watches are the env's (``credflip rotate --instance`` keeps them in its
state) plus, on Aurora, every cluster member.
A replica they stream to that none of them is blocks the retire
(``drain_timeout``) unless ``unwatched_ok`` lists its host (every invocation:
it is not stored).
``window`` (:mod:`credflip.windows`; several separated by ``,``): a new rotation
starts only inside it; one under way continues outside it. Outside, the
invocation answers ``idle`` with the reason and ``next_window`` (UTC), like
``min_interval``. The window is recorded in ``/db/{env}/rotation-window`` for
``status``; an empty one (a template parameter left blank) deletes that.

After ``halt_after`` invocations in a row that failed (raised; a drain timeout
is none), the env is halted (:mod:`credflip.halt`): that invocation emits
``Halts`` = 1 (the alarm, once) and every later one answers ``halted``,
reading only the store, until ``credflip unhalt``.

``events`` (else ``$CREDFLIP_EVENTS``: the template's ``EventBusName``; empty: none) is
the EventBridge bus of the rotation's milestones (:mod:`credflip.events`).

The admin URL comes from ``CREDFLIP_ADMIN_URL`` or the SecureString parameter
``/db/{env}/admin-db-url``, never from the event; so does the env's PgBouncer
console, from ``/db/{env}/pooler-url`` (``init --pooler``, ``save-pooler-url``):
the function must reach it as it reaches the database.

The history says a ``schedule`` started (or finished) the rotation, as the
function's role (``sts:GetCallerIdentity``; the function's own ARN when STS
does not answer).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .actor import run_by
from .commands import admin_url_for
from .durations import iso_utc, parse_duration
from .engines import Engine, engine_for
from .errors import CredflipError, DrainTimeout, Halted, LockHeld, OutsideWindow, UsageError
from .events import ENV_VAR, parse_bus, sender_for
from .halt import DEFAULT_HALT_AFTER, Halt, halted_error, read_halt, validate_halt_after
from .layout import Layout
from .metrics import RotationReport, emit_metrics
from .rotation import Event, Notice, PhaseFinished, RotateOptions, RotationResult, rotate
from .rotation.schedule import read_gate, record_window, require_window
from .state import State
from .stores import open_store
from .stores.base import Store
from .urls import DbUrl
from .windows import Windows, parse_windows

__all__ = ["handler"]

log = logging.getLogger("credflip.aws_lambda")

#: Seconds kept in reserve at the end of an invocation to record state and
#: release the lock.
DEFAULT_MARGIN = 30.0


def _seconds(event: dict[str, Any], key: str, default: str) -> float:
    return parse_duration(str(event.get(key) or default), what=key)


def _maybe_seconds(event: dict[str, Any], key: str) -> float | None:
    value = event.get(key)
    return None if value in (None, "") else parse_duration(str(value), what=key)


def _hosts(event: dict[str, Any], key: str) -> tuple[str, ...]:
    """A list of hosts, or one string of them separated by commas (a template parameter)."""
    value = event.get(key) or ()
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple):
        raise UsageError(f'invalid {key} {value!r}: use a list of hosts, e.g. ["10.0.0.7"]')
    return tuple(str(v) for v in value)


def _text(event: dict[str, Any], key: str) -> str | None:
    """An optional string key; empty (a template parameter left blank) is None."""
    value = event.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise UsageError(f"invalid {key} {value!r}: use a string")
    return value


def _flag(event: dict[str, Any], key: str) -> bool:
    """A true/false event key; a string such as ``"false"`` is refused, not taken as true."""
    value = event.get(key, False)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise UsageError(f"invalid {key} {value!r}: use true or false")


def _log_event(event: Event) -> None:
    if isinstance(event, Notice):
        if event.level == "warning":
            log.warning("credflip: %s", event.message)
        else:
            log.info("credflip: %s", event.message)
    elif isinstance(event, PhaseFinished):
        log.info("credflip: %s done in %.1fs", event.phase, event.seconds)


def _sinks(*sinks: Callable[[Event], None] | None) -> Callable[[Event], None]:
    """One callback that hands each event to every sink given."""
    given = [sink for sink in sinks if sink is not None]

    def on_event(event: Event) -> None:
        for sink in given:
            sink(event)

    return on_event


def _report(env: str, report: RotationReport, **metrics: Any) -> None:
    """At the end of an invocation: name the clients that still used the old user
    after the cache wait, if any, and emit the metrics with their count."""
    if report.legacy:
        log.warning(
            "credflip: clients that do not follow the pointer still used the old user: %s",
            report.legacy.names(),
        )
        report.legacy_line()
    emit_metrics(env, legacy_clients=report.legacy.count, **metrics)


def _idle_reason(state: State, mode: str, event: dict[str, Any]) -> str | None:
    """Why this invocation has nothing to do (no rotation to resume, the last one too
    recent for ``min_interval``), or None."""
    if state.current is not None:
        return None
    if mode == "resume":
        return "no rotation under way"
    min_interval = event.get("min_interval")
    last = state.last
    if min_interval and last is not None:
        age = time.time() - last.finished_at
        if age < parse_duration(str(min_interval), what="min_interval"):
            return f"last rotation finished {age / 3600:.1f}h ago"
    return None


def _window(event: dict[str, Any]) -> Windows | None:
    """The event's ``window``: None when absent, no window when empty."""
    value = event.get("window")
    return None if value is None else parse_windows(value)


def _events(event: dict[str, Any]) -> str | None:
    """The bus of the milestones: the event's ``events``, else the function's environment."""
    spec = event["events"] if "events" in event else os.environ.get(ENV_VAR)
    if spec in (None, ""):
        return None
    if not isinstance(spec, str):
        raise UsageError(f'invalid events {spec!r}: use a bus name or ARN, e.g. "default"')
    return parse_bus(spec, what="events").name


def _halt_after(event: dict[str, Any]) -> int:
    """The event's ``halt_after``: a number, or its digits (a template parameter)."""
    value = event.get("halt_after", DEFAULT_HALT_AFTER)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return validate_halt_after(value, what="halt_after")


def _closed(layout: Layout, state: State, windows: Windows | None) -> dict[str, Any] | None:
    """The idle answer's fields when the window is closed and no rotation is under way."""
    now = time.time()
    try:
        require_window(layout, state, windows, now)
    except OutsideWindow as exc:
        assert windows is not None  # noqa: S101 - only a window is ever closed
        return {"reason": str(exc), "next_window": iso_utc(windows.next_opening(now))}
    return None


def _halted(layout: Layout, halt: Halt) -> dict[str, Any]:
    """The answer of an invocation on a halted env (it read the store, nothing else)."""
    reason = str(halted_error(layout, halt))
    log.warning("credflip: %s", reason)
    return {"status": "halted", **halt.to_dict(), "reason": reason}


def _gate(
    store: Store, layout: Layout, mode: str, event: dict[str, Any], windows: Windows | None
) -> dict[str, Any] | None:
    """The answer of an invocation with nothing to do (halted, idle), or None to rotate."""
    gate = read_gate(store, layout)
    record_window(store, layout, windows, gate.window)
    if gate.halt is not None:
        return _halted(layout, gate.halt)
    idle = _idle_reason(gate.state, mode, event)
    if idle is not None:
        return {"status": "idle", "reason": idle}
    closed = _closed(layout, gate.state, windows)
    return None if closed is None else {"status": "idle", **closed}


def _options(event: dict[str, Any], *, deadline: float) -> RotateOptions:
    """The rotation's options from the event's keys."""
    return RotateOptions(
        window=_window(event),
        halt_after=_halt_after(event),
        client_ttl=_seconds(event, "client_ttl", "60s"),
        drain_timeout=_maybe_seconds(event, "drain_timeout"),
        quiet=_maybe_seconds(event, "quiet"),
        terminate=_flag(event, "terminate"),
        retire=str(event.get("retire") or "lock"),  # type: ignore[arg-type]
        probe=event.get("probe"),
        deadline=deadline,
        min_drain=_seconds(event, "min_drain", "0s"),
        replica_lag_timeout=_seconds(event, "replica_lag_timeout", "30s"),
        reconnect_timeout=_seconds(event, "reconnect_timeout", "60s"),
        lock_timeout=_seconds(event, "lock_timeout", "1s"),
        sessions_only=_flag(event, "sessions_only"),
        require_counters=_flag(event, "require_counters"),
        unwatched_ok=_hosts(event, "unwatched_ok"),
        rds_proxy=_text(event, "rds_proxy"),
        rds_proxy_endpoint=_text(event, "rds_proxy_endpoint"),
    )


def _bounded_engine(admin_url: DbUrl, margin: float) -> Engine:
    """The admin's engine, with no connect or statement longer than a third of *margin*.

    No single connect or statement may eat the margin kept to record the state
    and release the lock: a frozen database must not hold the invocation past
    its end.
    """
    bound = max(1.0, margin / 3)
    engine = engine_for(admin_url)
    engine.connect_timeout = min(engine.connect_timeout, bound)
    engine.statement_timeout = min(engine.statement_timeout, bound)
    return engine


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Advance the env's rotation within the invocation's time; return a summary."""
    if not isinstance(event, dict) or not event.get("env"):
        raise UsageError('the event must name the environment: {"env": "prod"}')
    layout = Layout(
        str(event["env"]), str(event.get("prefix") or os.environ.get("CREDFLIP_PREFIX", "/db"))
    )
    spec = str(event.get("store") or os.environ.get("CREDFLIP_STORE") or "ssm://")
    mode = str(event.get("mode") or "rotate")
    if mode not in ("rotate", "resume"):
        raise UsageError(f"invalid mode {mode!r}: use rotate or resume")
    margin = _seconds(event, "margin", f"{DEFAULT_MARGIN:g}s")
    # The invocation's end on the monotonic clock, from when the time left was read: the
    # store's first answers below take time it no longer has.
    started = time.monotonic()
    remaining = context.get_remaining_time_in_millis() / 1000.0
    end = started + remaining
    # Every key is checked before the store is read: a bad one changes nothing.
    options = _options(event, deadline=0.0)
    bus = _events(event)
    summary: dict[str, Any] = {"env": layout.env, "store": spec.split("?", 1)[0]}
    with open_store(spec) as store:
        answer = _gate(store, layout, mode, event, options.window)
        if answer is not None:
            return {**summary, **answer}
        options = dataclasses.replace(options, deadline=end - margin)
        admin_url = admin_url_for(store, layout)
        engine = _bounded_engine(admin_url, margin)
        report = RotationReport(layout.env)
        # Sends end halfway through the margin: the rest records the state, frees the lock.
        sender = sender_for(bus, store=store, deadline=end - margin / 2, what="events")
        try:
            result = rotate(
                store,
                layout,
                admin_url=admin_url,
                options=options,
                engine=engine,
                on_event=_sinks(_log_event, report, sender),
                lock_expires_at=time.time() + remaining,
                actor=run_by(
                    store, "schedule", fallback_arn=getattr(context, "invoked_function_arn", None)
                ),
            )
        except (Halted, OutsideWindow) as exc:
            # Halted or a rotation finished since the check above: nothing to do.
            status = "halted" if isinstance(exc, Halted) else "idle"
            return {**summary, "status": status, "reason": str(exc)}
        except LockHeld as exc:
            # Also a lock taken over while this invocation ran (LockLost).
            return {**summary, "status": "locked", "reason": str(exc)}
        except DrainTimeout as exc:
            return _drain_timeout(summary, layout.env, report, exc)
        except CredflipError as exc:
            _failed(store, layout, report, exc)
            raise
        finally:
            engine.close()
    return _finished(summary, layout.env, report, result)


def _failed(store: Store, layout: Layout, report: RotationReport, exc: CredflipError) -> None:
    """After a failed run: its line, whether it halted the env (then a line and ``Halts``
    = 1: this is the one invocation that does), and the metrics."""
    report.line({"event": "failed", "error": str(exc)})
    try:
        halt = read_halt(store.get_many([layout.halted]), layout)
    except CredflipError:
        halt = None
    if halt is not None:
        report.line({"event": "halted", **halt.to_dict()})
    _report(layout.env, report, failed=True, halted=halt is not None)


def _drain_timeout(
    summary: dict[str, Any], env: str, report: RotationReport, exc: DrainTimeout
) -> dict[str, Any]:
    """After a drain that timed out: the metrics, the legacy clients and the summary."""
    _report(env, report, drain_timeout=True, sessions_left=report.sessions_left)
    return {
        **summary,
        "status": "drain_timeout",
        "reason": str(exc),
        "legacy_clients": report.legacy.count,
    }


def _finished(
    summary: dict[str, Any], env: str, report: RotationReport, result: RotationResult
) -> dict[str, Any]:
    """After a run that finished or paused: the metrics, the log line and the summary."""
    _report(env, report, done=result.finished, drain_seconds=result.drain_seconds)
    out = {
        **summary,
        "status": "done" if result.finished else "paused",
        "rotation": result.id,
        "from": result.from_color.value,
        "to": result.to_color.value,
        "resumed": result.resumed,
        "stopped_in": result.stopped_in.value if result.stopped_in else None,
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "drain_seconds": (None if result.drain_seconds is None else round(result.drain_seconds, 3)),
        "terminated": result.terminated,
        "legacy_clients": report.legacy.count,
    }
    log.info("credflip: %s", out)
    return out
