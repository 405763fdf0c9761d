"""MySQL and MariaDB users and their rights: adopt (``init``), prepare a color with the
accounts and rights of the other, lock, unlock, retire and drop a user."""

from __future__ import annotations

from ...errors import ConfigurationError, InsufficientPrivilege, RotationError
from ..base import Step, UserState
from . import plan, rights
from .catalog import MysqlCatalog
from .rights import Rights

__all__ = ["MysqlGrants"]


class MysqlGrants(MysqlCatalog):
    """The admin's check, and login users: their state, rights, locking and dropping them."""

    # -- admin -----------------------------------------------------------

    def check_admin(self) -> None:
        """Check the admin may create users and read account details."""
        on_all = self._global_privileges()
        if "ALL PRIVILEGES" not in on_all and "CREATE USER" not in on_all:
            raise InsufficientPrivilege(
                f"admin user {self.admin_url.user!r} lacks CREATE USER: as root run GRANT CREATE "
                f"USER ON *.* TO {self.admin_url.user}"
            )
        self._run(
            "SELECT 1 FROM mysql.user LIMIT 1",
            hint=f"it must read account details: GRANT SELECT ON mysql.* TO {self.admin_url.user}",
        )

    # -- users -----------------------------------------------------------

    def user_state(self, user: str) -> UserState:
        """Whether *user* exists (any host) and every account of it is unlocked."""
        hosts = self._hosts(user)
        if not hosts:
            return UserState(user, exists=False)
        locked = any(" ACCOUNT LOCK" in self._create_user_text(user, h) for h in hosts)
        return UserState(user, exists=True, can_login=not locked)

    def adopt(self, *, active: str, inactive: str, group: str | None) -> str | None:
        """Create *inactive* (locked) for every host of *active*, with the same rights."""
        if active == inactive:
            raise ConfigurationError("blue and green must be two different users")
        self.check_admin()
        if not self._hosts(active):
            raise ConfigurationError(f"user {active!r} does not exist on this server")
        if not self._hosts(inactive):
            self.execute(self._plan_sync(active, inactive))
        # An inactive user that already exists (a hand-made setup) may still
        # serve clients: its rights are synced in prepare, once it is idle.
        return None

    def plan_prepare(self, user: str, password: str, *, like: str, group: str | None) -> list[Step]:
        """Sync accounts and rights from *like*, then set the password and unlock."""
        if user == like:
            raise RotationError(f"refusing to change {user!r}: it is the active user")
        self.remember_secret(password)
        self.remember_secret(plan.native_password_hash(password))
        steps = self._plan_sync(like, user)
        mariadb = self.is_mariadb
        plugins = {
            str(h): str(p)
            for h, p in self._run("SELECT Host, plugin FROM mysql.user WHERE User = %s", [like])
        }
        for host in self._hosts(like):  # the target's hosts, once synced
            plugin = plugins.get(host) or "mysql_native_password"
            steps.append(plan.set_password(user, host, password, plugin=plugin, mariadb=mariadb))
            steps.append(plan.set_lock(user, host, locked=False))
        return steps

    def _plan_sync(self, source: str, target: str) -> list[Step]:
        """Make *target*'s accounts and rights equal *source*'s, changing only what differs.

        Every grant (of every account) runs before any revoke, and accounts
        *source* no longer has are dropped last: at each statement boundary
        the target holds every right it held before or every right *source*
        holds, so what runs with its rights (its DEFINER objects) keeps them
        (but for column privileges a table-level revoke takes with it, given
        again by the next statement: see :mod:`.rights`).

        An account to drop that is the DEFINER of views, routines, triggers or
        events is refused, as ``--retire drop`` refuses (nothing is planned),
        unless another account of the target matches its host (the server then
        runs them as that one, which has the source's rights): without one,
        those objects would fail for the application from that statement on.
        """
        source_hosts, target_hosts = self._hosts(source), self._hosts(target)
        mariadb = self.is_mariadb
        grants: list[Step] = []
        revokes: list[Step] = []
        for host in source_hosts:
            theirs = self.rights(source, host)
            if host in target_hosts:
                mine = self.rights(target, host)
                options = self._create_user_text(target, host)
            else:
                grants.append(plan.create_user(target, host))
                mine, options = Rights(), ""
            more, less = rights.plan_sync(theirs, mine, target, host, mariadb=mariadb)
            grants += more
            revokes += less
            wanted = plan.tls_and_limits(self._create_user_text(source, host), source, target, host)
            if plan.tls_and_limits(options, target, target, host) != wanted:
                grants.append(wanted)
        extra = sorted(set(target_hosts) - set(source_hosts))
        for host in extra:
            definers = self.definer_objects(target, host)
            if definers and not any(plan.host_matches(kept, host) for kept in source_hosts):
                raise _definer_kept(source, target, host, definers)
        return grants + revokes + [plan.drop_user(target, h) for h in extra]

    def lock_user(self, user: str) -> None:
        """``ACCOUNT LOCK`` every account of *user*; open sessions stay."""
        self.execute(self._plan_lock(user, locked=True))

    def unlock_user(self, user: str) -> None:
        """``ACCOUNT UNLOCK`` every account of *user*."""
        self.execute(self._plan_lock(user, locked=False))

    def _plan_lock(self, user: str, *, locked: bool) -> list[Step]:
        return [plan.set_lock(user, host, locked=locked) for host in self._hosts(user)]

    def plan_retire(
        self, user: str, *, keep: str, group: str | None, drop: bool, watched: bool | None = None
    ) -> list[Step]:
        """``ACCOUNT LOCK`` (logins count per user here: nothing to undo), or ``DROP USER``."""
        if drop:
            return self._plan_drop(user, keep=keep)
        return self._plan_lock(user, locked=True)

    def drop_user(self, user: str, *, keep: str, group: str | None) -> None:
        """``DROP USER`` every account of *user*, refused while anything depends on it."""
        self.execute(self._plan_drop(user, keep=keep))

    def _plan_drop(self, user: str, *, keep: str) -> list[Step]:
        hosts = self._hosts(user)
        if not hosts:
            return []
        problems = []
        definers = self.definer_objects(user)
        if definers:
            problems.append(f"it is the DEFINER of {_shown(definers)}")
        kept = set(self._hosts(keep))
        lost = sorted(
            {
                f"{what} (@{host})"
                for host in hosts
                for what in self.rights(user, host).beyond(
                    self.rights(keep, host) if host in kept else Rights()
                )
            }
        )
        if lost:
            problems.append(f"it holds rights {keep!r} lacks: {'; '.join(lost[:3])}")
        if problems:
            raise RotationError(
                f"refusing to drop user {user!r}: {'; '.join(problems)}; retire it with "
                f"--retire lock instead, or change those DEFINERs first"
            )
        return [plan.drop_user(user, host) for host in hosts]


def _shown(objects: list[str]) -> str:
    """The first five of *objects*, and how many more."""
    more = f" and {len(objects) - 5} more" if len(objects) > 5 else ""
    return ", ".join(objects[:5]) + more


def _definer_kept(source: str, target: str, host: str, definers: list[str]) -> RotationError:
    """Why *target@host*, which *source* no longer has, is not dropped."""
    return RotationError(
        f"refusing to drop account '{target}'@'{host}' ({source!r} has no account at that "
        f"host any more): it is the DEFINER of {_shown(definers)}, which would fail without "
        f"it (no other account of {target!r} matches that host); change their DEFINER (or "
        f"create '{source}'@'{host}' again), then run the command again"
    )
