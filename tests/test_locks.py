"""Lock waits without a server: the settings a plan runs with, and the retry policy of the one
place that executes plans (a fake clock: nothing sleeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from credflip.aws_lambda import _options
from credflip.cli import main
from credflip.engines.base import Step
from credflip.engines.locks import (
    Blocker,
    BlockerWatch,
    LockBudget,
    LockWait,
    StatementWaited,
    gave_up,
    server_timeout,
)
from credflip.engines.mysql import locks as my_locks
from credflip.engines.postgres import PostgresEngine
from credflip.errors import DeadlineReached, LockTimeout, UsageError
from credflip.rotation import RotateOptions
from credflip.urls import DbUrl

BLOCKER = Blocker(
    session="pid 4242",
    user="app",
    application="report-job",
    state="idle in transaction",
    open_for=12.34,
    end="SELECT pg_terminate_backend(4242)",
)


@dataclass
class Clock:
    now: float = 100.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Scripted(PostgresEngine):
    """A PostgreSQL engine whose steps fail as scripted instead of reaching a server."""

    def __init__(self, clock: Clock, waits: dict[str, int], *, budget: float) -> None:
        super().__init__(DbUrl.parse("postgresql://admin:secret@db.example/shop"))
        self.statement_timeout = 30.0
        self.lock_wait = LockWait(timeout=1.0, budget=budget, clock=clock, sleep=clock.sleep)
        self.clock, self.waits, self.ran = clock, waits, []

    def _execute(self, step: Step, watch: BlockerWatch) -> None:
        text = step.sql.as_string(None) if not isinstance(step.sql, str) else step.sql
        if self.waits.get(text, 0) > 0:
            self.waits[text] -= 1
            self.clock.now += self.lock_wait.timeout  # the wait itself
            raise StatementWaited("lock timeout", [BLOCKER])
        self.ran.append(text)


def texts(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.database, s.sql.as_string(None)) for s in steps]


def test_every_connection_gets_its_timeouts_before_its_first_step() -> None:
    eng = Scripted(Clock(), {}, budget=60)
    steps = [
        Step(sql.SQL("GRANT a TO b")),
        Step(sql.SQL("REASSIGN OWNED BY b TO a"), database="other"),
        Step(sql.SQL("REASSIGN OWNED BY b TO a"), database="shop"),  # the admin's own
        Step(sql.SQL("DROP OWNED BY b"), database="other"),
        Step(sql.SQL("REVOKE a FROM CURRENT_USER"), cleanup=True),
    ]
    limits = [
        "SET lock_timeout = '1000ms'",
        "SET statement_timeout = '29000ms'",
    ]
    assert texts(eng.with_limits(steps)) == [
        *(("", s) for s in limits),
        ("", "GRANT a TO b"),
        *(("other", s) for s in limits),
        ("other", "REASSIGN OWNED BY b TO a"),
        ("shop", "REASSIGN OWNED BY b TO a"),
        ("other", "DROP OWNED BY b"),
        ("", "REVOKE a FROM CURRENT_USER"),
    ]
    assert eng.with_limits([]) == []
    # A lock wait never outlasts the statement; a short guard keeps both under it.
    eng.statement_timeout = 0.5
    assert texts(eng.with_limits(steps[:1]))[:2] == [
        ("", "SET lock_timeout = '450ms'"),
        ("", "SET statement_timeout = '450ms'"),
    ]


def test_mysql_settings_are_whole_seconds_and_mariadb_bounds_the_statement() -> None:
    (mariadb,) = my_locks.limit_steps(0.25, server_timeout(30), mariadb=True)
    assert mariadb.params is not None and mariadb.params[:2] == (1, 1)
    assert str(mariadb.params[2]) == "29" and "max_statement_time" in mariadb.sql
    (mysql,) = my_locks.limit_steps(2.5, 27.0, mariadb=False)
    assert mysql.params == (3, 3) and "max_statement_time" not in mysql.sql
    # Which the operator is told, unless the value is whole seconds.
    assert my_locks.whole_seconds(1.0) is None and my_locks.whole_seconds(30) is None
    assert "--lock-timeout 2.5s waits up to 3s there" in str(my_locks.whole_seconds(2.5))


def test_a_step_that_timed_out_is_retried_after_growing_pauses() -> None:
    clock = Clock()
    eng = Scripted(clock, {"REASSIGN OWNED BY b TO a": 3}, budget=60)
    eng.execute([Step(sql.SQL("GRANT a TO b")), Step(sql.SQL("REASSIGN OWNED BY b TO a"))])
    assert eng.ran[-2:] == ["GRANT a TO b", "REASSIGN OWNED BY b TO a"]
    assert eng.ran.count("GRANT a TO b") == 1  # steps done stay done
    # The application runs at least as long as each wait held it up.
    assert clock.slept == [1.0, 2.0, 4.0]


def test_past_the_budget_the_plan_stops_naming_the_holder() -> None:
    clock = Clock()
    eng = Scripted(clock, {"REASSIGN OWNED BY b TO a": 99}, budget=3)
    plan = [
        Step(sql.SQL("GRANT a TO CURRENT_USER")),
        Step(sql.SQL("REASSIGN OWNED BY b TO a"), database="other"),
        Step(sql.SQL("ALTER ROLE b SET role = a")),
        Step(sql.SQL("REVOKE a FROM CURRENT_USER"), cleanup=True),
    ]
    with pytest.raises(LockTimeout) as info:
        eng.execute(plan)
    line = str(info.value)
    assert line == (
        "gave up after 5.0s (3 tries) on a statement in database other that waits for a lock: "
        "pid 4242 of user 'app' (application 'report-job', idle in transaction, transaction "
        "open for 12.3s) holds it; end that session's transaction or lock (SELECT "
        "pg_terminate_backend(4242)) or let it finish, then run the command again; credflip "
        "changed nothing more"
    )
    assert "secret" not in line
    # Nothing after the step that gave up ran, but the admin's lease was taken back.
    assert "ALTER ROLE b SET role = a" not in eng.ran
    assert eng.ran[-1] == "REVOKE a FROM CURRENT_USER"


def test_a_lambda_deadline_ends_the_retries_as_a_resumable_stop() -> None:
    """The deadline, not the budget, ended the retries: DeadlineReached (the runner stops
    resumably), not LockTimeout (a failure); the holder named, the cleanup run."""
    clock = Clock()
    eng = Scripted(clock, {"GRANT a TO b": 99}, budget=60)
    eng.lock_wait = LockWait(
        timeout=1.0, budget=60, deadline=clock.now + 2.5, clock=clock, sleep=clock.sleep
    )
    plan = [Step(sql.SQL("GRANT a TO b")), Step(sql.SQL("REVOKE c FROM d"), cleanup=True)]
    with pytest.raises(DeadlineReached) as info:
        eng.execute(plan)
    assert not isinstance(info.value, LockTimeout)
    line = str(info.value)
    assert line.startswith("stopped at the deadline after 3.0s (2 tries) on a statement")
    assert "pid 4242 of user 'app'" in line and "changed nothing more" in line
    assert eng.ran == ["SET lock_timeout = '1000ms'", "SET statement_timeout = '29000ms'",
                       "REVOKE c FROM d"]  # fmt: skip
    assert clock.now <= 100.0 + 2.5 + 1.0


def test_the_plans_of_a_phase_share_one_lock_budget() -> None:
    """Within a phase (init, or one try of a rotation's phase), the retries of all its
    plans draw on one budget, counted from the phase's first lock timeout: a later plan
    gets what is left. Breaks when each plan starts a budget of its own."""
    clock = Clock()
    waits = {"REASSIGN OWNED BY b TO a": 2, "DROP OWNED BY b": 99}
    eng = Scripted(clock, waits, budget=5)
    with eng.lock_phase() as budget:
        eng.execute([Step(sql.SQL("REASSIGN OWNED BY b TO a"))])  # 2 waits, 3 s of pauses
        assert (budget.timeouts, budget.spent(), budget.left()) == (2, 4.0, 1.0)
        with pytest.raises(LockTimeout) as info:
            eng.execute([Step(sql.SQL("DROP OWNED BY b"))])
    assert clock.slept == [1.0, 2.0]  # no pause for the second plan: the budget was spent
    assert str(info.value).startswith(
        "gave up after 1.0s (1 try; the phase's lock budget started 4.0s before, at an "
        "earlier statement's lock timeout) on a statement that waits for a lock: pid 4242"
    )
    # Outside a phase each plan has a budget of its own (a command of one plan).
    other = Clock()
    alone = Scripted(other, {"REASSIGN OWNED BY b TO a": 2, "DROP OWNED BY b": 2}, budget=5)
    alone.execute([Step(sql.SQL("REASSIGN OWNED BY b TO a"))])
    alone.execute([Step(sql.SQL("DROP OWNED BY b"))])
    assert other.slept == [1.0, 2.0, 1.0, 2.0] and alone.ran[-1] == "DROP OWNED BY b"


def test_the_lock_budget_pauses_grow_and_stop_at_the_deadline() -> None:
    clock = Clock()
    wait = LockWait(timeout=1.0, budget=60, deadline=clock.now + 6, clock=clock, sleep=clock.sleep)
    budget = LockBudget(wait)
    assert (budget.spent(), budget.left(), budget.timeouts) == (0.0, 60, 0)
    pauses = []
    while (delay := budget.timed_out()) is not None:
        pauses.append(delay)
        clock.sleep(delay)
    assert pauses == [1.0, 2.0, 3.0]  # 4 s would run past the deadline: cut to it
    assert budget.timeouts == 4 and budget.spent() == 6.0 and budget.left() == 54.0


def test_no_holder_seen_still_says_what_to_do() -> None:
    line = gave_up(spent=3, tries=2, database="", blockers=[])
    assert "could not see which session holds it" in line and "changed nothing more" in line


def test_lock_timeout_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="--lock-timeout must be positive"):
        LockWait(timeout=0)
    with pytest.raises(UsageError, match="--lock-timeout must be positive"):
        RotateOptions(lock_timeout=0)
    store = tmp_path / "params.db"
    code = main(
        ["init", "--env", "e", "--store", f"sqlite:///{store}", "--lock-timeout", "0s",
         "--admin-url", "postgresql://a@127.0.0.1:1/d", "--writer-url", "postgresql://b@h/d"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err == "credflip: error: --lock-timeout must be positive, like 1s\n"
    assert not store.exists()  # refused before anything


def test_rotate_options_carry_the_lock_wait_to_the_engine() -> None:
    opts = RotateOptions(lock_timeout=0.25, reconnect_timeout=7, deadline=123.0)
    wait = opts.lock_wait(LockWait())
    assert (wait.timeout, wait.budget, wait.deadline) == (0.25, 7, 123.0)


def test_the_lambda_event_names_the_lock_timeout() -> None:
    event: dict[str, Any] = {"env": "prod", "lock_timeout": "250ms"}
    assert _options(event, deadline=1.0).lock_timeout == 0.25
    assert _options({"env": "prod"}, deadline=1.0).lock_timeout == 1.0
    with pytest.raises(UsageError, match="--lock-timeout must be positive"):
        _options({"env": "prod", "lock_timeout": "0s"}, deadline=1.0)


def test_a_mysql_blocker_names_its_program_or_says_it_is_unknown() -> None:
    """As PostgreSQL's line: the program (MySQL's program_name), its address, its state;
    'application unknown' where the server would not say (performance_schema off)."""
    named = Blocker("thread 17", "app", "report-job", "idle in transaction", 3.0, "KILL 17",
                    client="10.0.0.5:51234")  # fmt: skip
    assert named.describe() == (
        "thread 17 of user 'app' (application 'report-job', from 10.0.0.5:51234, "
        "idle in transaction, transaction open for 3.0s)"
    )
    unknown = Blocker("thread 17", "root", None, "idle", None, "KILL 17", client="localhost")
    described = "thread 17 of user 'root' (application unknown, from localhost, idle)"
    assert unknown.describe() == described
    unnamed = Blocker("pid 4", "app", "", "idle in transaction", None, "SELECT 1")
    assert unnamed.describe() == "pid 4 of user 'app' (application '-', idle in transaction)"


def test_the_row_lock_source_follows_the_server() -> None:
    """MySQL 8 dropped information_schema.INNODB_LOCK_WAITS (performance_schema's
    data_lock_waits replaced it); MariaDB and MySQL 5.7 have it. Breaks when MySQL 8 is
    asked for the view it does not have."""
    assert "performance_schema.data_lock_waits" in my_locks.row_lock_source("8.0.36")
    assert "performance_schema.data_lock_waits" in my_locks.row_lock_source("9.1.0-commercial")
    for older in ("10.11.6-MariaDB-0+deb12u1", "11.4.2-MariaDB", "5.7.44-log"):
        assert "information_schema.INNODB_LOCK_WAITS" in my_locks.row_lock_source(older)
