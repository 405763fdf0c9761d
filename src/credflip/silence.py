"""Give up on a database call whose server stays silent: shut its socket down.

libpq has no client-side timeout for a statement, and a stopped server keeps
its socket open (the kernel still acknowledges our packets). A timer shuts
the socket down, so the waiting call fails at once ("server closed the
connection") instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["libpq_socket", "silence_guard"]


def libpq_socket(conn: Any) -> int | None:
    """The socket of a psycopg connection; None when it is closed."""
    import psycopg

    try:
        return int(conn.pgconn.socket)
    except psycopg.Error:
        return None


@contextlib.contextmanager
def silence_guard(
    fd: int | None, timeout: float, then: Callable[[], None] | None = None
) -> Iterator[list[bool]]:
    """Shut the socket *fd* down if the block still runs after *timeout* seconds, then
    call *then* (in the timer's thread). Yields a list that holds True once it gave up.
    *fd* None (the connection is closed already): nothing to guard, the call fails by
    itself."""
    late: list[bool] = []
    if fd is None:
        yield late
        return

    def give_up() -> None:
        late.append(True)
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        if then is not None:
            then()

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield late
    finally:
        timer.cancel()
