"""What a drain learned, kept in the rotation's state between runs."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .policy import DrainPolicy

#: The digest kept for an instance watched on open sessions alone (no counter).
UNCOUNTED = "-"


def digest(value: Hashable) -> str:
    """A short, stable fingerprint of a counter's value (kept in the state)."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:12]


@dataclass
class Evidence:
    """What a drain learned, kept in the state between runs (all times wall-clock).

    ``counters`` maps an instance of the fleet to the digest of all its
    counters at the last sample (:data:`UNCOUNTED` for one watched on open
    sessions alone), ``started`` to its server's start time then.
    """

    user: str = ""
    counters: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    quiet_since: float | None = None
    last_use: float | None = None
    longest_gap: float = 0.0
    pauses: int = 0
    pause_sum: float = 0.0
    #: The shortest of the pauses (0: none, or not known).
    pause_min: float = 0.0
    #: Since when nothing used the old user (the first sample after the last use).
    idle_since: float | None = None
    sampled_at: float | None = None
    #: The primary's write position when the watch began (PostgreSQL LSN):
    #: standbys count the old user's logins once they replayed it.
    position: str | None = None
    #: Behind a pooler (RDS Proxy): each instance's latest state change of an old user's
    #: session at the last sample (server clock, rounded up to the millisecond).
    activity: dict[str, float] = field(default_factory=dict)
    #: Behind a pooler: the digest of each instance's sessions of the old user (pid and
    #: latest state change) at the last sample; none for an instance that had none.
    pooled: dict[str, str] = field(default_factory=dict)
    #: Behind PgBouncer: the marks of its server connections of the old user at the last
    #: sample, by the pooler's reading (:mod:`.servers`); none for one that had none.
    servers: dict[str, str] = field(default_factory=dict)
    #: A use after the cache wait was seen: a client that does not follow the pointer.
    legacy: bool = False

    def needed_quiet(self, policy: DrainPolicy) -> float:
        """The quiet window *policy* asks for, given the pauses seen so far."""
        return policy.needed_quiet(
            self.longest_gap, self.pauses, self.pause_sum, self.pause_min, legacy=self.legacy
        )

    def earliest_done(self, policy: DrainPolicy, switched_at: float) -> float:
        """The earliest instant the drain can finish after *switched_at*, if nothing uses
        the old user, given the pauses seen so far."""
        pauses = (self.longest_gap, self.pauses, self.pause_sum, self.pause_min)
        return policy.earliest_done(switched_at, *pauses, legacy=self.legacy)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON: the record must fit 4 KB with 16 instances."""
        out: dict[str, Any] = {
            "user": self.user,
            "i": {k: self._instance(k, v) for k, v in self.counters.items()},
            # Rounded up: a longer pause only lengthens the window.
            "gap": math.ceil(self.longest_gap * 100 - 1e-6) / 100,
            "n": self.pauses,
            "sum": round(self.pause_sum, 2),
        }
        if self.pause_min:
            # Rounded down: a pause kept shorter only makes the pauses look less alike.
            out["lo"] = math.floor(self.pause_min * 100 + 1e-6) / 100
        for key, value in (
            ("q", self.quiet_since),
            ("u", self.last_use),
            ("at", self.sampled_at),
            ("idle", self.idle_since),
        ):
            if value is not None:
                out[key] = round(value, 2)
        if self.position is not None:
            out["p"] = self.position
        if self.servers:
            out["b"] = dict(self.servers)
        if self.legacy:
            out["l"] = 1
        return out

    def _instance(self, where: str, digest: str) -> list[Any]:
        """``[digest, start time]``, and the pooled sessions' latest change and digest
        when kept."""
        out: list[Any] = [digest, round(self.started.get(where, 0.0))]
        if where in self.activity:
            out.append(math.ceil(self.activity[where] * 1000) / 1000)
            if where in self.pooled:
                out.append(self.pooled[where])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """The inverse of :meth:`to_dict`; an empty or damaged record is no evidence."""
        try:
            items = dict(data.get("i") or {})
            return cls(
                user=str(data.get("user") or ""),
                counters={str(k): str(v[0]) for k, v in items.items()},
                started={str(k): float(v[1]) for k, v in items.items() if v[1]},
                activity={str(k): float(v[2]) for k, v in items.items() if len(v) > 2},
                pooled={str(k): str(v[3]) for k, v in items.items() if len(v) > 3},
                servers={str(k): str(v) for k, v in dict(data.get("b") or {}).items()},
                quiet_since=None if data.get("q") is None else float(data["q"]),
                last_use=None if data.get("u") is None else float(data["u"]),
                longest_gap=float(data.get("gap") or 0.0),
                pauses=int(data.get("n") or 0),
                pause_sum=float(data.get("sum") or 0.0),
                pause_min=float(data.get("lo") or 0.0),
                idle_since=None if data.get("idle") is None else float(data["idle"]),
                sampled_at=None if data.get("at") is None else float(data["at"]),
                position=None if data.get("p") is None else str(data["p"]),
                legacy=bool(data.get("l")),
            )
        except (TypeError, ValueError, IndexError, AttributeError):
            return cls()
