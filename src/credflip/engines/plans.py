"""The one place an engine's changes run: a plan of steps, each connection's lock and
statement timeouts first (see :mod:`.locks`), what the steps lend the admin recorded in a
lease (see :mod:`.lease`), and who blocks a step named. The plans of one phase
(:meth:`PlanRunner.lock_phase`) share its lock budget."""

from __future__ import annotations

import abc
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import DeadlineReached, EngineError
from .lease import LeaseBook, Lending
from .locks import Blocker, BlockerWatch, LockBudget, LockWait, run_waiting, with_limits
from .values import Step

__all__ = ["PlanRunner"]


class PlanRunner(abc.ABC):
    """Runs plans of steps as the admin (:meth:`execute`), and renders them (the dry run)."""

    lock_wait: LockWait
    #: Where the rights a plan lends the admin are recorded (None: nowhere).
    leases: LeaseBook | None
    #: While a plan runs: the connection each of its sessions got its timeouts on.
    _sessions: dict[str, Any] | None = None
    #: While a phase runs (:meth:`lock_phase`): the lock budget its plans share.
    _lock_budget: LockBudget | None = None

    @contextlib.contextmanager
    def lock_phase(self) -> Iterator[LockBudget]:
        """While the block runs, every plan :meth:`execute` runs draws on one lock budget
        (:class:`~.locks.LockBudget`): a phase's. Inside another phase, that one's."""
        if self._lock_budget is not None:
            yield self._lock_budget
            return
        self._lock_budget = budget = LockBudget(self.lock_wait)
        try:
            yield budget
        finally:
            self._lock_budget = None

    def execute(self, steps: Sequence[Step]) -> None:
        """Run *steps* in order: the one place an engine changes a database.

        They run as :meth:`with_limits` puts them. A step that waited longer than
        the lock timeout was rolled back by the server and is tried again
        within the lock budget, the phase's (:meth:`lock_phase`) or else the
        plan's own (steps already done stay done: each is safe to repeat);
        past it, or at the caller's deadline, the plan stops there,
        naming the lock's holder. At the
        first refusal the remaining cleanup steps still run (their own failures
        ignored), then the refusal is raised. What the steps lend the admin is
        recorded in :attr:`leases` before the first one runs, and cleared once
        every cleanup step ran without failing, the refusal raised or not (see
        :mod:`.lease`).
        """
        failure: EngineError | DeadlineReached | None = None
        budget = self._lock_budget or LockBudget(self.lock_wait)
        watch = BlockerWatch(self._watch_connection, self._blockers, self.lock_wait.watch_every)
        lease = Lending(self.leases, steps)
        self._sessions = {}
        with lease, self._plan_scope(), contextlib.closing(watch):
            for step in self.with_limits(steps):
                if failure is not None and not step.cleanup:
                    continue
                try:
                    run = functools.partial(self._execute, step, watch)
                    run_waiting(run, step, budget)
                except (EngineError, DeadlineReached) as exc:
                    if step.cleanup:
                        lease.failed(step)
                        continue
                    failure = exc
            lease.ran_through()
            if failure is not None:
                raise failure

    def _settle(self, step: Step, conn: Any, run: Callable[[Step], object]) -> None:
        """Before *step* runs on *conn*: if its session's timeouts were set on another
        connection in this plan (that one broke, e.g. the client guard gave up on it, and
        *conn* replaced it), *run* the statements that set them on *conn* first."""
        where = self._connection_of(step)
        if self._sessions is not None and self._sessions.setdefault(where, conn) is not conn:
            for limit in self._limit_steps():
                run(limit)
            self._sessions[where] = conn

    def with_limits(self, steps: Sequence[Step]) -> list[Step]:
        """*steps* as :meth:`execute` runs them: before the first step on each connection,
        the statements that set its lock and statement timeouts. The dry run prints this."""
        return with_limits(steps, self._connection_of, self._limit_steps)

    def _connection_of(self, step: Step) -> str:
        """Which of the admin's connections *step* runs on."""
        return step.database

    @abc.abstractmethod
    def _limit_steps(self) -> list[Step]:
        """The statements that set a connection's lock and statement timeouts."""

    @contextlib.contextmanager
    def _plan_scope(self) -> Iterator[None]:
        """While a plan runs: keep the connections its steps use open between steps."""
        yield

    @abc.abstractmethod
    def _execute(self, step: Step, watch: BlockerWatch) -> None:
        """Run one step as the admin, *watch* naming who blocks it; translate driver errors
        (naming ``step.hint``); a lock timeout raises :class:`~.locks.StatementWaited`."""

    @abc.abstractmethod
    def _watch_connection(self) -> Any:
        """A second admin connection, to see who holds a lock a step waits for."""

    @abc.abstractmethod
    def _blockers(self, conn: Any, waiter: Any) -> list[Blocker]:
        """The sessions that hold what session *waiter* waits for, asked on *conn*."""

    @abc.abstractmethod
    def render(self, step: Step) -> str:
        """The step as the server would receive it, every known secret shown as ``***``."""
