"""PostgreSQL (13 to 18) and Aurora PostgreSQL through psycopg 3.

Rights model: a NOLOGIN *group role* owns the schema objects and holds the
privileges. Both colors are members of it and carry the role setting
``role = <group>``, so every session starts with ``SET ROLE <group>`` and
whatever either color creates is owned by the group: the other color can
ALTER or DROP it after the next rotation. A session that runs as a color
itself (the drain's watch makes the old user's new logins do so) creates
objects that color owns; the colors' default privileges, kept equal to the
group's (:mod:`.group_defaults`), make them usable by the group at once, and
retire hands them to it.

The admin needs CREATEROLE, not SUPERUSER (as on RDS); on 16+ also ADMIN
OPTION on the application's users. It gives itself the privileges of the group
(to grant on the group's objects) and, for the few statements that need it
(``REASSIGN OWNED``, ``DROP OWNED``, the users' default privileges), briefly
those of the login users.

Every change is planned first (:mod:`.catalog` reads, :mod:`.plan` and
:mod:`.plan_defaults` build the statements) and then executed in one place,
so ``rotate --dry-run`` prints exactly what a rotation runs. Passwords are
sent only as SCRAM verifiers computed on the client, so ``log_statement=all``
never records a plaintext password.

The engine is composed of its parts: :mod:`.connection` (connections, errors,
the statement guard), :mod:`.locks` (where a plan's steps run: lock and
statement timeouts, who blocks a step), :mod:`.admin_rights` (what the admin
may do and lends itself), :mod:`.grants` (users and their rights, with
:mod:`.group_defaults`), :mod:`.adopt` (``init``), :mod:`.observe` (sessions,
the drain's signals) and :mod:`.standbys` (replicas, Aurora members).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import register
from ..base import Step
from .admin_rights import PgAdminRights
from .adopt import PgAdopt, default_group
from .grants import PgGrants, scram_verifier
from .locks import PgPlanRunner
from .observe import PgObserver
from .standbys import PgStandbys

__all__ = ["PostgresEngine", "default_group", "scram_verifier"]


@register
@dataclass
class PostgresEngine(PgAdopt, PgGrants, PgObserver, PgStandbys, PgAdminRights, PgPlanRunner):
    """PostgreSQL through psycopg 3, with a CREATEROLE admin."""

    name = "postgresql"
    schemes = ("postgresql", "postgres", "psql")

    #: The SCRAM verifier the last plan_prepare gives each user.
    _verifiers: dict[str, str] = field(default_factory=dict, repr=False)

    def planned_secret(self, user: str) -> str | None:
        """The SCRAM verifier the last :meth:`plan_prepare` gives *user*."""
        return self._verifiers.get(user)

    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """Drop *user*, or lock it and undo the drain's watch."""
        if drop:
            return self._plan_drop(user, keep=keep, group=group)
        return self._plan_lock(user) + self._plan_end_watch(user, group, watched=watched)
