"""The clients that do not follow the pointer: who still uses the old user.

After the switch and the clients' cache wait, every use of the old user comes
from a client that does not re-read the pointer: a job that resolved its URL
once, a Lambda that read it at cold start, a hand-made connection string.
:class:`LegacyLog` turns the drain's samples into a short list of such
*legacy clients*, for the operator to find and fix:

- each group of open sessions (instance, client address, application or
  program, database) is one client, with when it was first and last seen,
  the most sessions it held at once and when the oldest of them started;
- a use seen only as a change of a cumulative counter (a client that
  connected and left between two samples) is one *anonymous* client per
  instance; but not in the sample right after a group left, when nothing
  else explains it: the counters are read before the sessions, so what that
  group did between the two reads (its last statement, MySQL's count of its
  quit) shows one sample late, and it is that group's (at a resumed drain's
  first sample, the clients its last sample listed count as the groups of
  the sample before);
- on PostgreSQL, the statements whose ``pg_stat_statements`` calls grew
  between two samples are credited to the clients that could have run them
  (the groups that were busy, new, or left in between; else those that left
  in the interval before; else the anonymous client), so each client carries
  its top statements by calls since it was first seen: the query text finds
  the code. When several could have, each is credited: the attribution
  narrows the search, it does not prove.

The log is pure: readings and a wall-clock time in, a list out. What the
rotation's state keeps of it is compact (:meth:`LegacyLog.to_list`): the
few most recently seen clients with short keys and truncated texts, and a
count of the others with short hashes, so that a resumed drain (the next
``rotate``, the next scheduled invocation) continues the same list and
counts a client it saw before only once.

The package: :mod:`.clients` (the value types), :mod:`.register` (the
clients listed by name and counted beyond, as the state keeps them) and
:mod:`.log` (:class:`LegacyLog`: samples in, clients credited).
"""

from __future__ import annotations

from .clients import CHARS, ID_CHARS, KEEP, MAX_IDS, TOP, LegacyClient, LegacyReport, shorten
from .log import LegacyLog
from .register import shrink

__all__ = [
    "CHARS",
    "ID_CHARS",
    "KEEP",
    "MAX_IDS",
    "TOP",
    "LegacyClient",
    "LegacyLog",
    "LegacyReport",
    "shorten",
    "shrink",
]
