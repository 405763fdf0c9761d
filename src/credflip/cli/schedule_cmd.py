"""Scheduling: ``rotate --window`` and ``--halt-after``, ``credflip unhalt``, and what
``status`` and ``rotate --dry-run`` say about a halt and a window."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import commands
from ..durations import format_duration
from ..errors import OutsideWindow
from ..halt import DEFAULT_HALT_AFTER, halted_error, in_a_row, unhalt
from ..layout import Layout
from ..rotation.options import RotateOptions
from ..rotation.schedule import read_gate, require_window
from ..stores.base import Store
from ..windows import Windows, parse_windows
from .options import common
from .render import err, out

F = TypeVar("F", bound=Callable[..., Any])


def _window(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Windows | None:
    return None if value is None else parse_windows(value)


def window_options(func: F) -> F:
    """Add ``--window SPEC`` and ``--halt-after N``."""
    func = click.option(
        "--halt-after",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="N",
        help="Count this run towards halting the env: after N failed rotations in a row (a "
        "drain timeout is none) nothing rotates it until 'credflip unhalt'. A scheduled run "
        f"(cron) should pass it: the rotation Lambda's default is {DEFAULT_HALT_AFTER}. 0: "
        "this run neither counts nor halts.",
    )(func)
    return click.option(
        "--window",
        default=None,
        callback=_window,
        metavar="SPEC",
        help="Start a new rotation only inside this window, e.g. 'Mon-Fri 09:00-16:00 "
        "Asia/Seoul' (several separated by ','); outside it say so and exit 0. One under way "
        "continues. Recorded for status; '' removes the record.",
    )(func)


def dry_run_notes(store: Store, layout: Layout, options: RotateOptions) -> None:
    """What ``--dry-run`` adds to its plan: a halt, a closed window (it records nothing)."""
    gate = read_gate(store, layout)
    if gate.halt is not None:
        err.print(f"credflip: warning: {halted_error(layout, gate.halt)}; a real run refuses")
    try:
        require_window(layout, gate.state, options.window)
    except OutsideWindow as exc:
        err.print(f"note: {exc}; a real run would start nothing now")


def schedule_lines(report: commands.Status, now: float | None = None) -> list[str]:
    """``status``'s lines on a halt, failures in a row and the rotator's window."""
    env = report.env
    lines = []
    if report.halt is not None:
        lines.append(
            f"HALTED {report.halt.describe()}: the scheduled rotator does nothing and rotate "
            f"refuses until 'credflip unhalt --env {env}'"
        )
    elif report.failures:
        lines.append(
            f"failing: {in_a_row(report.failures)}; at the rotator's --halt-after (default "
            f"{DEFAULT_HALT_AFTER}) the env halts"
        )
    if report.window is not None:
        lines.append(f"rotation window: {report.window} ({window_state(report.window, now)})")
    return lines


def window_state(spec: str, now: float | None) -> str:
    """``open now``, ``closed; the next opens Mon 2026-03-09 09:00 KST, in 14h03m``, or that
    this credflip does not understand *spec*."""
    at = time.time() if now is None else now
    view = commands.window_dict(spec, at)
    opening = view["next_opening"]
    if view["open"] is None:
        return "not understood by this credflip"
    if view["open"]:
        return "open now"
    if opening is None:
        return "closed; no window opens within 8 days"
    when = parse_windows(spec).describe(opening)
    return f"closed; the next opens {when}, in {format_duration(opening - at)}"


@click.command(name="unhalt")
@common
def unhalt_cmd(*, store: Store, layout: Layout) -> None:
    """Lift the halt after repeated failed rotations: rotate and the schedule run again."""
    lifted = unhalt(store, layout)
    env = layout.env
    if lifted.halt is not None:
        out.print(
            f"env {env}: halt lifted (it was halted {lifted.halt.describe()}); the next "
            f"rotate or scheduled run rotates it again"
        )
    elif lifted.failures:
        out.print(f"env {env} was not halted; its count ({in_a_row(lifted.failures)}) starts over")
    else:
        out.print(f"env {env} is not halted")
