"""Rotation events on standard error: a live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import time

from rich.live import Live
from rich.text import Text

from ..drain import Verdict
from ..durations import format_duration
from ..rotation import DrainProgress, Event, Notice, PhaseFinished, PhaseStarted
from .render import err


class Progress:
    """Renders rotation events: a live line on a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        self.live: Live | None = None
        self.last_print = 0.0
        self.last_key: object = None

    def handle(self, event: Event) -> None:
        if isinstance(event, PhaseStarted):
            self.stop()
            what = " (resumed)" if event.resumed else ""
            err.print(f"[{event.phase}] {event.from_color} → {event.to_color}{what}")
        elif isinstance(event, PhaseFinished):
            self.stop()
            err.print(f"[{event.phase}] done in {format_duration(event.seconds)}")
        elif isinstance(event, Notice):
            self.stop()
            if event.level == "warning":
                err.print(f"credflip: warning: {event.message}")
            else:
                err.print(f"note: {event.message}")
        elif isinstance(event, DrainProgress):
            self.drain(event)

    def drain(self, event: DrainProgress) -> None:
        st = event.status
        if st.verdict is Verdict.CACHES:
            step = f"waiting for client caches {format_duration(st.caches_in)}"
        elif st.verdict is Verdict.IN_USE:
            shown = "; ".join(st.reasons[:2]) + (
                f"; {len(st.reasons) - 2} more" if len(st.reasons) > 2 else ""
            )
            step = f"in use: {shown}"
        else:
            step = f"quiet {format_duration(st.quiet)} of {format_duration(st.needed_quiet)}"
            if st.done_in > st.needed_quiet - st.quiet + 0.05:
                step += f", --min-drain: {format_duration(st.done_in)} left"
        text = (
            f"[drain] {event.user}: {step} — waited {format_duration(st.waited)}, "
            f"timeout in {format_duration(st.timeout_in)}"
        )
        if event.legacy:
            text += f" — {event.legacy.describe_first()}"
        if err.is_terminal:
            if self.live is None:
                self.live = Live(Text(text), console=err, refresh_per_second=8, transient=True)
                self.live.start()
            self.live.update(Text(text))
            return
        now = time.monotonic()
        key = (st.verdict, st.sessions, st.reasons[:1], event.legacy.count)
        if key != self.last_key or now - self.last_print >= 5:
            err.print(text)
            self.last_print, self.last_key = now, key

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
