"""Statements that may wait for an application's locks: how long, how often, and who holds them.

A statement that waits for a lock (``REASSIGN OWNED`` needs an exclusive lock on
every table it moves) puts every later request for that table in the queue
behind it: an application session idle in a transaction would hold the whole
application up for as long as credflip waits. So every statement of a plan runs
with a server-side lock timeout (``--lock-timeout``, default 1 s) and a
server-side statement timeout just under the client's guard. A statement that
hits the lock timeout was cancelled, and so rolled back, by the server; the
plan tries it again after a pause until the budget runs out, then stops with
one line naming the session that holds the lock, as a second admin connection
saw it while the statement waited (:class:`BlockerWatch`). The budget is a
phase's (:class:`LockBudget`): every plan a phase runs (prepare's predrain and
its own; init's several) draws on the same one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backoff import Backoff
from ..durations import format_duration
from ..errors import DeadlineReached, LockTimeout, UsageError
from .values import Step

__all__ = [
    "DEFAULT_LOCK_BUDGET",
    "DEFAULT_LOCK_TIMEOUT",
    "Blocker",
    "BlockerWatch",
    "LockBudget",
    "LockWait",
    "StatementWaited",
    "gave_up",
    "run_waiting",
    "server_timeout",
    "with_limits",
]

log = logging.getLogger("credflip.engines")

#: Seconds one statement may wait for one lock (``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 1.0
#: Seconds a phase keeps retrying statements that timed out (``--reconnect-timeout``).
DEFAULT_LOCK_BUDGET = 60.0


@dataclass(frozen=True)
class LockWait:
    """How the statements of a phase wait for locks that other sessions hold.

    The budget counts from the phase's first lock timeout (see :class:`LockBudget`);
    a delay never runs past *deadline* (a ``time.monotonic()`` instant: a Lambda's end).
    """

    timeout: float = DEFAULT_LOCK_TIMEOUT
    budget: float = DEFAULT_LOCK_BUDGET
    deadline: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise UsageError("--lock-timeout must be positive, like 1s or 500ms")
        if self.budget < 0:
            raise UsageError("the lock wait budget must not be negative")

    def backoff(self) -> Backoff:
        """The pauses between tries: at least as long as one wait, so the application
        runs at least half the time while credflip retries."""
        first = max(0.5, self.timeout)
        return Backoff(self.budget, first=first, cap=max(5.0, first), clock=self.clock)

    @property
    def watch_every(self) -> float:
        """How often, while a statement runs, :class:`BlockerWatch` asks who blocks it."""
        return max(0.05, self.timeout / 4)


def with_limits(
    steps: Sequence[Step], connection_of: Callable[[Step], str], limits: Callable[[], list[Step]]
) -> list[Step]:
    """*steps* with *limits* (the statements that set a session's lock and statement
    timeouts) before the first step on each connection (``connection_of(step)``)."""
    out: list[Step] = []
    seen: set[str] = set()
    for step in steps:
        where = connection_of(step)
        if where not in seen:
            seen.add(where)
            out += [
                dataclasses.replace(limit, database=step.database, cleanup=step.cleanup)
                for limit in limits()
            ]
        out.append(step)
    return out


class LockBudget:
    """What one phase may still spend retrying statements that hit the lock timeout.

    One budget (``wait.budget``) counted from the phase's first lock timeout and
    shared by every statement of every plan the phase runs, with pauses that grow
    from one lock timeout to the next whichever statement hit it; never a pause
    past ``wait.deadline``. The clock is ``wait.clock``: tested without sleeping.
    """

    def __init__(self, wait: LockWait) -> None:
        self.wait = wait
        self._backoff = wait.backoff()
        #: Lock timeouts in this phase so far, and when the first one came.
        self.timeouts = 0
        self._first: float | None = None

    def timed_out(self) -> float | None:
        """A statement hit the lock timeout: seconds to pause before it is tried again,
        or None when the budget (or the deadline) leaves no time for another try."""
        self.timeouts += 1
        if self._first is None:
            self._first = self.wait.clock()
        return self._backoff.next_delay(deadline=self.wait.deadline)

    def left(self) -> float:
        """Seconds of the budget not yet spent."""
        return self._backoff.left()

    def spent(self) -> float:
        """Seconds since the phase's first lock timeout (0 before it)."""
        return 0.0 if self._first is None else self.wait.clock() - self._first


def run_waiting(execute: Callable[[], None], step: Step, budget: LockBudget) -> None:
    """``execute()`` *step*; after a lock timeout (the server rolled the statement back)
    try again after *budget*'s pause while it lasts, then raise the one line that names
    the holder: :class:`~credflip.errors.LockTimeout`, or
    :class:`~credflip.errors.DeadlineReached` when the caller's deadline came first."""
    wait = budget.wait
    tries, started = 0, wait.clock()
    before, spent_before = budget.timeouts, budget.spent()
    while True:
        tries += 1
        try:
            execute()
            return
        except StatementWaited as exc:
            delay = budget.timed_out()
            if delay is None:
                # Budget left, so the deadline ended it: a resumable stop, not a failure.
                deadline = budget.left() > 0
                line = gave_up(
                    spent=wait.clock() - started,
                    tries=tries,
                    database=step.database,
                    blockers=exc.blockers,
                    deadline=deadline,
                    earlier=spent_before if before else None,
                )
                raise (DeadlineReached if deadline else LockTimeout)(line) from exc
            log.info(
                "credflip: a statement waited for a lock%s; trying again in %.1fs",
                f" held by {exc.blockers[0].describe()}" if exc.blockers else "",
                delay,
            )
            wait.sleep(delay)


def server_timeout(guard: float) -> float:
    """The server-side statement timeout for a client guard of *guard* seconds: just under
    it, so the server stops the statement before the client gives up on the connection."""
    return max(guard * 0.9, guard - 1.0)


@dataclass(frozen=True)
class Blocker:
    """A session that holds a lock a statement of credflip waits for."""

    #: ``pid 4242`` (PostgreSQL), ``thread 17`` (MySQL).
    session: str
    user: str
    #: The client's program (``application_name``, MySQL's ``program_name``): '' when
    #: the client named none, None when the server would not say.
    application: str | None
    #: ``idle in transaction``, ``Query: Waiting for table metadata lock``... ('' when
    #: the server does not say).
    state: str
    #: Seconds its transaction has been open (None: none, or not shown to the admin).
    open_for: float | None
    #: What ends it, e.g. ``SELECT pg_terminate_backend(4242)``.
    end: str
    #: The client's address (MySQL's ``HOST:PORT``; '' when not shown).
    client: str = ""

    def describe(self) -> str:
        """``pid 4242 of user 'app' (application 'report-job', idle in transaction,
        transaction open for 12.3s)``, on one line (MySQL's with ``from HOST:PORT``)."""
        if self.application is None:
            parts = ["application unknown"]
        else:
            parts = [f"application {_one_line(self.application) or '-'!r}"]
        if self.client:
            parts.append(f"from {_one_line(self.client)}")
        parts.append(_one_line(self.state) or "state -")
        if self.open_for is not None:
            parts.append(f"transaction open for {format_duration(self.open_for)}")
        return f"{self.session} of user {self.user!r} ({', '.join(parts)})"


class StatementWaited(LockTimeout):
    """One statement hit the lock timeout; *blockers* are the sessions seen holding the lock."""

    def __init__(self, message: str, blockers: list[Blocker]) -> None:
        super().__init__(message)
        self.blockers = blockers


def _one_line(text: str) -> str:
    return " ".join(text.split())[:64]


def gave_up(
    *,
    spent: float,
    tries: int,
    database: str,
    blockers: list[Blocker],
    deadline: bool = False,
    earlier: float | None = None,
) -> str:
    """The one line a plan stops with when its phase's lock budget (or with *deadline*,
    the caller's deadline) ran out; *earlier*: seconds of the budget that earlier
    statements of the phase had already run off it (None: none had waited)."""
    where = f" in database {database}" if database else ""
    if blockers:
        first = blockers[0]
        held = f"{first.describe()} holds it"
        if len(blockers) > 1:
            held += f" (and {len(blockers) - 1} more session(s) wait for or hold it)"
        todo = f"end that session's transaction or lock ({first.end}) or let it finish"
    else:
        held = "credflip could not see which session holds it"
        todo = "end the long transaction on that database or let it finish"
    why = "stopped at the deadline" if deadline else "gave up"
    counted = f"{tries} {'try' if tries == 1 else 'tries'}"
    if earlier is not None:
        counted += (
            f"; the phase's lock budget started {format_duration(earlier)} before, "
            f"at an earlier statement's lock timeout"
        )
    return (
        f"{why} after {format_duration(spent)} ({counted}) "
        f"on a statement{where} that waits for a lock: {held}; {todo}, then run the command "
        f"again; credflip changed nothing more"
    )


@dataclass
class _Watched:
    """The statement being watched: its session, and who was seen blocking it."""

    waiter: Any
    seen: list[Blocker] = field(default_factory=list)


class BlockerWatch:
    """Who holds the lock a statement waits for, sampled every *every* seconds from a second
    admin connection (``connect()``, opened only when a statement runs that long) while the
    statement runs: the waiting itself says nothing until it times out.

    One thread per watch (a plan) does the sampling, started with the first statement, so
    that a statement costs no thread of its own. It gives up for good at its first failure
    (naming the holder is best effort) and closes its connection when the watch closes.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        find: Callable[[Any, Any], list[Blocker]],
        every: float,
    ) -> None:
        self._connect = connect
        self._find = find
        self._every = every
        self._cond = threading.Condition()
        self._current: _Watched | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def during(self, waiter: Any) -> Iterator[list[Blocker]]:
        """While the block runs, sample who blocks session *waiter*; yields the last
        non-empty answer (a list that stays empty while nothing blocks it)."""
        watched = _Watched(waiter)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._sample, name="credflip-lock-watch", daemon=True
                )
                self._thread.start()
            self._current = watched
            self._cond.notify_all()
        try:
            yield watched.seen
        finally:
            with self._cond:
                self._current = None
                self._cond.notify_all()

    def _moved_on(self, watched: _Watched) -> bool:
        return self._current is not watched or self._closed

    def _busy_or_closed(self) -> bool:
        return self._current is not None or self._closed

    def _next(self) -> _Watched | None:
        """The statement to sample once it has run *every* seconds; None once closed."""
        with self._cond:
            while True:
                self._cond.wait_for(self._busy_or_closed)
                watched = self._current
                if self._closed or watched is None:
                    return None
                if not self._cond.wait_for(functools.partial(self._moved_on, watched), self._every):
                    return watched

    def _sample(self) -> None:
        conn: Any = None
        try:
            while (watched := self._next()) is not None:
                moved_on = functools.partial(self._moved_on, watched)
                while True:
                    if conn is None:
                        conn = self._connect()
                    found = self._find(conn, watched.waiter)
                    if found:
                        watched.seen[:] = found
                    with self._cond:
                        if self._cond.wait_for(moved_on, self._every):
                            break
        except Exception:  # naming the holder is best effort: stop trying
            log.debug("credflip: cannot name the holder of a lock", exc_info=True)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def close(self) -> None:
        """Stop sampling; the thread closes its connection (once a query under way ends)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
