"""The colors' default privileges: those of the group, and the group's rights as owner.

A color's session normally runs as the group, and what it creates is the
group's. During a drain the old user's new logins run as itself (so that they
are counted as its own), and so may a session that resets its role: what
those create is owned by the color. With the group's default privileges on
each color, such an object is usable by the group (so by the other color, the
active one) the moment it exists, and by whomever the group's defaults name;
retire then hands it to the group (``REASSIGN OWNED``), which changes nobody's
rights. Planned here (:mod:`.plan_defaults` builds the statements), executed
with prepare's and init's other steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..base import Step
from . import catalog
from . import plan_defaults as defaults
from .admin_rights import PgAdminRights

__all__ = ["PgGroupDefaults"]


class PgGroupDefaults(PgAdminRights):
    """Keep each color's default privileges equal to the group's."""

    def _plan_group_defaults(self, users: Sequence[str], group: str) -> list[Step]:
        """``ALTER DEFAULT PRIVILEGES FOR ROLE user`` in every database of the group or
        the users, so that what each of *users* creates gets what the group's objects
        get; nothing when they already do.

        Changing a role's default privileges takes its privileges (INHERIT): the
        admin lends them to itself for these statements and takes them back.
        A user that does not exist yet (prepare creates it first) has the
        built-in defaults.
        """
        changes: list[Step] = []
        changed: set[str] = set()
        databases = catalog.databases_of(
            self._run, [group, *users], deptypes=("o", "a"), main=self._main
        )
        for dbname in databases:
            found = self._in(dbname, catalog.default_privileges, [group, *users])
            if group not in found:
                return []  # no group (yet): nothing to be like
            for user in users:
                steps = defaults.sync_default_acl(
                    defaults.like_group(found.get(group, ()), user),
                    found.get(user, defaults.BUILT_IN),
                    user,
                    dbname,
                )
                changes += steps
                changed |= {user} if steps else set()
        if not changes:
            return []
        before, after = self._acting_as(sorted(changed), to=None)
        return [*before, *changes, *(step for _, step in after)]
