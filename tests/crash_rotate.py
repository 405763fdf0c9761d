"""Run a rotation in this process and kill it hard at a phase boundary.

Usage: python tests/crash_rotate.py STORE ENV before|after PHASE [RETIRE]
The admin URL comes from CREDFLIP_ADMIN_URL. Exits with 70 at the crash
point, through os._exit so that nothing is cleaned up (the lock stays).
"""

from __future__ import annotations

import os
import sys

from credflip.layout import Layout
from credflip.rotation import Event, PhaseFinished, PhaseStarted, RotateOptions, rotate
from credflip.stores import open_store
from credflip.urls import DbUrl


def main() -> None:
    spec, env, when, phase = sys.argv[1:5]
    retire = sys.argv[5] if len(sys.argv) > 5 else "lock"

    def hook(event: Event) -> None:
        if when == "after" and isinstance(event, PhaseFinished) and event.phase == phase:
            os._exit(70)
        if when == "before" and isinstance(event, PhaseStarted) and event.phase == phase:
            os._exit(70)

    rotate(
        open_store(spec),
        Layout(env),
        admin_url=DbUrl.parse(os.environ["CREDFLIP_ADMIN_URL"]),
        options=RotateOptions(client_ttl=0.2, quiet=0.2, retire=retire),  # type: ignore[arg-type]
        on_event=hook,
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
