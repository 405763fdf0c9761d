"""The legacy-client log on a fake clock: no database, no sleeping."""

from __future__ import annotations

import json
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credflip.actor import Actor
from credflip.drain import Evidence, Reading
from credflip.engines import SessionGroup, Sessions
from credflip.engines.postgres.query_text import safe_text
from credflip.layout import Color
from credflip.legacy import KEEP, LegacyClient, LegacyLog, shorten, shrink
from credflip.state import HistoryEntry, Phase, Rotation, State
from credflip.stores.base import MAX_VALUE_BYTES

DB1 = "127.0.0.1:5432"
DB2 = "10.0.0.9:5432"
T0 = 1_700_000_000.0  # wall clock of the first sample
STEP = 0.2


def cron(*, idle_for: float | None = None, count: int = 1) -> SessionGroup:
    return SessionGroup(
        "10.0.0.5", "billing-cron", count, database="db1", started=T0 - 30, idle_for=idle_for
    )


def reading(
    *groups: SessionGroup,
    counter: Hashable = 0,
    statements: tuple[tuple[str, int], ...] = (),
    instance: str = DB1,
    started: float | None = T0 - 3600,
    error: str | None = None,
) -> Reading:
    if error is not None:
        return Reading(instance, error=error)
    return Reading(
        instance,
        Sessions(groups),
        {"counter": counter},
        statements=statements,
        started=started,
    )


def test_a_session_after_the_cache_wait_is_a_legacy_client() -> None:
    log = LegacyLog()
    log.update(T0, [reading(cron())])
    assert log.count == 1
    assert log.describe_first() == (
        "1 legacy client, first: 10.0.0.5 (billing-cron) on db1 via 127.0.0.1:5432"
    )
    (client,) = log.clients
    assert (client.first_seen, client.last_seen, client.sessions) == (T0, T0, 1)
    assert client.started == T0 - 30
    log.update(T0 + STEP, [reading(cron(count=3))])
    (client,) = log.clients
    assert (client.first_seen, client.last_seen, client.sessions) == (T0, T0 + STEP, 3)


def test_nothing_is_recorded_during_the_cache_wait_but_it_is_the_baseline() -> None:
    log = LegacyLog()
    log.update(T0, [reading(counter=1)], record=False)
    assert log.count == 0 and log.describe_first() == "no legacy clients"
    # A client that came and went between two samples moved the counter only.
    log.update(T0 + STEP, [reading(counter=2)])
    (client,) = log.clients
    assert client.anonymous and client.sessions == 0
    assert client.name == (
        "a client that connected and left between two samples, via 127.0.0.1:5432"
    )
    assert log.describe_first().startswith("1 legacy client, first: a client that connected")
    # A client seen during the cache wait that used the user after it, then left.
    log2 = LegacyLog()
    log2.update(T0, [reading(cron(), counter=1)], record=False)
    log2.update(T0 + STEP, [reading(counter=1)])
    assert log2.count == 0  # left, and used nothing since
    log2.update(T0 + 2 * STEP, [reading(cron(), counter=1)], record=False)
    log2.update(T0 + 3 * STEP, [reading(counter=2)])
    (client,) = log2.clients
    assert client.client == "10.0.0.5" and client.last_seen == T0 + 3 * STEP


def test_without_an_earlier_sample_a_counter_proves_nothing() -> None:
    log = LegacyLog()
    log.update(T0, [reading(counter=5)])
    log.update(T0 + STEP, [reading(counter=5)])
    assert log.count == 0
    # An instance that did not answer loses its baseline.
    log.update(T0 + 2 * STEP, [reading(error="connection refused")])
    log.update(T0 + 3 * STEP, [reading(counter=6)])
    assert log.count == 0
    log.update(T0 + 4 * STEP, [reading(counter=7)])
    assert log.count == 1


