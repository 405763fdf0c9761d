"""Whether a rotate run may start: never on a halted env, and with a rotation window, a new
rotation only inside it (one under way continues outside: drain and retire are safe at any
time). Checked before the lock from one read of the store, so neither a halted env nor a
closed window ever reaches the database; the window again under the lock.

A run given a window records it in ``/db/{env}/rotation-window`` (when it changed; an
empty window deletes it), so that ``status`` can say when the env's rotator may start next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..durations import format_duration
from ..errors import OutsideWindow
from ..halt import Halt, halted_error, read_halt
from ..layout import Layout
from ..state import State, load_state
from ..stores.base import Store
from ..windows import Windows
from .options import RotateOptions

__all__ = ["Gate", "check_start", "outside_window", "read_gate", "record_window", "require_window"]


@dataclass(frozen=True)
class Gate:
    """What decides whether a run may start, read in one call: the env's state, its halt
    (None: not halted) and the window its rotator recorded (None: none)."""

    state: State
    halt: Halt | None
    window: str | None


def read_gate(store: Store, layout: Layout) -> Gate:
    """The env's :class:`Gate`; raise :class:`~credflip.errors.NotInitialized` without state."""
    values = store.get_many([layout.state, layout.halted, layout.window])
    state = load_state(store, layout, values)
    return Gate(state, read_halt(values, layout), values.get(layout.window))


def record_window(
    store: Store, layout: Layout, windows: Windows | None, recorded: str | None
) -> None:
    """Record *windows* as the env's rotation window when it differs from *recorded* (an
    empty one deletes the record; None leaves it)."""
    if windows is None:
        return
    text = str(windows)
    if text == (recorded or ""):
        return
    if text:
        store.put(layout.window, text, secure=False)
    else:
        store.delete(layout.window)


def outside_window(layout: Layout, windows: Windows, now: float) -> OutsideWindow:
    """What a run says when the window is closed and no rotation is under way."""
    opening = windows.next_opening(now)
    when = (
        "no window opens within 8 days"
        if opening is None
        else f"the next opens {windows.describe(opening)} (in {format_duration(opening - now)})"
    )
    return OutsideWindow(
        f"env {layout.env} is outside its rotation window ({windows}): no new rotation starts "
        f"now; {when}"
    )


def require_window(
    layout: Layout, state: State, windows: Windows | None, now: float | None = None
) -> None:
    """Raise :class:`OutsideWindow` when no rotation is under way and *windows* is closed."""
    if windows and state.current is None:
        at = time.time() if now is None else now
        if not windows.contains(at):
            raise outside_window(layout, windows, at)


def check_start(store: Store, layout: Layout, options: RotateOptions) -> State:
    """Before the lock: record the window, then refuse a halted env
    (:class:`~credflip.errors.Halted`) and a new rotation outside the window
    (:class:`OutsideWindow`); return the state read."""
    gate = read_gate(store, layout)
    record_window(store, layout, options.window, gate.window)
    if gate.halt is not None:
        raise halted_error(layout, gate.halt)
    require_window(layout, gate.state, options.window)
    return gate.state
