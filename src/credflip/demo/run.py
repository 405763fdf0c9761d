"""``credflip demo``: rotate a throw-away database under live traffic.

It starts a private PostgreSQL that enforces passwords, creates an app
database whose single user owns its tables, runs ``init``, then keeps worker
threads busy (each request: resolve, connect, insert, disconnect) while it
performs a few rotations with a short client TTL. It prints a table per
rotation and a line of totals, and deletes everything it made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..commands import init
from ..durations import format_duration
from ..layout import Color, Layout
from ..resolver import Resolver
from ..rotation import RotateOptions, RotationResult, rotate
from ..stores.sqlite import SqliteStore
from ..urls import DbUrl
from .targets import MysqlTarget, PostgresTarget, Target
from .traffic import Traffic, resolve_and_insert

__all__ = ["DemoSummary", "run_demo"]


@dataclass
class DemoSummary:
    """Totals of a demo run."""

    rotations: int
    ok: int
    failed: int
    lost: int
    seconds: float
    results: list[RotationResult] = field(default_factory=list)


def run_demo(
    *,
    engine: str = "postgresql",
    rotations: int = 3,
    workers: int = 4,
    client_ttl: float = 1.0,
    out: Console,
    err: Console,
) -> DemoSummary:
    """Run the demo and print its tables; return the totals."""
    begin = time.monotonic()
    target: Target = (
        PostgresTarget()
        if engine == "postgresql"
        else MysqlTarget(os.environ.get("CREDFLIP_DEMO_MYSQL_URL", "mysql://root@127.0.0.1:3306/"))
    )
    workdir = Path(tempfile.mkdtemp(prefix="credflip-demo-"))
    err.print(f"setting up {target.description} ...")
    try:
        with target:
            return _run(target, workdir, rotations, workers, client_ttl, out, err, begin)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(
    target: Target,
    workdir: Path,
    rotations: int,
    workers: int,
    client_ttl: float,
    out: Console,
    err: Console,
    begin: float,
) -> DemoSummary:
    admin_url, app_url = target.admin_url, target.app_url
    store = SqliteStore(workdir / "params.db")
    layout = Layout("demo")
    sessions_only = _init(store, layout, admin_url, app_url, err)
    resolver = Resolver(store=store, prefix=layout.prefix, ttl=client_ttl)
    traffic = Traffic(resolve_and_insert(resolver, layout.env), workers=workers)
    results: list[RotationResult] = []
    options = RotateOptions(
        client_ttl=client_ttl, quiet=client_ttl, drain_timeout=60.0, sessions_only=sessions_only
    )
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(traffic.stop)  # first; it raises a crash not reported yet
        traffic.start()
        err.print(f"{workers} workers sending requests (resolve, connect, insert) ...")
        for n in range(1, rotations + 1):
            ok0, failed0 = traffic.snapshot()
            # A crashed worker stops the rotation at its next event (the drain
            # reports 5 a second), not after it.
            result = rotate(
                store,
                layout,
                admin_url=admin_url,
                options=options,
                on_event=lambda _event: traffic.check(),
            )
            ok1, failed1 = traffic.snapshot()
            results.append(result)
            _print_rotation(out, n, result, ok1 - ok0, failed1 - failed0)
    rows = target.count_rows()
    summary = DemoSummary(
        rotations=rotations,
        ok=traffic.ok,
        failed=traffic.failed,
        lost=max(0, traffic.ok - rows),
        seconds=time.monotonic() - begin,
        results=results,
    )
    out.print(
        f"total: {summary.rotations} rotations in {format_duration(summary.seconds)}; "
        f"requests ok {summary.ok}, failed {summary.failed}; rows written {rows}, "
        f"lost {summary.lost}" + (f"; errors: {dict(traffic.errors)}" if traffic.errors else "")
    )
    return summary


def _init(
    store: SqliteStore, layout: Layout, admin_url: DbUrl, app_url: DbUrl, err: Console
) -> bool:
    """``credflip init`` of the demo's env; True when it must drain on open sessions alone."""
    result0 = init(store, layout, admin_url=admin_url, writer_url=app_url)
    err.print(
        f"env demo initialised in {store.url}; user {result0.users[Color.BLUE]} is blue, "
        f"{result0.users[Color.GREEN]} is green"
    )
    for line in result0.enabled:
        err.print(line)
    # The demo's own servers count logins; on a server that does not (binaries
    # without pg_stat_statements, a MySQL without userstat or performance_schema)
    # it accepts the risk, as an operator would with --sessions-only.
    sessions_only = bool(result0.counter_gaps)
    if sessions_only:
        err.print(
            "no login counter (" + "; ".join(result0.counter_gaps) + "): the demo drains on "
            "open sessions alone (--sessions-only)"
        )
    return sessions_only


def _print_rotation(out: Console, n: int, result: RotationResult, ok: int, failed: int) -> None:
    table = Table(
        title=f"rotation {n}: {result.from_color} ({result.from_user}) → {result.to_color} "
        f"({result.to_user})",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("phase")
    table.add_column("time", justify="right")
    for phase, seconds in result.timings.items():
        table.add_row(phase, format_duration(seconds))
    table.add_row("requests ok", str(ok))
    table.add_row("requests failed", str(failed))
    out.print(table)