def test_statements_since_the_first_sample_go_to_the_client_that_ran_them() -> None:
    log = LegacyLog()
    # An observation carries the statements that grew since the previous one.
    before = (("SELECT * FROM invoices WHERE id = $1", 100), ("SELECT 1", 40))
    log.update(T0, [reading(cron(idle_for=5.0), counter="a", statements=before)])
    (client,) = log.clients
    assert client.statements == ()  # only a baseline so far
    after = (("SELECT * FROM invoices WHERE id = $1", 12), ("SELECT 1", 1))
    log.update(T0 + STEP, [reading(cron(idle_for=0.05), counter="b", statements=after)])
    (client,) = log.clients
    assert client.statements == (("SELECT * FROM invoices WHERE id = $1", 12), ("SELECT 1", 1))
    assert client.describe().endswith(", running 'SELECT * FROM invoices WHERE id = $1' (12x)")
    later = (("SELECT * FROM invoices WHERE id = $1", 8),)
    log.update(T0 + 2 * STEP, [reading(cron(idle_for=None), counter="c", statements=later)])
    (client,) = log.clients
    assert client.statements[0] == ("SELECT * FROM invoices WHERE id = $1", 20)


def test_an_idle_session_did_not_run_what_grew_a_short_login_did() -> None:
    log = LegacyLog()
    log.update(T0, [reading(cron(idle_for=60.0), counter=1, statements=(("SELECT 1", 3),))])
    grew = (("UPDATE jobs SET done = $1", 2),)
    log.update(T0 + STEP, [reading(cron(idle_for=60.2), counter=2, statements=grew)])
    named, anonymous = log.clients
    assert named.client == "10.0.0.5" and named.statements == ()
    assert anonymous.anonymous and anonymous.statements == (("UPDATE jobs SET done = $1", 2),)
    assert log.count == 2


def test_a_counter_change_is_explained_by_a_client_that_was_there() -> None:
    # MySQL/MariaDB count logins: a client that reconnects between two samples
    # shows as the same group, busy; a group that just left could have too.
    log = LegacyLog()
    log.update(T0, [reading(cron(idle_for=None), counter=10)])
    log.update(T0 + STEP, [reading(cron(idle_for=0.0), counter=11)])
    log.update(T0 + 2 * STEP, [reading(counter=12)])
    assert [c.client for c in log.clients] == ["10.0.0.5"]
    # An idle group there all along could not; nor can a group seen only now
    # explain what happened before, but it is new, so it might have.
    log.update(T0 + 3 * STEP, [reading(cron(idle_for=60.0), counter=12)])
    log.update(T0 + 4 * STEP, [reading(cron(idle_for=60.2), counter=13)])
    assert [c.anonymous for c in log.clients] == [False, True]


def test_a_count_that_trails_a_session_gone_is_that_client() -> None:
    # Seen on MariaDB: the counters are read before the processlist, so a job's
    # quit (performance_schema counts it as a statement) between the two reads
    # shows in the counters of the sample after the one whose list saw it go.
    log = LegacyLog()
    log.update(T0, [reading(cron(idle_for=0.0), counter=(5, 31))])
    log.update(T0 + STEP, [reading(counter=(6, 33))])  # left, having run two
    log.update(T0 + 2 * STEP, [reading(counter=(6, 34))])  # its quit
    (client,) = log.clients
    assert client.client == "10.0.0.5" and client.last_seen == T0 + 2 * STEP
    assert log.count == 1
    # Only one sample late: a count with no session around it is another client.
    log.update(T0 + 3 * STEP, [reading(counter=(6, 34))])
    log.update(T0 + 4 * STEP, [reading(counter=(7, 36))])
    assert [c.anonymous for c in log.clients] == [False, True]
    # And only when nothing of this sample explains it: then the new client ran it.
    log.update(T0 + 5 * STEP, [reading(cron(idle_for=0.0), counter=(8, 38))])
    log.update(T0 + 6 * STEP, [reading(counter=(8, 40))])
    mine = (("SELECT 1", 1),)
    other = SessionGroup("10.0.0.6", "report", 1, database="db1", idle_for=0.0)
    log.update(T0 + 7 * STEP, [reading(other, counter=(9, 41), statements=mine)])
    cron_client = next(c for c in log.clients if c.client == "10.0.0.5")
    assert cron_client.last_seen == T0 + 6 * STEP and cron_client.statements == ()
    assert log.count == 3


