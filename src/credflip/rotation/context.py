"""What every phase works with: the store, the env's layout and state, the fleet, the options.

A :class:`Context` lives for one call of :func:`~credflip.rotation.rotate` (or
one dry run). A dry run stages the writes of each phase's plan instead of
making them, so that a later phase's plan reads what an earlier one would
have written (verify logs in with the URLs prepare would write).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..actor import Actor
from ..engines import Connector, UsageObserver, UserAdmin
from ..instances import Fleet
from ..layout import Color, Layout, Role
from ..state import Phase, Rotation, State
from ..stores.base import Store
from ..urls import DbUrl, scrub
from . import messages
from .events import Event, Notice, OnEvent, emit
from .lease import LeaseKeeper
from .options import RotateOptions
from .params import parse_urls, read_pointer
from .plan import Write

if TYPE_CHECKING:
    from ..poolers.rds_proxy import RdsProxy

__all__ = ["Context", "clock_skew"]


def clock_skew(observer: UsageObserver) -> float:
    """The primary's clock minus this machine's, in seconds (one round trip)."""
    before = time.time()
    server = observer.server_time()
    return server - (before + time.time()) / 2


@dataclass
class Context:
    """One rotation (or dry run) with the lock held (or no lock: a dry run changes nothing)."""

    store: Store
    layout: Layout
    fleet: Fleet
    state: State
    options: RotateOptions
    on_event: OnEvent = None
    #: The env's lease, as this run keeps it (None: a dry run lends nothing).
    leases: LeaseKeeper | None = None
    #: Plan only: writes are staged, nothing runs.
    dry_run: bool = False
    #: Secrets made in this run, scrubbed from every message.
    secrets: list[str] = field(default_factory=list, repr=False)
    #: Set while a failure in verify means the prepared password itself is wrong.
    redo_prepare: bool = True
    #: The env's RDS Proxy (None: the env has none): prepare writes the new color's
    #: secret, verify logs in through it, the drain leaves its idle sessions be.
    rds_proxy: RdsProxy | None = None
    #: Who runs this call (a new rotation records it as who started it).
    actor: Actor | None = None
    #: The phase this run is in (None before the first).
    running: Phase | None = None
    _staged: dict[str, str] = field(default_factory=dict, repr=False)
    #: The primary's clock minus this machine's, once measured.
    _skew: float | None = field(default=None, repr=False)

    def wall(self) -> float:
        """Now on the primary's clock: the drain's times kept in the state (the switch,
        the quiet evidence) are read on it, so a drain resumed on another machine
        (the scheduled rotator after an operator's run) measures its window on
        the same clock whatever the two machines' own clocks say."""
        if self._skew is None:
            self._skew = clock_skew(self.observer)
        return time.time() + self._skew

    def settle_leases(self) -> None:
        """Take back what a failed try of a phase lent the admin and did not take back, so
        that the next try plans from the catalog as it was before."""
        if self.leases is not None and self.leases.outstanding:
            self.leases.settle(self.admin)

    # The primary's engine, by the role a phase needs of it.

    @property
    def admin(self) -> UserAdmin:
        """What changes users and rights (prepare, retire, ``--terminate``'s lock)."""
        return self.fleet.primary

    @property
    def observer(self) -> UsageObserver:
        """What observes use: the drain's watch, the counters, the write position."""
        return self.fleet.primary

    @property
    def connector(self) -> Connector:
        """What logs in with a URL as a client would (verify)."""
        return self.fleet.primary

    @property
    def rot(self) -> Rotation:
        """The rotation under way."""
        assert self.state.current is not None  # noqa: S101 - set before any phase runs
        return self.state.current

    def user(self, color: Color) -> str:
        """The login user of *color*."""
        return self.state.users[color]

    @property
    def old_user(self) -> str:
        """The user the rotation moves clients away from."""
        return self.user(self.rot.from_color)

    @property
    def new_user(self) -> str:
        """The user the rotation moves clients to."""
        return self.user(self.rot.to_color)

    def counter_gaps(self, user: str) -> list[str]:
        """Why the drain could miss a short use of *user* (see :meth:`Fleet.counter_gaps`):
        behind RDS Proxy only a counter of statements closes a gap, as at the start."""
        return self.fleet.counter_gaps(
            user, self.state.group, statements=self.rds_proxy is not None
        )

    def emit(self, event: Event) -> None:
        """Tell the caller."""
        emit(self.on_event, event)

    def notice(self, message: str, level: str = "note") -> None:
        """Tell the operator, with this run's secrets scrubbed."""
        self.emit(Notice(scrub(message, self.secrets), level))

    # -- the store --------------------------------------------------------

    def pointer(self) -> Color:
        """The active color as stored now."""
        staged = self._staged.get(self.layout.pointer)
        if staged is not None:
            return Color.parse(staged, where=f"pointer {self.layout.pointer}")
        return read_pointer(self.store, self.layout)

    def urls(self, color: Color) -> dict[Role, DbUrl]:
        """Both URLs of *color*, as stored (or as a dry run's earlier phases would write them)."""
        names = [self.layout.url(color, role) for role in ("writer", "reader")]
        values = {**self.store.get_many(names), **self._pick(names)}
        return parse_urls(self.layout, color, values)

    def _pick(self, names: Iterable[str]) -> dict[str, str]:
        return {n: self._staged[n] for n in names if n in self._staged}

    def write(self, writes: Iterable[Write]) -> None:
        """Make *writes* (a dry run stages them instead)."""
        for w in writes:
            if self.dry_run:
                self._staged[w.name] = w.value
            else:
                self.store.put(w.name, w.value, secure=w.secure)

    def require_switched(self) -> None:
        """The old user may only be drained and retired while the pointer names the new one."""
        pointer = self.pointer()
        if pointer is not self.rot.to_color:
            raise messages.not_switched(pointer, self.rot.to_color, self.layout.env)
