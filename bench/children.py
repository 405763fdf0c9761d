"""Waiting on the benchmarks' child processes and threads without waiting for the dead.

Every wait here also watches the child itself: a child that dies makes the
wait fail at once with the child's error (its exception, or the end of its
stderr), instead of blocking on a pipe that nobody will write to again.

- :class:`Child`: a ``multiprocessing`` process and the pipe it answers on;
- :class:`Server`: a ``subprocess`` that prints one line (its port) and serves;
- :func:`join_all`: threads (:class:`credflip.demo.Worker`) joined so that the
  first one to die raises in the joiner at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from typing import Any

from credflip.demo import Worker

#: Lines of a dead server's stderr shown.
TAIL = 20
#: Seconds a child that closed its end is given to exit before it is ended.
EXIT_WAIT = 5.0


class ChildDied(RuntimeError):
    """A child process exited while its parent still needed it."""


@dataclass(frozen=True)
class Crashed:
    """What a :class:`Child` sends on its pipe when its target raised."""

    error: str


def _guarded(target: Callable[..., None], pipe: Connection, *args: Any) -> None:
    """Run ``target(*args, pipe)`` in the child; tell the parent why it failed."""
    try:
        target(*args, pipe)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(Crashed(f"{type(exc).__name__}: {exc}"))
        raise  # multiprocessing prints the traceback on the child's stderr


class Child:
    """A process answering on a pipe; :meth:`recv` fails as soon as it died."""

    def __init__(
        self, ctx: SpawnContext, target: Callable[..., None], *args: Any, what: str
    ) -> None:
        self.what = what
        self.pipe, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_guarded, args=(target, theirs, *args))
        self.proc.start()
        # Only the child holds its end now: when it dies, our end reads as closed.
        theirs.close()

    @property
    def pid(self) -> int:
        return self.proc.pid or 0

    def send(self, message: Any) -> None:
        try:
            self.pipe.send(message)
        except OSError:
            raise self._died(None) from None

    def recv(self, timeout: float) -> Any:
        """The child's next message; :class:`ChildDied` when it died first."""
        ready = wait([self.pipe, self.proc.sentinel], timeout)
        if not ready:
            raise ChildDied(f"{self.what} sent nothing for {timeout:g}s (it still runs)")
        if self.pipe not in ready:
            raise self._died(None)
        try:
            message = self.pipe.recv()
        except EOFError:
            raise self._died(None) from None
        if isinstance(message, Crashed):
            raise self._died(message.error)
        return message

    def check(self) -> None:
        """Between requests: raise :class:`ChildDied` if the child crashed or exited."""
        if self.pipe.poll() or not self.proc.is_alive():
            message = self.recv(0)
            raise ChildDied(f"{self.what} sent {message!r} unasked")

    def close(self, grace: float = 0.0) -> None:
        """Wait *grace* seconds for the child to exit, end it if it still runs (the
        parent failed), and release the pipe."""
        self.proc.join(grace)
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.pipe.close()

    def _died(self, error: str | None) -> ChildDied:
        self.proc.join(EXIT_WAIT)
        code = self.proc.exitcode
        how = (
            "its pipe closed, it still runs"
            if code is None
            else f"exit code {code}"
            if code >= 0
            else f"signal {-code}"
        )
        said = f": {error}" if error else ""
        return ChildDied(f"{self.what} died ({how}){said}; its traceback is above")


class Server:
    """``subprocess.Popen(args)`` that prints one line when it serves; stderr kept in a file.

    :meth:`first_line` and :meth:`check` raise :class:`ChildDied` with the end
    of its stderr as soon as it exited.
    """

    def __init__(self, args: Sequence[str], *, what: str, env: dict[str, str]) -> None:
        self.what = what
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._shown = False
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=self.log)

    def first_line(self, timeout: float) -> str:
        """The first line it prints, read as it comes; a dead server fails this at once."""
        assert self.proc.stdout is not None
        fd, line, deadline = self.proc.stdout.fileno(), b"", time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildDied(f"{self.what} printed nothing for {timeout:g}s (it still runs)")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 256)
                if not chunk:
                    raise self._died("before it served")
                line += chunk
        return line.decode().strip()

    def check(self) -> None:
        """Raise :class:`ChildDied` if the server exited."""
        if self.proc.poll() is not None:
            raise self._died("while serving")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def _died(self, when: str) -> ChildDied:
        try:
            how = f"exited {when} with code {self.proc.wait(EXIT_WAIT)}"
        except subprocess.TimeoutExpired:
            # It closed its output but runs on: no use to anyone, and stop() reaps it.
            self.proc.kill()
            how = f"closed its output {when} and was killed ({EXIT_WAIT:g}s without exiting)"
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines() or ["(silent)"]
        if not self._shown:  # what its stderr would have shown, once
            self._shown = True
            print(f"{self.what}, stderr:", *lines[-TAIL:], sep="\n  ", file=sys.stderr)
        return ChildDied(f"{self.what} {how}: {lines[-1]}")


def join_all(workers: Sequence[Worker], poll: float = 0.2) -> None:
    """Wait for every worker; the first one that died of an error raises here at once."""
    while True:
        for worker in workers:
            worker.check()
        alive = [w for w in workers if w.is_alive()]
        if not alive:
            return
        alive[0].join(poll)
