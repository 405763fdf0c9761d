"""One admin connection per instance, and what the drain reads or does through all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..drain import Reading
from ..engines import Engine, Sessions, engine_class
from ..errors import ConfigurationError, CredflipError, DeadlineReached, RotationError
from ..poolers import PgBouncer
from ..waiting import Wait
from .addresses import Instance
from .pooled import pooler_reading, pooler_sessions


class Connections:
    """The instances of one env, with one admin connection each (opened on first use).

    The first instance is the primary, reached with *primary* itself. *pooler* is
    the PgBouncer in front of them, if the env has one: its clients are use, its
    server connections are left out of the instances' sessions.
    """

    def __init__(
        self, primary: Engine, instances: Sequence[Instance], pooler: PgBouncer | None = None
    ) -> None:
        if not instances:
            raise ConfigurationError("an env has at least the admin URL's instance")
        self.primary = primary
        self.instances = list(instances)
        self.pooler = pooler
        self._engines: dict[str, Engine] = {self.instances[0].address: primary}

    def engine(self, instance: Instance) -> Engine:
        """The admin's engine on *instance* (the primary's own for the first)."""
        eng = self._engines.get(instance.address)
        if eng is None:
            url = instance.on(self.primary.admin_url)
            eng = engine_class(url.scheme)(
                url,
                connect_timeout=self.primary.connect_timeout,
                statement_timeout=self.primary.statement_timeout,
            )
            self._engines[instance.address] = eng
        return eng

    def forget(self, instance: Instance) -> None:
        """Stop watching *instance* (never the primary), closing its connection."""
        eng = self._engines.pop(instance.address, None)
        if eng is not None:
            eng.close()
        self.instances.remove(instance)

    @property
    def replicas(self) -> list[Instance]:
        """Every instance but the primary."""
        return self.instances[1:]

    def describe(self) -> str:
        """``127.0.0.1:5432 (admin URL), 10.0.0.7:5432 (reader URL)``."""
        return ", ".join(f"{i.address} ({i.source})" for i in self.instances)

    def _each(self, func: Callable[[Engine], object]) -> list[tuple[Instance, object]]:
        out: list[tuple[Instance, object]] = []
        for inst in self.instances:
            eng = self.engine(inst)
            try:
                out.append((inst, func(eng)))
            except CredflipError as exc:
                # Reconnect at the next call rather than reuse a broken link.
                eng.close()
                out.append((inst, exc))
        return out

    def sessions(self, user: str) -> list[tuple[Instance, Sessions | CredflipError]]:
        """*user*'s open sessions on each instance, or the error; behind a pooler, its
        clients there (last) and not its server connections."""
        pooled, at_pooler = pooler_sessions(self.pooler, user)
        found = self._each(lambda e: e.sessions(user, pooled=pooled))
        return [*found, *at_pooler]  # type: ignore[list-item]

    def read(self, user: str, *, counting: bool, position: str | None) -> list[Reading]:
        """One drain sample of *user* on every instance (and its pooler, read first).

        *counting* says whether the counters attribute *user*'s logins to it
        at all; *position* is the primary's write position once they do: a
        standby's counters are trusted only after it replayed that far.
        """
        pooled, at_pooler = pooler_reading(self.pooler, user)
        readings: list[Reading] = []
        for inst in self.instances:
            eng = self.engine(inst)
            try:
                obs = eng.observe(user, pooled=pooled)
                pending = None
                if counting and position is not None and inst is not self.instances[0]:
                    gap = eng.replay_gap(position)
                    if gap:
                        pending = (
                            f"standby has not yet replayed the start of the drain ({gap} bytes "
                            f"behind), so its counters cannot see {user!r} yet"
                        )
                counters = obs.counters if counting else {}
                readings.append(
                    Reading(
                        inst.address,
                        obs.sessions,
                        counters,
                        pending,
                        statements=obs.statements,
                        started=obs.started,
                    )
                )
            except CredflipError as exc:
                eng.close()
                readings.append(Reading(inst.address, error=str(exc)))
        return readings + at_pooler

    def wait_replayed(
        self,
        position: str | None,
        *,
        wait: Wait,
        why: str,
        notice: Callable[[str], None],
    ) -> None:
        """Wait until every standby has replayed *position*, as long as *wait* lasts.

        Standbys that cannot report a position (MySQL, Aurora) are not waited
        for here; their callers retry instead. Raises :class:`RotationError`
        naming the standby that is still behind or cannot be reached.
        """
        if position is None:
            return
        for inst in self.replicas:
            _wait_standby(inst, self.engine(inst), position, wait, why, notice)

    def terminate(self, user: str) -> int:
        """End *user*'s sessions on every instance; raise if one cannot be reached."""
        ended = 0
        for inst, res in self._each(lambda e: e.terminate(user)):
            if isinstance(res, CredflipError):
                raise RotationError(
                    f"cannot end the sessions of {user!r} on {inst.address}: {res}"
                ) from res
            ended += int(res)  # type: ignore[call-overload]
        return ended

    def close(self) -> None:
        """Close every connection but the primary's (its owner closes it), and the pooler's."""
        for address, eng in self._engines.items():
            if address != self.instances[0].address:
                eng.close()
        if self.pooler is not None:
            self.pooler.close()


def _wait_standby(
    inst: Instance,
    eng: Engine,
    position: str,
    wait: Wait,
    why: str,
    notice: Callable[[str], None],
) -> None:
    """Wait until standby *inst* replayed *position* (:meth:`Connections.wait_replayed`)."""
    while True:
        try:
            gap = eng.replay_gap(position)
        except CredflipError as exc:
            eng.close()
            raise RotationError(
                f"cannot check that {inst.address} ({inst.source}) replayed {why}: {exc}; "
                f"start it, or if it was removed for good, drop it with --forget-instance "
                f"{inst.address}"
            ) from exc
        if not gap:
            return
        if not wait.left():
            when = (
                "at the deadline of this run (run again to resume)"
                if wait.by_deadline
                else f"after {wait.timeout:g}s"
            )
            # At the run's deadline the run stops resumably (a Lambda's time).
            error = DeadlineReached if wait.by_deadline else RotationError
            raise error(
                f"standby {inst.address} ({inst.source}) is still {gap} bytes behind "
                f"{when} and has not replayed {why}; check its replication, "
                f"or allow more time with --replica-lag-timeout"
            )
        if wait.note_due():
            notice(
                f"waiting for standby {inst.address} to replay {why} ({gap} bytes behind, "
                f"{wait.left():.0f}s left)"
            )
        wait.pause()
