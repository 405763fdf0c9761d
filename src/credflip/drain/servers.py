"""Behind PgBouncer: its server connections of the old user, from one run to the next.

PgBouncer keeps the old user's server connections after its clients left; a
request on one is use, and the counters see it as the newest request on them
(PgBouncer's, to the second; the server's, to the microsecond). Between two
runs that is all they compare: a connection that served a request and closed
before the next run (``server_lifetime``, ``server_idle_timeout``, a server
that ended it) took its request with it, and while another one with a newer
request stays open, the newest is the same. With a group role nothing else
counts that request for the old user.

So the evidence keeps, for PgBouncer, a *mark* of each of those connections at
the last sample: 8 characters of a digest of what identifies it (its database,
the server's address and port, the port it comes from, the backend's pid, when
it was opened) and of when it last served a request (PgBouncer stamps
``request_time`` whenever the server answers on it, and only then:
:data:`~credflip.poolers.view.SERVER_FIELDS`). A kept mark is found again at a
resumed run's first sample only if that connection is still open and served
nothing since (to the second: a request within the second of its last one
leaves it as it was; the server's counter, where read, times it to the
microsecond). A kept mark not found is a connection that closed or
served a request meanwhile: *unknown*, the window starts over (as for one that
closed between two samples, which PgBouncer's own comparison finds:
:meth:`~credflip.poolers.PgBouncer.observe`), but no use that ends a run past the
timeout: PgBouncer closes idle connections by itself. A connection opened since
is no unknown: opening it was a login, and its request is newer than any kept
one, which the counters see.

A state holds 4 KB: at most :data:`MAX_MARKS` marks are kept; with more
connections, one digest of all of them (``*`` first), and any change is unknown.
The connections the drain ended itself (``terminate``, as it finishes) are no
longer kept: the rotation clears them from the evidence.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Protocol

from .evidence import digest
from .values import Reading

#: Characters of each connection's mark.
MARK = 8
#: Marks kept at most for one pooler (256 characters); more connections are kept as
#: one digest of all of them.
MAX_MARKS = 32
_ALL = "*"


class _Out(Protocol):
    unknown: list[str]


class ServerConnections:
    """The marks of each pooler's server connections of the user at the last sample.

    *kept* is what an earlier run kept (:func:`marks`, by the pooler's reading):
    the first sample of this run that reads that pooler is compared with it.
    """

    def __init__(self, kept: Mapping[str, str]) -> None:
        self._restored = dict(kept)
        self._seen: dict[str, str] = {}

    def compare(self, reading: Reading, out: _Out) -> None:
        """Add to *out* what *reading* says is no quiet (:attr:`Reading.unknown`), and a
        server connection an earlier run kept that closed or served a request since."""
        out.unknown += reading.unknown
        if reading.servers is None:
            return
        where = reading.instance
        self._seen[where] = marks(reading.servers)
        restored = self._restored.pop(where, None)
        if restored is None:
            return
        lost = _lost(restored, reading.servers)
        if lost:
            which = "some server connections" if lost < 0 else f"{lost} server connection(s)"
            out.unknown.append(
                f"{which} of the old user on {where} closed or served a request since the last "
                f"run: what they ran cannot be told"
            )

    def kept(self) -> dict[str, str]:
        """Each pooler's marks at the last sample, for the evidence (one not read in this
        run keeps the earlier run's; none for a pooler without connections)."""
        return {k: v for k, v in {**self._restored, **self._seen}.items() if v}


def marks(servers: tuple[Hashable, ...]) -> str:
    """The marks of *servers* (sorted, :data:`MARK` characters each); with more than
    :data:`MAX_MARKS`, ``*`` and one digest of all of them; empty for none."""
    each = sorted({digest(s)[:MARK] for s in servers})
    if len(each) > MAX_MARKS:
        return _ALL + digest(tuple(each))[:MARK]
    return "".join(each)


def _lost(kept: str, servers: tuple[Hashable, ...]) -> int:
    """How many of the *kept* marks *servers* lack (-1: some, when all were kept as one)."""
    now = {digest(s)[:MARK] for s in servers}
    if kept.startswith(_ALL):
        return 0 if kept[1:] == digest(tuple(sorted(now)))[:MARK] else -1
    each = {kept[i : i + MARK] for i in range(0, len(kept), MARK)}
    return len(each - now)
