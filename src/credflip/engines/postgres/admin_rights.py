"""What the PostgreSQL admin may do, and the rights it lends itself for a moment.

The admin needs CREATEROLE (:meth:`PgAdminRights.check_admin`); on 16+ also
ADMIN OPTION on the roles it manages. To grant on the group's objects it gives
itself the group's privileges, and for ``REASSIGN OWNED`` and ``DROP OWNED``
briefly those of the login users, taking back afterwards exactly what it added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ...errors import ConfigurationError, InsufficientPrivilege
from ..base import Lent, Step
from . import catalog, plan
from .connection import PgConnection

__all__ = ["PgAdminRights"]

_MIN_VERSION = 130000


class PgAdminRights(PgConnection):
    """The admin's rights: checked up front, lent to itself around a change."""

    # -- admin -----------------------------------------------------------

    def check_admin(self) -> None:
        """Check the server version and that the admin has CREATEROLE."""
        version = self.conn.info.server_version
        if version < _MIN_VERSION:
            raise ConfigurationError(
                f"PostgreSQL {version // 10000} is not supported: credflip needs 13 or later"
            )
        rows = self._run(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        superuser, createrole = rows[0]
        if not (superuser or createrole):
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} lacks CREATEROLE: as a superuser (or the RDS master user) "
                f"run ALTER ROLE {admin} CREATEROLE"
            )

    # -- memberships -------------------------------------------------------

    @property
    def _options_on_memberships(self) -> bool:
        """PostgreSQL 16+: memberships carry INHERIT and SET options besides ADMIN."""
        return int(self.conn.info.server_version) >= 160000

    def _memberships(self, role: str) -> dict[str, catalog.Membership]:
        return catalog.memberships(self._run, role, options=self._options_on_memberships)

    # -- the admin's own memberships -----------------------------------------

    def _admin_privileges_of(self, role: str) -> list[Step]:
        """Let the admin act with *role*'s privileges (to grant on and give to its objects).

        On PostgreSQL 16+ it grants itself INHERIT only, never SET: it never
        needs to become the group.
        """
        if catalog.admin_has(self._run, role, "USAGE"):
            return []
        return [plan.grant_self(role, options=self._options_on_memberships)]

    def _require_admin_option(self, roles: Sequence[str]) -> None:
        """PostgreSQL 16+: CREATEROLE covers only roles the admin holds ADMIN OPTION on.

        Checked before anything changes, so that a missing grant is one clear
        message instead of a half-done init or prepare.
        """
        if not self._options_on_memberships:
            return
        missing = [
            r
            for r in sorted(roles)
            if not catalog.admin_has(self._run, r, "MEMBER WITH ADMIN OPTION")
        ]
        if missing:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"admin user {admin!r} lacks ADMIN OPTION on {', '.join(missing)}, which "
                f"PostgreSQL 16+ requires to manage a role: as a superuser (RDS/Aurora: the "
                f"master user) run "
                + "; ".join(
                    f"GRANT {m} TO {admin} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
                    for m in missing
                )
            )

    def _acting_as(
        self, roles: Sequence[str], *, to: str | None
    ) -> tuple[list[Step], list[tuple[str, Step]]]:
        """Steps that give the admin what ``REASSIGN OWNED BY roles TO to`` and ``DROP
        OWNED`` need, and the cleanup steps that take it back.

        That is the privileges (INHERIT) of each of *roles*, and on 16+ the
        right to SET ROLE to *to* (giving it a database needs that). The admin
        grants itself only those options and afterwards takes back exactly
        what it added: an option of a grant of its own that existed before,
        or the whole grant; each grant says so (:attr:`Step.lends`), so that
        it is recorded as a lease before it runs. It keeps INHERIT on the group.
        A membership it held before is never granted again nor taken back.
        """
        options = self._options_on_memberships
        before: list[Step] = []
        after: list[tuple[str, Step]] = []

        def lend(step: Step, lent: Lent) -> None:
            before.append(dataclasses.replace(step, lends=lent))
            after.append((lent.role, _cleanup(plan.revoke_self(lent.role, lent.option))))

        for role in roles:
            if catalog.admin_has(self._run, role, "USAGE"):
                continue
            if not options:
                # Before 16 a member without USAGE is a NOINHERIT admin: its own
                # membership, which a REVOKE would end.
                if not catalog.admin_has(self._run, role, "MEMBER"):
                    lend(plan.grant_self(role, options=False), Lent(role))
                continue
            held = catalog.self_grant(self._run, role, options=True) is not None
            lent = Lent(role, "INHERIT" if held else "")
            lend(plan.grant_self(role, options=True, held=held), lent)
        if to is not None:
            kept = self._admin_privileges_of(to)
            before += kept
            if options and not catalog.admin_has(self._run, to, "SET"):
                held = bool(kept) or catalog.self_grant(self._run, to, options=True) is not None
                lend(plan.grant_self_set(to), Lent(to, "SET" if held else ""))
        return before, after

    def plan_take_back(self, rights: Sequence[Lent]) -> list[Step]:
        """Revoke what a lease names and the catalog shows the admin still holds of it: a
        grant of its own (never one another role made), or the one option of it that was
        lent. A right whose grant never ran, or that is gone already, plans nothing."""
        options = self._options_on_memberships
        rights = list(dict.fromkeys(rights))
        whole = {lent.role for lent in rights if not lent.option}
        steps: list[Step] = []
        for lent in rights:
            if lent.option and lent.role in whole:
                continue  # the whole grant goes
            held = catalog.self_grant(self._run, lent.role, options=options)
            if held is None:
                continue
            if (lent.option == "INHERIT" and not held.inherit) or (
                lent.option == "SET" and not held.set
            ):
                continue
            steps.append(plan.revoke_self(lent.role, lent.option))
        return steps


def _cleanup(step: Step) -> Step:
    """A step that runs even when an earlier one failed, its own failure ignored."""
    return dataclasses.replace(step, cleanup=True)
