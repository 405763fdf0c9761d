"""Halting an env after repeated failed rotations, and lifting the halt.

A rotate run with ``halt_after`` (the scheduled rotator's default is 3; the
command line's ``--halt-after`` is 0 unless given, since a person sees the
error) that ends in an error counts one failure in the env's state
(:attr:`State.failures <credflip.state.State.failures>`); any run that
takes the lock and ends otherwise (finished, paused at a deadline, or a drain
that timed out: the rotation got that far) resets the count. At ``halt_after``
failures in a row the run writes ``/db/{env}/halted``, JSON ``{"since", "reason",
"failures"}``: from then on nothing rotates the env (the scheduled rotator
answers ``halted`` without touching the database, ``rotate`` refuses) until
``credflip unhalt`` deletes it and resets the count. A lock held by another
run, a closed window and a halt are no failures: they never take the lock.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CredflipError, DrainTimeout, Halted, LockHeld, OutsideWindow, UsageError
from .layout import Layout
from .lock import FencedStore, hold_lock
from .state import load_state, save_state
from .stores.base import Store
from .urls import scrubbed_line

__all__ = [
    "DEFAULT_HALT_AFTER",
    "NOT_FAILURES",
    "FailureTally",
    "Halt",
    "Unhalted",
    "counting_failures",
    "halted_error",
    "in_a_row",
    "read_halt",
    "unhalt",
    "validate_halt_after",
]

#: Failed runs in a row after which an env halts (``--halt-after``; 0 never halts).
DEFAULT_HALT_AFTER = 3
#: Errors that are no failed rotation: the run never took the lock, or lost it.
NOT_FAILURES: tuple[type[BaseException], ...] = (LockHeld, Halted, OutsideWindow)
#: How much of the last failure's message the record keeps (as ``Rotation.error``).
_REASON_CHARS = 300


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def in_a_row(count: int) -> str:
    """``1 failed rotation in a row``, ``3 failed rotations in a row``."""
    return f"{count} failed rotation{'' if count == 1 else 's'} in a row"


@dataclass(frozen=True)
class Halt:
    """Why and since when an env is halted."""

    since: float
    reason: str
    failures: int

    def to_json(self) -> str:
        """The parameter's value."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"since": round(self.since, 3), "reason": self.reason, "failures": self.failures}

    @classmethod
    def from_json(cls, text: str) -> Halt:
        """Parse the parameter; a damaged value still halts (its reason says so)."""
        try:
            data = json.loads(text)
            return cls(float(data["since"]), str(data["reason"]), int(data["failures"]))
        except (ValueError, KeyError, TypeError):
            return cls(0.0, "damaged halt record", 0)

    def describe(self) -> str:
        """``since 2026-03-09 10:00:00Z after 3 failed rotations in a row (the last: ...)``."""
        return (
            f"since {_when(self.since)} after {in_a_row(self.failures)} (the last: {self.reason})"
        )


def read_halt(values: Mapping[str, str], layout: Layout) -> Halt | None:
    """The env's halt among *values* (parameters already read), or None when it is not halted."""
    text = values.get(layout.halted)
    return None if text is None else Halt.from_json(text)


def halted_error(layout: Layout, halt: Halt) -> Halted:
    """What a run on a halted env says."""
    return Halted(
        f"env {layout.env!r} is halted {halt.describe()}: fix the cause, then run "
        f"'credflip unhalt --env {layout.env}'"
    )


def validate_halt_after(value: int, *, what: str = "--halt-after") -> int:
    """*value* if it is a count of failures (0: never halt), else raise :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(
            f"invalid {what} {value!r}: use a number of failed rotations in a row, e.g. 3 "
            f"(0: never halt)"
        )
    return value


class FailureTally:
    """One rotate run's place in the env's count of failed rotations (see
    :func:`counting_failures`)."""

    def __init__(
        self,
        store: FencedStore,
        layout: Layout,
        halt_after: int,
        notice: Callable[[str], None],
        halted: Callable[[Halt], None] = lambda _halt: None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.halt_after = halt_after
        self.notice = notice
        #: Told of the halt this run wrote, once it is written.
        self.halted = halted
        #: Secrets of the run, scrubbed from the recorded reason (filled as the run goes).
        self.secrets: Sequence[str] = ()
        #: The count as the run read it under the lock (None: not read yet).
        self.failures: int | None = None

    def settle(self, exc: BaseException | None) -> None:
        """The run ended with *exc* (None: without an error): count it, or start over.
        Best effort: a store that fails here leaves the count as it was (the run's own
        error is what the caller sees)."""
        with contextlib.suppress(CredflipError):
            if exc is None or isinstance(exc, DrainTimeout):
                self._reset()
            elif isinstance(exc, Exception) and not isinstance(exc, NOT_FAILURES):
                self._count(exc)

    def _reset(self) -> None:
        if self.failures == 0:
            return  # nothing to start over: no need to read the state again
        state = load_state(self.store, self.layout)
        if state.failures:
            state.failures = 0
            save_state(self.store, self.layout, state)

    def _count(self, exc: Exception) -> None:
        if not self.halt_after:
            return  # this run does not count (a person at the command line)
        state = load_state(self.store, self.layout)
        state.failures += 1
        save_state(self.store, self.layout, state)
        env, count = self.layout.env, state.failures
        if count < self.halt_after:
            return  # the run's error is its one line; status shows the count
        reason = scrubbed_line(str(exc), list(self.secrets), _REASON_CHARS)
        halt = Halt(time.time(), reason or type(exc).__name__, count)
        self.store.put(self.layout.halted, halt.to_json(), secure=False)
        self.halted(halt)
        self.notice(
            f"env {env} is now halted after {in_a_row(count)}: no run "
            f"rotates it (the scheduled rotator answers 'halted') until 'credflip unhalt "
            f"--env {env}'"
        )


@contextlib.contextmanager
def counting_failures(
    store: FencedStore,
    layout: Layout,
    halt_after: int,
    notice: Callable[[str], None],
    *,
    halted: Callable[[Halt], None] = lambda _halt: None,
) -> Iterator[FailureTally]:
    """Around one rotate run, inside the env's lock: count the run's error and halt the env
    at *halt_after* (telling *halted*), or start the count over when the run ends
    otherwise."""
    tally = FailureTally(store, layout, halt_after, notice, halted)
    try:
        yield tally
    except BaseException as exc:
        tally.settle(exc)
        raise
    tally.settle(None)


@dataclass(frozen=True)
class Unhalted:
    """What ``unhalt`` lifted: the halt (None: there was none) and the count it reset."""

    halt: Halt | None
    failures: int


def unhalt(store: Store, layout: Layout) -> Unhalted:
    """Lift the env's halt and reset its count of failed rotations, holding the lock (a
    run under way would otherwise overwrite the count)."""
    load_state(store, layout)  # a clear error for an env credflip does not manage
    with hold_lock(store, layout, purpose="unhalt") as mine:
        fenced = FencedStore(store, layout, mine)
        values = fenced.get_many([layout.state, layout.halted])
        state = load_state(fenced, layout, values)
        halt = read_halt(values, layout)
        failures = state.failures
        if failures:
            state.failures = 0
            save_state(fenced, layout, state)
        if halt is not None:
            fenced.delete(layout.halted)
    return Unhalted(halt, failures)
