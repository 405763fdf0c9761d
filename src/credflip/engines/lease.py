"""The rights the admin lends itself, as a lease someone records for it.

A plan that grants the admin a right for a moment (PostgreSQL: a membership
for ``REASSIGN OWNED``) marks those grants (:attr:`~.values.Step.lends`).
:meth:`~.user_admin.UserAdmin.execute` has them recorded in a
:class:`LeaseBook` before the plan's first step and cleared once the plan
ran through, its cleanup steps included, even when a step before them was
refused (the cleanup steps run then too). A run that dies in between, or a
cleanup step that fails, leaves the lease recorded: the next command takes
back what it names
(:meth:`~.user_admin.UserAdmin.plan_take_back`), by what the catalog shows,
so that a grant that never ran is no reason to fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from .values import Lent, Step

__all__ = ["LeaseBook", "Lending"]


class LeaseBook(Protocol):
    """Where the admin's temporary rights are recorded (the env's store)."""

    def record(self, rights: Sequence[Lent]) -> None:
        """Record *rights* as lent, before any of them is granted."""

    def clear(self, rights: Sequence[Lent]) -> None:
        """*rights* were taken back (or never granted): forget them."""


class Lending:
    """One plan's lease, around its execution: recorded on entry, cleared on exit once every
    cleanup step ran (:meth:`ran_through`), whether or not an earlier step was refused.

    It stays recorded when the plan stopped before its cleanup steps ran (a kill, an
    interrupt, an error no step catches) or one of them failed: then the catalog may
    still show what the plan lent.
    """

    def __init__(self, book: LeaseBook | None, steps: Sequence[Step]) -> None:
        self.book = book
        self.rights = tuple(dict.fromkeys(s.lends for s in steps if s.lends is not None))
        self.kept = False
        self.done = False

    def failed(self, step: Step) -> None:
        """*step* failed and the plan goes on (a cleanup step): keep the lease."""
        self.kept = True

    def ran_through(self) -> None:
        """Every cleanup step of the plan ran (each failure told to :meth:`failed`)."""
        self.done = True

    def __enter__(self) -> Lending:
        if self.book is not None and self.rights:
            self.book.record(self.rights)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.done and not self.kept and self.book is not None and self.rights:
            self.book.clear(self.rights)
