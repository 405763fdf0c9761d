"""Run ``rotate`` or ``init`` in this process and SIGKILL it between the admin's grants to
itself and their revoke.

Usage: python tests/crash_lease.py rotate STORE ENV N
       python tests/crash_lease.py init STORE ENV N
The admin URL comes from CREDFLIP_ADMIN_URL (and init's writer URL from
CREDFLIP_WRITER_URL). The process kills itself with SIGKILL right after the
N-th statement that lends the admin a right ran (N = 0: right before the first
one, its lease already recorded), so nothing is cleaned up; a rotation counts
only those of its retire.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from credflip import commands
from credflip.engines import engine_class
from credflip.layout import Layout
from credflip.rotation import Event, PhaseStarted, RotateOptions, rotate
from credflip.stores import open_store
from credflip.urls import DbUrl


def die_between_grant_and_revoke(admin_url: DbUrl, count: int, armed: list[bool]) -> None:
    """SIGKILL this process once *count* of the admin's grants to itself ran (counted once
    *armed* holds a value)."""
    cls: Any = engine_class(admin_url.scheme)
    run = cls._execute
    lent: list[object] = []

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def execute(self: Any, step: Any, *args: Any) -> None:
        lends = armed and step.lends is not None
        if lends and count == 0:
            kill()
        run(self, step, *args)
        if lends:
            lent.append(step)
            if len(lent) == count:
                kill()

    cls._execute = execute


def main() -> None:
    command, spec, env, count = sys.argv[1:5]
    admin_url = DbUrl.parse(os.environ["CREDFLIP_ADMIN_URL"])
    armed: list[bool] = [True] if command == "init" else []
    die_between_grant_and_revoke(admin_url, int(count), armed)
    store, layout = open_store(spec), Layout(env)

    def hook(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase == "retire":
            armed.append(True)

    if command == "init":
        writer = DbUrl.parse(os.environ["CREDFLIP_WRITER_URL"])
        commands.init(store, layout, admin_url=admin_url, writer_url=writer)
    else:
        options = RotateOptions(client_ttl=0.2, quiet=0.2)
        rotate(store, layout, admin_url=admin_url, options=options, on_event=hook)
    sys.exit(0)  # the admin lent itself nothing, or fewer rights than asked


if __name__ == "__main__":
    main()
