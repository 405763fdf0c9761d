"""What the scheduled rotator reports: CloudWatch metrics and one log line per phase.

Metrics use the embedded metric format through Powertools for AWS Lambda
(``pip install credflip[aws]``; the rotator zip includes it): printed JSON
lines that CloudWatch Logs turns into metrics, no API call and no extra
permission. Namespace ``credflip`` (or ``$CREDFLIP_METRICS_NAMESPACE``),
dimensions ``env`` and ``service``:

- ``RotationsDone``, ``RotationsFailed``, ``DrainTimeouts``, ``Halts``: one per
  invocation that ran a rotation, 0 or 1, so that alarms always have data;
  ``Halts`` is 1 on the invocation whose failure halted the env (once: later
  invocations answer ``halted`` and emit nothing, as an idle one);
- ``DrainSeconds``: switch to retire, when a rotation finished;
- ``SessionsLeft``: the old user's sessions when the drain timed out;
- ``LegacyClients``: the clients the rotation's drain saw using the old user
  after the cache wait (clients that do not follow the pointer), so far.

Each finished phase is one JSON line: ``{"event": "phase", "env", "rotation",
"phase", "seconds", ...}``; the legacy clients one line ``{"event":
"legacy_clients", "count", "clients": [...]}`` when the drain saw any.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from .legacy import LegacyReport
from .rotation import DrainProgress, Event, Notice, PhaseFinished, PhaseStarted

__all__ = ["RotationReport", "emit_metrics"]

NAMESPACE_ENV = "CREDFLIP_METRICS_NAMESPACE"


@dataclass
class RotationReport:
    """Follows a rotation's events: writes the phase lines, keeps what metrics need."""

    env: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    rotation: str | None = None
    sessions_left: int = 0
    #: The clients seen using the old user after the cache wait (at the last sample).
    legacy: LegacyReport = field(default_factory=LegacyReport)

    def __call__(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            self.rotation = event.rotation_id
        elif isinstance(event, DrainProgress):
            self.sessions_left = event.status.sessions
            self.legacy = event.legacy
        elif isinstance(event, PhaseFinished):
            self.line(
                {
                    "event": "phase",
                    "phase": event.phase.value,
                    "seconds": round(event.seconds, 3),
                }
            )
        elif isinstance(event, Notice) and event.level == "warning":
            self.line({"event": "warning", "message": event.message})

    def legacy_line(self) -> None:
        """One line naming the legacy clients, when the drain saw any."""
        if self.legacy:
            self.line(
                {
                    "event": "legacy_clients",
                    "count": self.legacy.count,
                    "clients": self.legacy.to_json(),
                }
            )

    def line(self, fields: dict[str, object]) -> None:
        record = {"time": round(time.time(), 3), "env": self.env, "rotation": self.rotation}
        print(json.dumps({**record, **fields}), file=self.out, flush=True)


def emit_metrics(
    env: str,
    *,
    done: bool = False,
    failed: bool = False,
    drain_timeout: bool = False,
    halted: bool = False,
    drain_seconds: float | None = None,
    sessions_left: int | None = None,
    legacy_clients: int | None = None,
) -> None:
    """Print one embedded-metric-format record for this invocation."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = Metrics(namespace=os.environ.get(NAMESPACE_ENV, "credflip"), service="rotator")
    metrics.add_dimension(name="env", value=env)
    metrics.add_metric(name="RotationsDone", unit=MetricUnit.Count, value=int(done))
    metrics.add_metric(name="RotationsFailed", unit=MetricUnit.Count, value=int(failed))
    metrics.add_metric(name="DrainTimeouts", unit=MetricUnit.Count, value=int(drain_timeout))
    metrics.add_metric(name="Halts", unit=MetricUnit.Count, value=int(halted))
    if drain_seconds is not None:
        metrics.add_metric(name="DrainSeconds", unit=MetricUnit.Seconds, value=drain_seconds)
    if sessions_left is not None:
        metrics.add_metric(name="SessionsLeft", unit=MetricUnit.Count, value=sessions_left)
    if legacy_clients is not None:
        metrics.add_metric(name="LegacyClients", unit=MetricUnit.Count, value=legacy_clients)
    metrics.flush_metrics()
