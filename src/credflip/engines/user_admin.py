"""Who administers users: check the admin, read a user's state, and plan and run the
changes to it.

``init`` needs :meth:`UserAdmin.adopt`; *prepare* :meth:`UserAdmin.prepare_user`;
*retire* :meth:`UserAdmin.plan_retire` (or :meth:`UserAdmin.lock_user`); a
rollback and ``unlock`` :meth:`UserAdmin.unlock_user`. Every change runs
through :meth:`UserAdmin.execute`; ``--dry-run`` prints the same plans with
:meth:`UserAdmin.render`, both as :meth:`UserAdmin.with_limits` puts them: each
connection's lock and statement timeouts first (see :mod:`.locks`). Those three
are :class:`.plans.PlanRunner`'s.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from .plans import PlanRunner
from .values import Lent, Step, UserState

__all__ = ["UserAdmin"]


class UserAdmin(PlanRunner, abc.ABC):
    """Login users, their rights, and the one place their changes run."""

    # -- admin -----------------------------------------------------------

    @abc.abstractmethod
    def check_admin(self) -> None:
        """Connect as admin and check it may manage users; raise naming the missing right."""

    # -- users -----------------------------------------------------------

    @abc.abstractmethod
    def user_state(self, user: str) -> UserState:
        """Return whether *user* exists and may log in."""

    @abc.abstractmethod
    def adopt(self, *, active: str, inactive: str, group: str | None) -> str | None:
        """Convert a database so that *active* and *inactive* can take turns.

        Creates the group role (when the engine uses one) that owns the
        objects, moves ownership and rights of the users to it, and creates
        *inactive* (without login) when missing. Returns the group's name.
        """

    @abc.abstractmethod
    def lock_user(self, user: str) -> None:
        """Stop *user* from logging in; reversible with :meth:`unlock_user`."""

    @abc.abstractmethod
    def unlock_user(self, user: str) -> None:
        """Allow *user* to log in again."""

    @abc.abstractmethod
    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """Drop *user*, refusing with a clear message when that would lose anything.

        *keep* is the active user, which must keep every right *user* had.
        """

    # -- plans (run by :class:`.plans.PlanRunner`) --------------------------

    @abc.abstractmethod
    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """The statements :meth:`prepare_user` runs."""

    def planned_secret(self, user: str) -> str | None:
        """What the last :meth:`plan_prepare` gives the server for *user*'s password (on
        PostgreSQL its SCRAM verifier), for a pooler's ``auth_file``, which must hold
        exactly the server's; None where the engine sends the server no such secret."""
        return None

    def prepare_user(self, user: str, password: str, *, like: str, group: str | None) -> None:
        """Create or update *user* with *password*, allow login, and give it the rights of *like*.

        Must not change *like* in any way.
        """
        self.execute(self.plan_prepare(user, password, like=like, group=group))

    @abc.abstractmethod
    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """The statements that retire *user*: lock it (undoing the drain's watch) or drop it.

        *watched*: plan as if the drain had (True) or had not (False) made
        the user's logins countable; None reads the current state.
        """

    def plan_take_back(self, rights: Sequence[Lent]) -> list[Step]:
        """The statements that take back what a lease recorded (:mod:`.lease`) and the
        admin still holds: nothing for a right the catalog does not show (its grant never
        ran, or was taken back already). Engines whose admin lends itself nothing plan
        nothing."""
        return []
