"""What a caller may set on a rotation: waits, limits and how the old user is retired."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..engines.locks import DEFAULT_LOCK_TIMEOUT, LockWait
from ..errors import UsageError
from ..halt import validate_halt_after
from ..instances import parse_address
from ..poolers.rds_proxy.setting import validate_name
from ..windows import Windows

__all__ = ["RetireMode", "RotateOptions"]

RetireMode = Literal["lock", "drop"]


@dataclass(frozen=True, kw_only=True)
class RotateOptions:
    """How a rotation waits and retires."""

    #: The clients' cache TTL; the drain waits for it (plus jitter) after the switch.
    client_ttl: float = 60.0
    #: Seconds after the switch past which the drain reports a timeout (exit 4,
    #: ``drain_timeout``) while it keeps the old user; each run without a
    #: ``deadline`` also waits at most this long, or if longer the cache wait and
    #: two quiet windows (so that one run can finish a window). None: the
    #: shortest possible drain plus 15 minutes.
    drain_timeout: float | None = None
    #: The quiet window: no use on any instance for this long before the old
    #: user is retired. None: 40 x ``client_ttl``, at least 40 s (clients that do
    #: not follow the pointer have no TTL); an explicit value is used as given.
    quiet: float | None = None
    #: End the old user's idle sessions once the drain could otherwise finish.
    terminate: bool = False
    #: Lock the old user (reversible) or drop it.
    retire: RetireMode = "lock"
    #: Extra SQL that must succeed for the new URLs, besides ``SELECT 1``.
    probe: str | None = None
    #: Seconds between two samples of the old user's sessions.
    sample_interval: float = 0.2
    #: A ``time.monotonic()`` instant by which to stop safely (for Lambda).
    deadline: float | None = None
    #: Never retire the old user sooner than this after the switch.
    min_drain: float = 0.0
    #: How long verify waits for replicas to replay the new password.
    replica_lag_timeout: float = 30.0
    #: Accept draining on open sessions alone where an instance has no
    #: cumulative counter (a short login between two samples may be missed).
    #: Without it (and without the env's stored choice) such a rotation is
    #: refused before anything changes.
    sessions_only: bool = False
    #: Revoke an env's stored ``sessions_only``: refuse unless every instance counts.
    require_counters: bool = False
    #: Hosts of replicas the primary reports but nobody watches, accepted as such.
    unwatched_ok: tuple[str, ...] = ()
    #: Instances (``host[:port]``) to add to the env's list, and to drop from it.
    instances: tuple[str, ...] = ()
    forget_instances: tuple[str, ...] = ()
    #: How long the start (finding the fleet, the checks) and each phase keep trying
    #: while the database is unreachable, restarting or failing over (read-only),
    #: before the rotation stops (resumable).
    reconnect_timeout: float = 60.0
    #: Seconds one statement may wait for a lock another session holds; a statement
    #: that waited this long is tried again within ``reconnect_timeout``.
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    #: Put the env behind this RDS Proxy (kept for the env), or check that it is the env's.
    rds_proxy: str | None = None
    #: Where clients reach that proxy (``HOST[:PORT]``; default: its endpoint).
    rds_proxy_endpoint: str | None = None
    #: When a new rotation may start (:mod:`credflip.windows`); one under way continues
    #: outside it. None: any time, and the env's recorded window is left as it is.
    window: Windows | None = None
    #: Halt the env after this many failed rotations in a row (:mod:`credflip.halt`).
    #: 0: this run, should it fail, neither counts nor halts (a person at the command
    #: line sees the error); the scheduled rotator uses ``DEFAULT_HALT_AFTER``.
    halt_after: int = 0

    def __post_init__(self) -> None:
        for name in (
            "client_ttl",
            "drain_timeout",
            "quiet",
            "min_drain",
            "replica_lag_timeout",
            "reconnect_timeout",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative")
        for text in (*self.instances, *self.forget_instances):
            parse_address(text)
        for text in self.unwatched_ok:
            parse_address(text, what="--unwatched-ok")
        if self.rds_proxy is not None:
            validate_name(self.rds_proxy)
        if self.rds_proxy_endpoint is not None:
            if self.rds_proxy is None:
                raise UsageError("--rds-proxy-endpoint goes with --rds-proxy NAME")
            parse_address(self.rds_proxy_endpoint, what="--rds-proxy-endpoint")
        validate_halt_after(self.halt_after)
        if not self.lock_timeout > 0:
            raise UsageError("--lock-timeout must be positive, like 1s or 500ms")
        if self.retire not in ("lock", "drop"):
            raise UsageError(f"invalid --retire {self.retire!r}: use lock or drop")
        if not 0 < self.sample_interval <= 0.25:
            raise UsageError("the drain samples sessions at least 4 times a second")
        if self.sessions_only and self.require_counters:
            raise UsageError(
                "--sessions-only accepts draining without a login counter and "
                "--require-counters refuses it: pass one of them"
            )

    def lock_wait(self, current: LockWait) -> LockWait:
        """How an engine's statements wait for locks in this run: *current* with
        ``lock_timeout`` per wait, retried within the phase's budget
        (``reconnect_timeout``) and the deadline."""
        return dataclasses.replace(
            current,
            timeout=self.lock_timeout,
            budget=self.reconnect_timeout,
            deadline=self.deadline,
        )

    def accepts_sessions_only(self, stored: bool) -> bool:
        """Whether this run may drain on open sessions alone where an instance counts no logins.

        *stored* is the env's choice (``init --sessions-only``);
        ``require_counters`` overrides it.
        """
        return self.sessions_only or (stored and not self.require_counters)
