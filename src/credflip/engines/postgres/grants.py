"""PostgreSQL users and their rights: prepare a color with the rights of the other (and
copy them to the group), lock, unlock and drop a user.

Every change is planned from one read of the catalog (:mod:`.catalog`) into
statements (:mod:`.plan`) that :meth:`~..user_admin.UserAdmin.execute` runs.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ...errors import RotationError
from ..base import Step, UserState
from . import catalog, plan
from .group_defaults import PgGroupDefaults

__all__ = ["PgGrants", "scram_verifier"]


class PgGrants(PgGroupDefaults):
    """Login users: their state, their rights, locking and dropping them."""

    _verifiers: dict[str, str]  # see PostgresEngine.planned_secret

    # -- users -----------------------------------------------------------

    def user_state(self, user: str) -> UserState:
        """Return whether *user* exists and has LOGIN."""
        login = catalog.role_flag(self._run, user, "rolcanlogin")
        return UserState(user, exists=login is not None, can_login=bool(login))

    # -- rights ------------------------------------------------------------

    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """Create or update *user*: the rights of *like* first, then password and LOGIN.

        Both colors get the group's default privileges (:mod:`.group_defaults`):
        *like* is the user the coming drain watches, whose late sessions create
        objects of their own. One snapshot of the catalog suffices: the steps
        change only *user*, the group and the colors' default privileges, never
        what they are computed from.
        """
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self._require_admin_option([r for r in (user, group) if r is not None and self._exists(r)])
        steps: list[Step] = []
        if not self._exists(user):
            steps.append(plan.create_role(user))
        if group:
            # Sessions run as the group (SET ROLE), so a right someone granted
            # to the active user directly only takes effect once the group
            # holds it too. Adding it is what the operator meant.
            steps += self._plan_copy_to_group(like, group)
        steps += self._plan_sync_rights(like, user)
        if group:
            steps += self._plan_group_defaults([like, user], group)
        verifier = scram_verifier(self.conn, user, password)
        self.remember_secret(verifier)
        self._verifiers[user] = verifier
        steps.append(plan.set_password(user, verifier))
        return steps

    def _plan_copy_to_group(self, source: str, group: str) -> list[Step]:
        want = {k: v for k, v in self._memberships(source).items() if k != group}
        steps = plan.sync_memberships(
            want,
            self._memberships(group),
            group,
            revoke_extra=False,
            options=self._options_on_memberships,
        )
        return steps + self._plan_sync_grants(source, group, revoke_extra=False)

    def _plan_sync_rights(self, source: str, target: str) -> list[Step]:
        """Make *target*'s attributes, memberships, settings and grants equal *source*'s."""
        steps = [plan.set_attributes(target, catalog.attributes(self._run, source))]
        steps += plan.sync_memberships(
            self._memberships(source),
            self._memberships(target),
            target,
            revoke_extra=True,
            options=self._options_on_memberships,
        )
        steps += plan.sync_settings(
            catalog.settings(self._run, source), catalog.settings(self._run, target), target
        )
        return steps + self._plan_sync_grants(source, target, revoke_extra=True)

    def _plan_sync_grants(self, source: str, target: str, *, revoke_extra: bool) -> list[Step]:
        steps = plan.sync_grants(
            catalog.database_grants(self._run, source),
            catalog.database_grants(self._run, target),
            target,
            revoke_extra=revoke_extra,
            database=self._main,
        )
        for dbname in catalog.databases_of(
            self._run, [source, target], deptypes=("a",), main=self._main
        ):
            steps += plan.sync_grants(
                self._in(dbname, catalog.grants_in, source),
                self._in(dbname, catalog.grants_in, target),
                target,
                revoke_extra=revoke_extra,
                database=dbname,
            )
        return steps

    def _all_grants(self, role: str) -> set[catalog.Grant]:
        grants = catalog.database_grants(self._run, role)
        for dbname in catalog.databases_of(self._run, [role], deptypes=("a",), main=self._main):
            grants |= {
                g._replace(database=dbname) for g in self._in(dbname, catalog.grants_in, role)
            }
        return grants

    # -- lock, unlock, drop ----------------------------------------------------

    def lock_user(self, user: str) -> None:
        """``ALTER ROLE user NOLOGIN``: open sessions stay, new logins are refused."""
        self.execute(self._plan_lock(user))

    def _plan_lock(self, user: str) -> list[Step]:
        return [plan.set_login(user, False)] if self._exists(user) else []

    def unlock_user(self, user: str) -> None:
        """``ALTER ROLE user LOGIN``."""
        self.execute([plan.set_login(user, True)])

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """Reassign and drop what *user* owns, then ``DROP ROLE``; refuse if anything is lost."""
        self.execute(self._plan_drop(user, keep=keep, group=group))

    def _plan_drop(self, user: str, *, keep: str, group: str | None) -> list[Step]:
        if not self._exists(user):
            return []
        problems: list[str] = []
        lost = sorted(self._all_grants(user) - self._all_grants(keep))
        if lost:
            problems.append(
                f"it holds rights {keep!r} lacks: "
                + ", ".join(g.describe() for g in lost[:5])
                + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            )
        missing = sorted(set(self._memberships(user)) - set(self._memberships(keep)))
        if missing:
            problems.append(f"it is a member of {', '.join(missing)} and {keep!r} is not")
        owned = catalog.owns_objects(self._run, user)
        if owned and not group:
            problems.append(
                f"it owns objects in {', '.join(owned)} and no group role is set up to take them"
            )
        if problems:
            raise RotationError(
                f"refusing to drop user {user!r}: {'; '.join(problems)}; retire it with "
                f"--retire lock instead, or move those rights first"
            )
        before, after = self._acting_as([user], to=group)
        steps = list(before)
        for dbname in catalog.databases_of(self._run, [user], deptypes=("o", "a"), main=self._main):
            if group:
                steps.append(plan.reassign_owned([user], group, dbname))
            steps.append(plan.drop_owned(user, dbname))
        steps.append(plan.drop_role(user))
        # Nothing to take back on a role that is gone.
        return steps + [step for role, step in after if role != user]


def scram_verifier(conn: psycopg.Connection[Any], user: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of *password*, computed here, never on the server."""
    return conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()
