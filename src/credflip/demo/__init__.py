"""``credflip demo`` and what it runs on: live traffic and a throw-away PostgreSQL.

Nothing in the library imports this package (the CLI's ``demo`` command does,
when it runs); the tests and benchmarks use its :class:`Traffic` and
:class:`~credflip.demo.cluster.EmbeddedPostgres`.
"""

from __future__ import annotations

from .run import DemoSummary, run_demo
from .traffic import CRASHES, Traffic, Worker, WorkerCrashed, resolve_and_insert

__all__ = [
    "CRASHES",
    "DemoSummary",
    "Traffic",
    "Worker",
    "WorkerCrashed",
    "resolve_and_insert",
    "run_demo",
]