def test_a_resumed_drain_knows_who_was_there_at_the_last_sample() -> None:
    # The next run's first sample has no previous one: the job's quit between its two
    # reads shows in the second sample, and the job was what the last run saw last.
    log = LegacyLog()
    log.update(T0, [reading(cron(idle_for=0.0), counter=(5, 31))])
    log.update(T0 + STEP, [reading(cron(idle_for=0.0), counter=(6, 33))])
    resumed = LegacyLog.from_list(json.loads(json.dumps(log.to_list())))
    resumed.update(T0 + 9, [reading(counter=(6, 35))])  # gone; nothing to compare with
    resumed.update(T0 + 9 + STEP, [reading(counter=(6, 36))])  # its quit
    (client,) = resumed.clients
    assert client.client == "10.0.0.5" and client.last_seen == T0 + 9 + STEP
    # Only the clients of that instance seen at its last sample; never an anonymous one.
    other = LegacyLog()
    other.update(T0, [reading(counter=1)])
    other.update(T0 + STEP, [reading(counter=2)])  # between two samples
    other.update(T0 + 2 * STEP, [reading(cron(), counter=2, instance=DB2)])
    resumed = LegacyLog.from_list(json.loads(json.dumps(other.to_list())))
    resumed.update(T0 + 9, [reading(counter=2), reading(counter=2, instance=DB2)])
    resumed.update(T0 + 9 + STEP, [reading(counter=3), reading(counter=2, instance=DB2)])
    anonymous, _ = sorted(resumed.clients, key=lambda c: c.client)
    assert anonymous.anonymous and anonymous.last_seen == T0 + 9 + STEP
    assert resumed.count == 2


def test_texts_equal_once_shortened_are_one_statement() -> None:
    log = LegacyLog()
    log.update(T0, [reading(counter=1)])
    same = "SELECT " + "x" * 70
    grew = ((same + " /* a */", 3), (same + " /* b */", 4), ("SELECT 2", 5))
    log.update(T0 + STEP, [reading(counter=2, statements=grew)])
    (client,) = log.clients
    assert client.statements == ((shorten(same), 7), ("SELECT 2", 5))


def test_a_server_restart_is_no_use() -> None:
    log = LegacyLog()
    log.update(T0, [reading(counter=(1, 5), statements=(("SELECT 1", 9),))])
    log.update(T0 + 10, [reading(counter=(0, 0), statements=(), started=T0 + 8)])
    assert log.count == 0
    # The server start moves by a second between samples (now - uptime): no restart.
    log.update(T0 + 11, [reading(counter=(0, 0), started=T0 + 9)])
    log.update(T0 + 12, [reading(counter=(1, 1), started=T0 + 8)])
    assert log.count == 1


def test_at_most_five_are_listed_and_every_one_is_counted_once() -> None:
    log = LegacyLog()
    for i in range(8):
        group = SessionGroup(f"10.0.1.{i}", f"job-{i}", 1, database="db1")
        log.update(T0 + i, [reading(group, instance=DB1 if i % 2 else DB2)])
    assert log.count == 8 and len(log.clients) == KEEP
    assert [c.application for c in log.clients] == [f"job-{i}" for i in range(3, 8)]
    assert log.describe_first() == (
        "8 legacy clients, first: 10.0.1.3 (job-3) on db1 via 127.0.0.1:5432"
    )
    # job-0 comes back: listed again, not counted twice, even after a resume.
    resumed = LegacyLog.from_list(json.loads(json.dumps(log.to_list())))
    assert resumed.count == 8
    again = SessionGroup("10.0.1.0", "job-0", 1, database="db1")
    resumed.update(T0 + 20, [reading(again, instance=DB2)])
    assert resumed.count == 8
    assert resumed.clients[-1].application == "job-0"
    assert resumed.clients[-1].first_seen == T0 + 20  # its earlier details were dropped


