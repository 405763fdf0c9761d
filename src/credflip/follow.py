"""Notice, from a background thread, when an environment's active color changes.

Pools keep connections open between requests; an idle pool would hold sessions
of the old color forever and keep a rotation's drain waiting. A
:class:`ColorWatcher` polls the (cached) resolver a few times per TTL and calls
back when the color moved, so the integration can close its idle connections.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import CredflipError
from .layout import Color
from .resolver import Resolver

__all__ = ["ColorWatcher"]

log = logging.getLogger("credflip.follow")


class ColorWatcher:
    """Calls ``on_change(color)`` whenever the resolved color of *env* changes.

    ``on_poll()``, when given, runs after every other check. Either returns
    False to stop watching (its owner is gone). The thread is a daemon and
    stops on :meth:`stop`.
    """

    def __init__(
        self,
        resolver: Resolver,
        env: str,
        *,
        ttl: float | None,
        on_change: Callable[[Color], bool],
        on_poll: Callable[[], bool] | None = None,
        interval: float | None = None,
    ) -> None:
        self.resolver = resolver
        self.env = env
        self.ttl = ttl
        self.on_change = on_change
        self.on_poll = on_poll
        base = resolver.ttl if ttl is None else ttl
        # A quarter TTL (at most a second): changes are seen within the
        # cache's own lifetime plus this, well inside the drain's window.
        self.interval = interval if interval is not None else max(0.05, min(1.0, base / 4))
        self.color: Color | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, color: Color) -> None:
        """Start watching, *color* being the one in use now; a second call does nothing."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.color = color
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"credflip-watch-{self.env}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from the thread itself)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def poll(self) -> bool:
        """Check once; return False when watching should end."""
        try:
            color = self.resolver.resolve(self.env, ttl=self.ttl).color
        except CredflipError as exc:
            log.warning("credflip: cannot resolve env %r: %s", self.env, exc)
            return True
        if color is not self.color:
            self.color = color
            return self.on_change(color)
        return self.on_poll() if self.on_poll is not None else True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.poll():
                    return
            except Exception:
                # A failing callback (say a pool that cannot drain) must not
                # end the watching: the next change still has to be seen.
                log.exception("credflip: watching env %r failed; still watching", self.env)
