"""A rotation: prepare, verify, switch, drain, retire, done.

Each phase boundary is written to ``/db/{env}/rotation`` before the next
phase starts, so a rotation that stops (crash, drain timeout, Lambda time
limit) resumes where it stopped. Throughout, the color the pointer names has
URLs that connect: the active user is never touched, and the pointer only
moves to URLs that were just proven to work.

The package, by job:

- :mod:`.start` — ``rotate``: lock, checks before any change, start or resume;
- :mod:`.runner` — the table ``Phase → handler``, the retry policy, the loop;
- :mod:`.phases` — one module per phase, each a ``plan(ctx)`` and a ``run(ctx)``;
- :mod:`.watch` and :mod:`.terminate` — the drain's sampling loop and ``--terminate``;
- :mod:`.proxy` — behind RDS Proxy: which proxy, and its checks before any change;
- :mod:`.journal` — the rotation record: boundaries, failures, history;
- :mod:`.milestones` — the moments others may subscribe to, told where they happen;
- :mod:`.context`, :mod:`.options`, :mod:`.events`, :mod:`.params`, :mod:`.plan`;
- :mod:`.messages` — every operator message;
- :mod:`.preview` — ``--dry-run``, walking the phases' plans;
- :mod:`.rollback`.

Nothing here prints: progress and milestones go to an ``on_event`` callback.
"""

from __future__ import annotations

from .events import (
    DrainProgress,
    Event,
    Milestone,
    Notice,
    PhaseFinished,
    PhaseStarted,
    RollbackResult,
    RotationResult,
)
from .fleet import env_fleet, env_pooler, instance_list
from .options import RetireMode, RotateOptions
from .params import new_password, read_pointer, read_urls
from .preview import PlannedParameter, PlannedPredrain, RotationPlan, plan_rotation
from .rollback import rollback
from .start import preflight, rotate

__all__ = [
    "DrainProgress",
    "Event",
    "Milestone",
    "Notice",
    "PhaseFinished",
    "PhaseStarted",
    "PlannedParameter",
    "PlannedPredrain",
    "RetireMode",
    "RollbackResult",
    "RotateOptions",
    "RotationPlan",
    "RotationResult",
    "env_fleet",
    "env_pooler",
    "instance_list",
    "new_password",
    "plan_rotation",
    "preflight",
    "read_pointer",
    "read_urls",
    "rollback",
    "rotate",
]