def test_six_clients_at_once_keep_a_steady_list() -> None:
    groups = [SessionGroup(f"10.0.1.{i}", "api", 1) for i in range(6)]
    log = LegacyLog()
    for n in range(5):
        log.update(T0 + n * STEP, [reading(*groups)])
    assert log.count == 6
    assert [c.client for c in log.clients] == [f"10.0.1.{i}" for i in range(1, 6)]
    assert all(c.first_seen == T0 for c in log.clients)


def test_the_list_is_compact_and_round_trips() -> None:
    long = "x" * 200
    group = SessionGroup("2001:db8::1", long, 2, database=long, started=T0 - 5.55555)
    log = LegacyLog()
    log.update(T0, [reading(group, counter=1, statements=((long, 3),))])
    log.update(T0 + STEP, [reading(group, counter=2, statements=((long, 6),))])
    entries = log.to_list()
    (entry,) = entries
    assert set(entry) == {"i", "c", "a", "d", "f", "l", "n", "t", "s"}
    assert len(entry["a"]) == len(entry["d"]) == len(entry["s"][0][0]) == 60
    assert entry["a"].endswith("…") and entry["t"] == round(T0 - 5.55555, 1)
    back = LegacyLog.from_list(entries)
    assert back.to_list() == entries
    assert back.clients == [LegacyClient.from_dict(entry)]
    # A resumed log keeps adding to the same client.
    back.update(T0 + 1, [reading(group, counter=2, statements=((long, 9),))], record=False)
    back.update(T0 + 1.2, [reading(group, counter=3, statements=((long, 1),))])
    (client,) = back.clients
    assert client.first_seen == round(T0, 1) and client.statements == (("x" * 59 + "…", 7),)
    # Unknown or damaged entries are left out rather than failing the rotation.
    assert LegacyLog.from_list([{"i": "h:1"}, {"more": "x"}, *entries]).count == 1


def test_shrink_drops_the_stalest_and_keeps_the_count() -> None:
    log = LegacyLog()
    for i in range(3):
        group = SessionGroup(f"10.0.0.{i}", "", 1, idle_for=None)
        log.update(T0 + i, [reading(group, counter=i, statements=(("SELECT 1", i),))])
    # Each ran a statement, but the first was seen in the baseline sample only
    # (it left at the second one, so it is credited with what grew then).
    assert [bool(c.statements) for c in log.clients] == [True, True, True]
    steps = [log.to_list()]
    while (smaller := shrink(steps[-1])) is not None:
        steps.append(smaller)
    sizes = [len(json.dumps(s)) for s in steps]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    seen = [LegacyLog.from_list(s) for s in steps]
    assert [b.count for b in seen] == [3] * len(steps)
    assert [[c.client for c in b.clients] for b in seen] == [
        ["10.0.0.0", "10.0.0.1", "10.0.0.2"],
        ["10.0.0.1", "10.0.0.2"],  # the stalest go first
        # 10.0.0.1 left when 10.0.0.2 came, so both were last seen then; of
        # those, the one known longer stays.
        ["10.0.0.1"],
        ["10.0.0.1"],  # then the hashes of those no longer listed
        ["10.0.0.1"],  # then its statements
        [],  # then the last one
    ]
    assert [bool(b.clients and b.clients[0].statements) for b in seen[2:]] == [1, 1, 0, 0]
    assert steps[-1] == [{"more": 3, "ids": ""}]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 12), max_size=4), max_size=30))
def test_counted_once_whatever_the_order(samples: list[list[int]]) -> None:
    log = LegacyLog()
    seen: set[int] = set()
    for n, ids in enumerate(samples):
        groups = [SessionGroup(f"10.0.0.{i}", "", 1) for i in sorted(set(ids))]
        log.update(T0 + n, [reading(*groups)])
        seen |= set(ids)
        if n % 7 == 6:  # a resume now and then
            log = LegacyLog.from_list(json.loads(json.dumps(log.to_list())))
    assert log.count == len(seen)
    assert len(log.clients) == min(KEEP, len(seen))


#: Who ran a rotation, as long as a user@host and an ARN can be.
PERSON = Actor("person", "u" * 200, "arn:aws:sts::123456789012:assumed-role/" + "r" * 200)
SCHEDULE = Actor("schedule", None, "arn:aws:sts::123456789012:assumed-role/" + "s" * 200)


