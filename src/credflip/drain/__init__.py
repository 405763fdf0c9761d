"""The drain as a pure tracker: readings and a clock in, a decision out.

After the switch, well-behaved clients move to the new color within one
cache TTL (plus jitter). The drain then waits until the old user shows **no
use** on every instance for the *quiet window*, before it may be retired.
*Use* in one sample is any of:

- an open session of the old user on some instance (with ``terminate``, a
  session idle for longer than the window is *held*, not used: it is ended
  when the drain finishes);
- a change of a cumulative per-user signal (a login or statement counter)
  since the previous sample of that instance: a client that connected and
  left between two samples still moved the counter. A counter that went
  *down* (a reset, an eviction) changed too, so it counts as use, never as
  quiet.

Behind a pooler that keeps the old user's connections open after its clients
left (RDS Proxy, *proxied*), an idle session is not use; a session that ran
anything since the last sample is (:mod:`.proxied`), and so are the counters,
which then must count statements; a session that closed meanwhile is unknown
(behind PgBouncer too, between two samples and between two runs: :mod:`.servers`).
The idle ones are ended when the drain finishes, as ``terminate`` ends held
sessions.

Some samples cannot be trusted either way (*unknown*): an instance that could
not be reached, a counter seen for the first time (nothing to compare it
with), a counter read before that counts nothing now (``userstat`` turned off
or lost in a restart, ``pg_stat_statements`` stopped by a reload: unknown for
as long as it stays so), a server that restarted since the previous sample, or
was read through a new admin connection (nobody is known to have logged in,
but its counters may have started over), a standby that has not yet
replayed the change that makes the old user's logins countable. Unknown
restarts the quiet window like use does, but past the timeout only an
instance that cannot be read ends a run: a restart is not use.

The quiet window (``quiet``, default :data:`QUIET_TTLS` client TTLs, at least
:data:`MIN_DEFAULT_QUIET`) is the one rule a user can check: *a client that
uses the old user at least once per window is never cut off*. On top of it
the drain lengthens the window from what it saw: to ``gap_factor`` times the
longest pause between two uses (a periodic job), and, unless the pauses are
too alike for a client arriving at random, to the pause such a client
exceeds only with a share of ``miss_odds`` (:mod:`.policy` has the
arithmetic). ``min_drain`` is a floor on the whole drain.

The evidence (each instance's last counter fingerprint and start time, when
the quiet began, the pauses seen) is :class:`Evidence`: the rotation keeps
it in its state, so that a later run (a second ``rotate``, the next scheduled
invocation) continues the same window instead of starting blind; a
cumulative counter compared across the time between two runs tells whether
anyone used the user meanwhile (past the timeout, a run that saw such a use
and cannot finish reports it). An instance drained on open sessions alone
(``sessions_only`` accepted) vouches for that time by its sessions, as it does
between two samples. A window that cannot carry over at all is reported past
the timeout once the drain was quiet for two windows (:mod:`.window`).

Nothing here touches a database, a store or the real clock: the rotation
feeds it samples with ``time.monotonic()`` and acts on the verdict, and the
unit tests feed it a fake clock.

The package: :mod:`.policy` (how long to wait), :mod:`.values` (readings in,
verdicts out), :mod:`.evidence` (what carries over between runs),
:mod:`.sample` (one sample against the last), :mod:`.proxied` (behind RDS Proxy),
:mod:`.servers` (PgBouncer's server connections across runs), :mod:`.window` (the
quiet window across runs) and :mod:`.tracker`.
"""

from __future__ import annotations

from .evidence import Evidence
from .policy import (
    MIN_DEFAULT_QUIET,
    QUIET_TTLS,
    RESTART_TOLERANCE,
    TIMEOUT_SLACK,
    DrainPolicy,
    random_client_factor,
)
from .tracker import DrainTracker
from .values import DrainStatus, Reading, Verdict

__all__ = [
    "MIN_DEFAULT_QUIET",
    "QUIET_TTLS",
    "RESTART_TOLERANCE",
    "TIMEOUT_SLACK",
    "DrainPolicy",
    "DrainStatus",
    "DrainTracker",
    "Evidence",
    "Reading",
    "Verdict",
    "random_client_factor",
]
