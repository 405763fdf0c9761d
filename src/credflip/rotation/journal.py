"""The rotation record in the store: phase boundaries, failures, history, rollbacks.

Every phase boundary is written to ``/db/{env}/rotation`` before the next
phase starts, so a rotation that stops (crash, drain timeout, Lambda time
limit) resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import secrets
import time

from ..actor import Actor
from ..errors import CredflipError, DrainBlocked, DrainTimeout
from ..layout import Color, Layout
from ..state import HistoryEntry, Phase, Rotation, State, save_state
from ..stores.base import Store
from ..urls import scrubbed_line

__all__ = ["Journal", "record_rollback"]

#: The longest failure reason kept in the rotation record.
ERROR_CHARS = 300


class Journal:
    """Writes one env's rotation record at the moments that matter."""

    def __init__(
        self, store: Store, layout: Layout, state: State, actor: Actor | None = None
    ) -> None:
        self.store = store
        self.layout = layout
        self.state = state
        #: Who runs this call (recorded as who finished, when not who started).
        self.actor = actor

    @property
    def rot(self) -> Rotation:
        assert self.state.current is not None  # noqa: S101 - a rotation is under way
        return self.state.current

    def save(self) -> None:
        """Write the record as it is now."""
        save_state(self.store, self.layout, self.state)

    def spent(self, phase: Phase, seconds: float) -> None:
        """Add *seconds* to *phase*'s time (a resumed phase adds up)."""
        timings = self.rot.timings
        timings[phase.value] = timings.get(phase.value, 0.0) + seconds

    def advance(self, phase: Phase) -> None:
        """*phase* is complete: record the next one as where to resume."""
        self.rot.phase = phase.next
        self.rot.error = self.rot.error_kind = None
        self.save()

    def back_to(self, phase: Phase) -> None:
        """Resume from the earlier *phase* (a retire that saw use goes back to the drain)."""
        self.rot.phase = phase
        self.rot.error = self.rot.error_kind = None
        self.save()

    def failed(
        self, phase: Phase, exc: CredflipError, *, hide: list[str], redo_prepare: bool
    ) -> None:
        """Record why *phase* failed, and where to resume."""
        # The state stays under SSM's 4 KB.
        self.rot.error = scrubbed_line(str(exc), hide, ERROR_CHARS)
        self.rot.error_kind = "drain_timeout" if isinstance(exc, DrainTimeout) else "failed"
        if phase is Phase.VERIFY and redo_prepare:
            # The new password itself did not work: nothing was switched,
            # so prepare again on the next run. A replica that lags or is
            # down keeps the rotation in verify, so that resuming waits for
            # the same password instead of setting a new one that must
            # replicate all over again.
            self.rot.phase = Phase.PREPARE
        elif isinstance(exc, DrainBlocked) and phase in (Phase.DRAIN, Phase.RETIRE):
            # A replica nobody watches stopped the retire: the next run drains
            # again, watching what the operator added, before it retires. (In
            # prepare's predrain the pointer never moved: prepare resumes it.)
            self.rot.phase = Phase.DRAIN
        # Best effort: when the store itself failed, the phase recorded at the
        # last boundary is still a safe place to resume from.
        with contextlib.suppress(CredflipError):
            self.save()

    def finish(self) -> bool:
        """DONE: move the rotation into the history."""
        rot = self.rot
        self.state.history.append(
            HistoryEntry(
                id=rot.id,
                result="done",
                from_color=rot.from_color,
                to_color=rot.to_color,
                started_at=rot.started_at,
                finished_at=time.time(),
                timings=dict(rot.timings),
                drain_seconds=rot.drain_seconds,
                terminated=rot.terminated,
                by=rot.by,
                done_by=None if self.actor == rot.by else self.actor,
            )
        )
        self.state.current = None
        try:
            self.save()
        except CredflipError:
            # Still DONE in the store: the next run records it once, not twice.
            self.state.history.pop()
            raise
        finally:
            self.state.current = rot
        return True


def record_rollback(
    store: Store,
    layout: Layout,
    state: State,
    back: Color,
    away: Color,
    started_at: float,
    *,
    switched: bool = True,
    predrain_since: float | None = None,
    by: Actor | None = None,
) -> None:
    """Close the rotation (if any) as rolled back to *back*; *predrain_since* is from when
    *away* must be drained before its password changes (the primary's clock), if it must
    (:func:`~credflip.state.predrain_due`); *by* ran the rollback."""
    rid = state.current.id if state.current else "rollback-" + secrets.token_hex(2)
    state.history.append(
        HistoryEntry(
            id=rid,
            result="rolled_back",
            from_color=away,
            to_color=back,
            started_at=started_at,
            finished_at=time.time(),
            switched=switched,
            predrain_since=predrain_since,
            by=by,
        )
    )
    state.current = None
    save_state(store, layout, state)
