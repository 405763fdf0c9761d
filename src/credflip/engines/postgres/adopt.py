"""``credflip init`` on PostgreSQL: convert a single-user database to a group role that
owns the objects, with the two colors as its members."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import ConfigurationError, InsufficientPrivilege
from . import catalog, plan, plan_defaults
from .grants import PgGrants

__all__ = ["PgAdopt", "default_group"]


class PgAdopt(PgGrants):
    """Adopt a database: the group role, ownership moved to it, the second color."""

    def adopt(self, *, active: str, inactive: str, group: str | None) -> str:
        """Create the group, move ownership and rights to it, and create *inactive*.

        Executed in stages, each planned from the catalog as the previous one
        left it (ownership moves change what the next stage copies).
        """
        group = group or default_group(active)
        if len({active, inactive, group}) != 3:
            raise ConfigurationError(
                f"users {active!r}, {inactive!r} and group {group!r} must all differ: pass "
                f"--green-user or --group-role"
            )
        self.check_admin()
        for user in (active, inactive):
            if catalog.role_flag(self._run, user, "rolsuper"):
                raise ConfigurationError(
                    f"user {user!r} is a superuser: credflip cannot manage it; give the "
                    f"application an ordinary user"
                )
        group_login = catalog.role_flag(self._run, group, "rolcanlogin")
        if group_login:
            raise ConfigurationError(
                f"group role {group!r} exists and can log in; pick another with --group-role"
            )
        self._require_admin_option([u for u in (active, inactive, group) if self._exists(u)])
        users = [u for u in (active, inactive) if self._exists(u)]
        self._check_can_move_databases(users)
        if group_login is None:
            self.execute([plan.create_role(group)])
        # Membership first: once REASSIGN OWNED hands the tables to the group,
        # the application's sessions reach them through it. In the other
        # order they would lose their own tables for a moment (and on a
        # lagging replica for as long as it lags).
        self.execute([*self._admin_privileges_of(group), plan.grant_role(group, active)])
        before, after = self._acting_as(users, to=group)
        steps = list(before)
        # Ownership of everything the users own moves to the group, in every
        # database: REASSIGN OWNED only sees the current one.
        for dbname in catalog.databases_of(self._run, users, deptypes=("o",), main=self._main):
            # REASSIGN OWNED may reach a function or type before its schema,
            # and the new owner needs CREATE on that schema.
            for schema in self._in(dbname, catalog.schemas_of, users):
                steps.append(plan.grant_create_on_schema(schema, group, dbname))
            steps.append(plan.reassign_owned(users, group, dbname))
            for user in users:
                steps += plan_defaults.copy_default_acl(
                    self._in(dbname, catalog.default_acl, user), group, dbname
                )
        self.execute([*steps, *(step for _, step in after)])
        # The group must be able to do whatever the active user could on its
        # own, because sessions will run as the group.
        self.execute(self._plan_copy_to_group(active, group))
        steps = [plan.set_role_setting(active, group)]
        if not self._exists(inactive):
            steps.append(plan.create_role(inactive))
        self.execute(steps)
        self.execute(self._plan_sync_rights(active, inactive))
        # What either color creates as itself (a late session) is the group's to use.
        self.execute(self._plan_group_defaults([active, inactive], group))
        return group

    def _check_can_move_databases(self, users: Sequence[str]) -> None:
        # Changing a database's owner needs CREATEDB on the admin; say so
        # before anything changes rather than half way through.
        owned = catalog.owned_databases(self._run, users)
        if not owned:
            return
        can = self._run(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )[0][0]
        if not can:
            admin = self.admin_url.user
            raise InsufficientPrivilege(
                f"{', '.join(users)} own(s) database(s) {owned}; handing them to the group role "
                f"needs CREATEDB on the admin: as a superuser run ALTER ROLE {admin} CREATEDB"
            )


def default_group(user: str) -> str:
    """The group role for a user: ``app`` → ``app_owner``, ``app_blue`` → ``app_owner``."""
    for suffix in ("_blue", "-blue", "_green", "-green"):
        if user.endswith(suffix) and len(user) > len(suffix):
            user = user[: -len(suffix)]
            break
    return f"{user}_owner"
