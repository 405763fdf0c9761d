"""The drain's inputs and outputs: what one instance showed, the verdict after a sample."""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from ..engines.base import Sessions


class Verdict(enum.StrEnum):
    """What the drain should do after a sample."""

    #: Clients may still hold the old pointer in their cache: keep waiting.
    CACHES = "caches"
    #: The old user was used (or could not be observed) since the last sample.
    IN_USE = "in_use"
    #: No use: the quiet window is running.
    QUIET = "quiet"
    #: Quiet long enough and past ``min_drain``: the old user may be retired.
    DONE = "done"
    #: Past the drain timeout and the old user is still in use (or this run's
    #: own time is up).
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Reading:
    """What one instance showed in one sample."""

    #: ``host:port`` of the instance.
    instance: str
    #: The old user's open sessions there; None when they could not be read.
    sessions: Sessions | None = None
    #: Fingerprints of the cumulative signals that are valid there now, by name.
    counters: Mapping[str, Hashable] = field(default_factory=dict)
    #: Why the counters cannot be trusted yet (a standby still replaying).
    pending: str | None = None
    #: Why the instance could not be read at all.
    error: str | None = None
    #: The old user's statements as counted there: ``(query text, calls)``.
    statements: tuple[tuple[str, int], ...] = ()
    #: Wall-clock time the server (re)started; None when unknown.
    started: float | None = None
    #: Read without any counter: what would enable one there (the exact statement or
    #: setting; empty when not known).
    enable: str = ""
    #: The counters of this instance that count nothing now: why, and how to turn
    #: each on again, by name (one that counted before in this drain is no quiet).
    silent: Mapping[str, str] = field(default_factory=dict)
    #: Which admin connection read it (numbered as they are opened; None: unknown):
    #: a new one may have reached a server that restarted since the last sample.
    connection: int | None = None
    #: What it shows that is no quiet without being use (a pooler's connection of the
    #: user that closed since the last sample: what it ran before cannot be told).
    unknown: tuple[str, ...] = ()
    #: Behind PgBouncer (its reading): each of the user's server connections there, as
    #: what identifies it and when it last served a request; None elsewhere. The drain
    #: keeps a digest of each for its next run (:mod:`.servers`).
    servers: tuple[Hashable, ...] | None = None


@dataclass(frozen=True)
class DrainStatus:
    """The tracker's view after one sample."""

    verdict: Verdict
    #: Seconds since the switch.
    waited: float
    #: Seconds until every client's cache expired (0 once it did).
    caches_in: float
    #: Seconds of the current quiet window so far.
    quiet: float
    #: Seconds of quiet the drain needs.
    needed_quiet: float
    #: Seconds until the drain could finish at the earliest (0 when it could now).
    done_in: float
    #: Seconds until the timeout (0 once past it).
    timeout_in: float
    #: Open sessions of the old user over all instances.
    sessions: int
    #: What counted as use or unknown in this sample, one phrase each.
    reasons: tuple[str, ...]
    #: The longest pause seen between two uses since the switch.
    longest_gap: float
    #: Sessions idle for longer than the window, ended at the finish (``terminate``).
    held: int = 0
    #: Past the timeout, the uses this run saw (the last sample that saw one), in its
    #: samples or between the last run and this one: a run that ends unfinished
    #: reports them (``drain_timeout``).
    used_late: tuple[str, ...] = ()
    #: Past the timeout, nothing used the old user for two windows, yet the window
    #: began in this run and is not over: what restarted it (empty otherwise). A run
    #: that ends there reports it rather than pause: the window cannot carry over.
    stuck: tuple[str, ...] = ()
