"""Run ``rotate`` or ``rollback`` in this process and announce every boundary it passes
on a pipe, for a parent that SIGKILLs it at one of them (tests/test_kill_matrix.py).

Usage: python tests/announce_rotate.py STORE ENV SAY_FD GO_FD rotate|rollback
The admin URL comes from CREDFLIP_ADMIN_URL. At each boundary (a phase started or
finished, a planned statement ran, the store took a write, a drain sample was taken)
the process writes one line naming it to SAY_FD, then waits for one byte on GO_FD
before it goes on: the parent decides when the run continues, so a kill lands a
chosen time after the boundary. The lines never carry SQL (a statement may hold a
password). Exits 0 when the run finished, 4 when its drain paused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from crash_rotate import after_each_statement

from credflip.layout import Layout
from credflip.rotation import (
    DrainProgress,
    Event,
    PhaseFinished,
    PhaseStarted,
    RotateOptions,
    rollback,
    rotate,
)
from credflip.stores import open_store
from credflip.stores.base import Store
from credflip.urls import DbUrl


def after_each_write(store: Store, callback: Callable[[], None]) -> None:
    """Call *callback* right after each write *store* took (a conditional write built
    on others, as SSM's, calls it for those too)."""

    def announcing(method: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any, **kwargs: Any) -> Any:
            done = method(*args, **kwargs)
            callback()
            return done

        return write

    for name in ("put", "delete", "delete_if", "replace_if"):
        setattr(store, name, announcing(getattr(store, name)))


#: The rotation's waits; the parent's clients refresh their endpoints more often.
OPTIONS = RotateOptions(client_ttl=0.5, quiet=0.3, drain_timeout=20)


def main() -> None:
    spec, env, say_fd, go_fd, command = sys.argv[1:6]
    say, go = int(say_fd), int(go_fd)
    where = [command]  # the phase running now

    def announce(what: str) -> None:
        os.write(say, f"{what}\n".encode())
        if not os.read(go, 1):
            os._exit(75)  # the parent is gone

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseStarted):
            where.append(event.phase.value)
            announce(f"{event.phase.value} started")
        elif isinstance(event, PhaseFinished):
            announce(f"{event.phase.value} finished")
        elif isinstance(event, DrainProgress):
            announce("drain sample")

    admin_url = DbUrl.parse(os.environ["CREDFLIP_ADMIN_URL"])
    after_each_statement(admin_url, lambda: announce(f"statement in {where[-1]}"))
    store, layout = open_store(spec), Layout(env)
    after_each_write(store, lambda: announce(f"store write in {where[-1]}"))
    if command == "rollback":
        rollback(store, layout, admin_url=admin_url)
        sys.exit(0)
    result = rotate(store, layout, admin_url=admin_url, options=OPTIONS, on_event=on_event)
    sys.exit(0 if result.finished else 4)


if __name__ == "__main__":
    main()
