"""SIGKILL at boundaries the rotator announces, on both engines and both stores.

The rotator runs in a child process (tests/announce_rotate.py) that names every
boundary it passes on a pipe (a phase started or finished, a planned statement
ran, a drain sample was taken) and waits there for the parent's word. The parent
picks a boundary and a delay of 0-50 ms at random (seeded: the seed is in every
failure's message, and ``CREDFLIP_FAULT_SEED`` replays it), lets the child go on,
and SIGKILLs it once the delay passed. After every kill the pointer's URLs connect,
the lock is either free or visibly stale, and the next ``rotate`` exits 0 (after a
rollback it may first refuse, changing nothing, while the clients following the pointer
still hold the rolled-back color: :func:`next_rotate`); an
independent checker and Lambda-like and pooled clients following the pointer run
the whole time and may see no error at all: no server is ever away here.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apps import engine_app, serial
from faults import Clients, Invariant
from helpers import assert_pointer_connects, login_error, stored_url

from credflip import commands
from credflip.layout import Layout
from credflip.state import load_state, read_lock
from credflip.stores.base import Store

CHILD = Path(__file__).parent / "announce_rotate.py"
KILLS = int(os.environ.get("CREDFLIP_FAULT_KILLS", "4"))
#: What each kill stops: ``rotate``, and every third time ``rollback``.
KILLED = ["rollback" if n % 3 == 2 else "rotate" for n in range(KILLS)]
#: The same waits as the child's (announce_rotate.OPTIONS), and a drain timeout that a
#: quiet old user never reaches: exit 4 would be a failure here.
ROTATE = ["--yes", "--client-ttl", "500ms", "--quiet", "300ms", "--drain-timeout", "20s"]


def announced(fd: int, within: float = 60.0) -> Iterator[str]:
    """The lines written on pipe *fd* until its writer closes it; fails the test when
    none comes for *within* seconds."""
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], within)
        assert ready, f"the child announced nothing for {within:g}s"
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line.decode() for line in lines)


def pick(rng: random.Random, n: int, boundaries: int) -> tuple[int, float]:
    """Where kill *n* lands: after which of its run's *boundaries* (from 1), and how long
    after. The kills of one command split its boundaries into equal slices, one random
    boundary in each, so that a few kills still reach every phase."""
    command = KILLED[n]
    nth, kills = KILLED[:n].count(command), KILLED.count(command)
    return 1 + int(boundaries * (nth + rng.random()) / kills), rng.uniform(0, 0.05)


@dataclass
class Run:
    """What one child run did."""

    #: The boundaries it announced, in order.
    said: list[str]
    #: Its exit code: -9 when the kill landed.
    code: int

    @property
    def killed(self) -> bool:
        return self.code == -9


@dataclass
class Rotator:
    """Starts tests/announce_rotate.py on one env, its stderr appended to *log*."""

    store: Store
    layout: Layout
    log: Path

    def run(self, command: str, kill_at: int = 0, delay: float = 0.0) -> Run:
        """Run *command* (``rotate`` or ``rollback``); with *kill_at*, SIGKILL it *delay*
        seconds after it passed its *kill_at*-th boundary (unless it ended first)."""
        say_r, say_w = os.pipe()
        go_r, go_w = os.pipe()
        argv = [self.store.url, self.layout.env, str(say_w), str(go_r), command]
        with self.log.open("a") as err:
            proc = subprocess.Popen(
                [sys.executable, str(CHILD), *argv],
                pass_fds=(say_w, go_r),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        os.close(say_w)
        os.close(go_r)
        said: list[str] = []
        try:
            for line in announced(say_r):
                said.append(line)
                os.write(go_w, b".")
                if len(said) == kill_at:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(delay)
                    break
        finally:
            proc.kill()  # nothing when it ended already
            os.close(say_r)
            os.close(go_w)
        return Run(said, proc.wait(30))

    def stderr(self) -> str:
        return self.log.read_text()[-1500:]


#: How a rotation right after a rollback refuses while the clients following the pointer
#: still hold the rolled-back color (nothing changed; they leave within a client TTL).
STILL_IN_USE = re.compile(
    r"^credflip: error: the inactive user .* clients still use it; ", re.MULTILINE
)


def next_rotate(cli: Any, rotate: list[str], *, after: str, within: float = 30.0) -> Any:
    """The ``rotate`` after a kill: it exits 0, or, after a rollback, refuses in that one
    way until the clients have moved (a condition polled, for at most *within* seconds)."""
    deadline = time.monotonic() + within
    while True:
        result = cli(*rotate)
        if result.code == 0 or after != "rollback" or not STILL_IN_USE.search(result.err):
            return result
        assert time.monotonic() < deadline, result.err[-1500:]


@contextlib.contextmanager
def naming(where: Callable[[], str]) -> Iterator[None]:
    """Put ``where()`` (the seed, the kill) in front of any assertion failing inside."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{where()}: {exc}") from exc


@pytest.mark.parametrize("engine", ["postgresql15", "mysql"])
def test_sigkill_at_an_announced_boundary_then_rotate_finishes(
    request: pytest.FixtureRequest,
    engine: str,
    store: Store,
    tmp_path: Path,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``rotate`` killed at random boundaries, and every third time ``rollback``; each
    kill followed by a ``rotate`` that finishes, the invariant checked all along."""
    seed = int(os.environ.get("CREDFLIP_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    where = f"seed {seed}"
    app = engine_app(request, engine)
    layout = Layout(f"kill{serial()}")
    commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
    monkeypatch.setenv("CREDFLIP_ADMIN_URL", app.admin_url.secret)
    rotator = Rotator(store, layout, tmp_path / "child.log")
    rotate = ["rotate", "--env", layout.env, "--store", store.url, *ROTATE]
    landed: list[str] = []
    with naming(lambda: where):
        with Invariant(store, layout) as invariant, Clients(store, layout) as clients:
            # One whole run of each: how many boundaries there are to pick from.
            runs = {command: rotator.run(command) for command in ("rotate", "rollback")}
            assert [r.code for r in runs.values()] == [0, 0], rotator.stderr()
            for n, command in enumerate(KILLED):
                at, delay = pick(rng, n, len(runs[command].said))
                run = rotator.run(command, kill_at=at, delay=delay)
                said = f"#{at}, " + (run.said[at - 1] if len(run.said) >= at else "its end")
                where = f"seed {seed}, kill {n}: {command} {delay * 1000:.0f} ms after {said}"
                assert run.killed or run.code == 0, (run.code, rotator.stderr())
                if run.killed:
                    landed.append(said)
                assert_pointer_connects(store, layout)
                lock = read_lock(store, layout)
                assert lock is None or lock.is_stale_here(), lock
                result = next_rotate(cli, rotate, after=command)
                assert result.code == 0, result.err[-1500:]
                assert_pointer_connects(store, layout)
            clients.serve_more(what="clients serving after the last kill")
        where = f"seed {seed}, after the kills at {landed}"
        invariant.assert_held()
        clients.assert_fine()
        assert invariant.away == 0 and not clients.away, (invariant.away, dict(clients.away))
        assert landed, "no kill landed: every run ended within its delay"
        assert load_state(store, layout).current is None
        assert read_lock(store, layout) is None
        color = assert_pointer_connects(store, layout)
        assert app.locked_marker in login_error(stored_url(store, layout, color.other))
