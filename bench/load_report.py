"""What bench/rotation_under_load.py measured, per scenario, and how it is shown: the
table (requests, failures, latencies outside and during rotations, how long old-color
sessions lasted) and the plot (sessions per user over time, switches, failures)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from load_clients import POOLED, WORKERS, AsyncTraffic

from credflip.demo import Traffic
from credflip.rotation import Event, PhaseFinished


@dataclass
class Scenario:
    name: str
    traffic: dict[str, Traffic | AsyncTraffic] = field(default_factory=dict)
    switches: list[float] = field(default_factory=list)
    retires: list[float] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    rows: int = 0
    samples: list[tuple[float, dict[tuple[str, str], int]]] = field(default_factory=list)
    users: tuple[str, ...] = ()
    began: float = 0.0
    ended: float = 0.0
    note: str = ""
    #: Whatever else must stay alive (the Django site, the monitor): each raises if not.
    checks: list[Callable[[], None]] = field(default_factory=list)

    def check(self) -> None:
        """Raise when a client worker crashed or a process or thread it needs died."""
        for traffic in self.traffic.values():
            traffic.check()
        for check in self.checks:
            check()

    def on_event(self, event: Event) -> None:
        """Record when the pointer moved and when the old user was retired; and stop
        the rotation (within a drain sample) when something it measures died."""
        self.check()
        if isinstance(event, PhaseFinished) and event.phase.value == "switch":
            self.switches.append(time.monotonic())
        if isinstance(event, PhaseFinished) and event.phase.value == "retire":
            self.retires.append(time.monotonic())


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency(scenario: Scenario, kind: str, *, during: bool) -> tuple[float, float]:
    samples = []
    for began, took, ok in scenario.traffic[kind].samples:
        inside = any(a <= began <= b for a, b in scenario.windows)
        if ok and inside == during:
            samples.append(took * 1000)
    return percentiles(samples)


def old_sessions_gone(scenario: Scenario, app: str) -> list[float]:
    """Seconds from each switch until the old user has no session of *app*."""
    gone = []
    for n, switched in enumerate(scenario.switches):
        old = scenario.users[n % len(scenario.users)] if len(scenario.users) > 1 else None
        if old is None:
            continue
        for at, counts in scenario.samples:
            if at >= switched and counts.get((old, app), 0) == 0:
                gone.append(at - switched)
                break
        else:
            gone.append(float("inf"))
    return gone


def report(scenarios: list[Scenario], ttl: float) -> list[str]:
    head = (
        f"{'scenario':<18} {'kind':<7} {'ok':>7} {'failed':>7} "
        f"{'p50 out':>8} {'p99 out':>8} {'p50 rot':>8} {'p99 rot':>8} {'old gone':>10}"
    )
    lines = [head, "-" * len(head)]
    for sc in scenarios:
        for n, (kind, traffic) in enumerate(sc.traffic.items()):
            out50, out99 = latency(sc, kind, during=False)
            in50, in99 = latency(sc, kind, during=True)
            gone = old_sessions_gone(sc, kind) if kind in POOLED else []
            gone_text = (
                "-"
                if not gone
                else "never"
                if max(gone) == float("inf")
                else f"max {max(gone):.1f}s"
            )
            lines.append(
                f"{sc.name if n == 0 else '':<18} {kind:<7} {traffic.ok:>7} {traffic.failed:>7} "
                f"{out50:>7.1f}ms {out99:>7.1f}ms {in50:>7.1f}ms {in99:>7.1f}ms {gone_text:>10}"
            )
    lines.append("")
    for sc in scenarios:
        ok = sum(t.ok for t in sc.traffic.values())
        if sc.retires and sc.switches and sc.name.startswith("a"):
            valid = max(r - s for s, r in zip(sc.switches, sc.retires, strict=False))
            valid_text = f"at most {valid:.1f}s after each switch"
        elif sc.name.startswith("b"):
            valid_text = "0s (dies at the change)"
        else:
            valid_text = f"> {sc.ended - sc.switches[0]:.0f}s (to the end)" if sc.switches else "-"
        errors = {k: dict(t.errors) for k, t in sc.traffic.items() if t.errors}
        lines.append(
            f"{sc.name}: {len(sc.windows)} rotation(s); rows {sc.rows}, "
            f"lost {max(0, ok - sc.rows)}; old password valid {valid_text}"
            + (f"; errors {errors}" if errors else "")
            + (f"; {sc.note}" if sc.note else "")
        )
    lines.append(
        f"client TTL {ttl:g}s; {WORKERS} workers per kind; old gone: seconds from a switch "
        f"until that kind holds no session of the old user (acceptance: TTL + 2 s = {ttl + 2:g}s)"
    )
    return lines


def plot(scenarios: list[Scenario], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scenarios), 1, figsize=(12, 3.2 * len(scenarios)), sharex=False)
    for ax, sc in zip(axes, scenarios, strict=True):
        t0 = sc.began
        for user in sc.users:
            color = "tab:green" if user.endswith("_green") else "tab:blue"
            xs = [at - t0 for at, _ in sc.samples]
            ys = [sum(n for (u, _a), n in counts.items() if u == user) for _, counts in sc.samples]
            ax.plot(xs, ys, color=color, label=f"sessions of {user}")
        for switched in sc.switches:
            ax.axvline(switched - t0, color="grey", linestyle="--", linewidth=0.8)
        fails = [
            began - t0
            for traffic in sc.traffic.values()
            for began, _took, ok in traffic.samples
            if not ok
        ]
        if fails:
            ax.plot(
                fails, [0] * len(fails), "x", color="red", label=f"failed requests ({len(fails)})"
            )
        ax.set_title(sc.name + (f" — {sc.note}" if sc.note else ""), fontsize=10)
        ax.set_ylabel("sessions")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds (dashed: switch / password change)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
