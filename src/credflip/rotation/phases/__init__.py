"""The phases of a rotation, one module each, every one a ``plan`` and a ``run``.

``plan(ctx)`` says what the phase would do (statements, store writes,
logins) without changing anything; ``run(ctx)`` carries out exactly that and
returns True when the phase is complete, False to stop resumably (a deadline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..context import Context
from ..plan import PhasePlan

__all__ = ["PhaseHandler"]


@dataclass(frozen=True)
class PhaseHandler:
    """One phase: how it plans and how it runs."""

    plan: Callable[[Context], PhasePlan]
    run: Callable[[Context], bool]