def test_the_state_stays_under_4_kb_with_16_instances_of_legacy_clients() -> None:
    instances = [
        f"app-prod-reader-{i:02d}.c0abcdefghij.eu-west-1.rds.amazonaws.com:5432" for i in range(16)
    ]
    log = LegacyLog()
    for n in range(3):
        readings = []
        for i, inst in enumerate(instances):
            groups = [
                SessionGroup(
                    f"2001:db8:ffff:{i:x}::{j}",
                    f"lambda-{'x' * 60}-{j}",
                    1,
                    database="d" * 63,
                    idle_for=None if j else 100.0,  # ::1 is busy, ::0 idle
                )
                for j in range(2)
            ]
            statements = tuple((f"SELECT {'c' * 90} /* {k} */", 100 * n + k) for k in range(5))
            readings.append(Reading(inst, Sessions(tuple(groups)), {"c": n}, statements=statements))
        log.update(T0 + n, readings)
    assert log.count == 16 * 2
    rotation = Rotation(
        id="r" * 12,
        from_color=Color.BLUE,
        to_color=Color.GREEN,
        phase=Phase.DRAIN,
        started_at=T0,
        switched_at=T0,
        client_ttl=60.0,
        min_drain=0.0,
        quiet=600.0,
        error="drain timed out after 900s: " + "x" * 270,
        evidence=Evidence(
            user="app",
            counters=dict.fromkeys(instances, "0123456789ab"),
            started=dict.fromkeys(instances, T0 - 86400),
            quiet_since=T0 + 1,
            last_use=T0,
            longest_gap=1.5,
            pauses=3,
            pause_sum=4.5,
            sampled_at=T0 + 2,
        ).to_dict(),
        legacy=log.to_list(),
        by=PERSON,
    )
    when = (T0, T0 + 1, {"drain": 1.0})
    history = [
        HistoryEntry(f"h{i}", "done", Color.GREEN, Color.BLUE, *when, by=PERSON, done_by=SCHEDULE)
        for i in range(20)
    ]
    state = State(
        "postgresql",
        {Color.BLUE: "app", Color.GREEN: "app_green"},
        group="app_owner",
        current=rotation,
        history=history,
        instances=instances,
        failures=2,
    )
    text = state.to_json()
    assert len(text.encode()) <= MAX_VALUE_BYTES
    back_state = State.from_json(text, where="test")
    kept = back_state.current
    assert kept is not None and back_state.failures == 2
    back = LegacyLog.from_list(kept.legacy)
    assert back.count == log.count  # the count survives whatever was dropped
    # The most recent client is still named, with its statements.
    (last,) = back.clients
    assert last.instance == instances[-1][:59] + "…" and last.statements
    assert state.history == history  # the state itself is left as it was
    # Who ran them went first, before any legacy client.
    newest = State.from_json(text, where="test").history[-1]
    assert newest.id == "h19" and newest.by is None and newest.done_by is None
    assert kept.by is None


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (
            "/* don't */ ALTER USER MAPPING FOR x SERVER y OPTIONS (password 'hunter2')",
            "ALTER USER …",
        ),
        ("SET app.k = E'a\\'hunter2'", "SET …"),
        ("SET app.api_key = sk_live_hunter2", "SET …"),
        ("ALTER ROLE \"app\" PASSWORD 'hunter2'", "ALTER ROLE …"),
        ("SELECT * FROM t WHERE a = $1 /* pw hunter2 */", "SELECT * FROM t WHERE a = $1"),
        ("SELECT E'a\\'hunter2' || 'c''hunter2', $q$hunter2$q$", "SELECT '…' || '…', $$…$$"),
        ("select * from x -- token hunter2", "select * from x"),
        ("SELECT password, $1 FROM users", "SELECT password …"),
        ("SELECT 'hunter2", "SELECT '…'"),  # cut inside the literal
        ('"hunter2" x', "…"),
    ],
)
def test_a_kept_statement_text_holds_no_value(sent: str, kept: str) -> None:
    assert safe_text(sent) == kept
    assert "hunter2" not in safe_text(sent)
