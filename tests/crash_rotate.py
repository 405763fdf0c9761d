"""Run a rotation in this process and kill it hard at a phase boundary, or after the first
N statements of prepare.

Usage: python tests/crash_rotate.py STORE ENV before|after PHASE [RETIRE]
       python tests/crash_rotate.py STORE ENV statements N
The admin URL comes from CREDFLIP_ADMIN_URL. Exits with 70 at the crash
point, through os._exit so that nothing is cleaned up (the lock stays).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from credflip.engines import engine_class
from credflip.layout import Layout
from credflip.rotation import Event, PhaseFinished, PhaseStarted, RotateOptions, rotate
from credflip.stores import open_store
from credflip.urls import DbUrl


def after_each_statement(admin_url: DbUrl, callback: Callable[[], None]) -> None:
    """Call *callback* in this process right after each statement of a plan ran (the one
    place engines run planned SQL). The statements that set a connection's timeouts
    change nothing: left out."""
    cls: Any = engine_class(admin_url.scheme)
    run = cls._execute

    def execute(self: Any, step: Any, *args: Any) -> None:
        run(self, step, *args)
        if step.sql not in [limit.sql for limit in self._limit_steps()]:
            callback()

    cls._execute = execute


def die_after_statements(admin_url: DbUrl, count: int, started: list[bool]) -> None:
    """Once prepare started, exit right after its *count*-th statement ran."""
    done: list[object] = []

    def counted() -> None:
        if started:
            done.append(True)
            if len(done) == count:
                os._exit(70)

    after_each_statement(admin_url, counted)


def main() -> None:
    spec, env, when, phase = sys.argv[1:5]
    retire = sys.argv[5] if len(sys.argv) > 5 else "lock"
    admin_url = DbUrl.parse(os.environ["CREDFLIP_ADMIN_URL"])
    prepare_started: list[bool] = []
    if when == "statements":
        die_after_statements(admin_url, int(phase), prepare_started)

    def hook(event: Event) -> None:
        if isinstance(event, PhaseStarted) and event.phase == "prepare":
            prepare_started.append(True)
        if when == "after" and isinstance(event, PhaseFinished) and event.phase == phase:
            os._exit(70)
        if when == "before" and isinstance(event, PhaseStarted) and event.phase == phase:
            os._exit(70)

    rotate(
        open_store(spec),
        Layout(env),
        admin_url=admin_url,
        options=RotateOptions(client_ttl=0.2, quiet=0.2, retire=retire),  # type: ignore[arg-type]
        on_event=hook,
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
