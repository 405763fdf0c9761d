"""A rotation's milestones as EventBridge events, received from moto's EventBridge.

Each test's bus has a rule (``source: credflip``) that delivers to an SQS queue, as a
subscriber would: what the queue receives is what EventBridge delivered (moto's server
delivers to SQS while it answers ``PutEvents``, so the queue has it when the command
returns). Rotations run through the command line on SQLite and through the rotation
Lambda on moto's SSM, on a real PostgreSQL. Where EventBridge cannot be reached the
endpoint is a :class:`~helpers.Listener` (accepts, never answers); access denied comes
from a moto server that enforces IAM (:mod:`moto_iam`).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from apps import App
from helpers import (
    FAST,
    LambdaContext,
    Listener,
    command,
    fresh,
    leaks,
    rotate_args,
    stored_url,
)
from legacy_clients import Legacy
from moto_iam import iam_user

from credflip import commands
from credflip.aws_lambda import handler
from credflip.errors import UsageError
from credflip.events import ATTEMPTS, DETAIL_TYPES, EventSender, parse_bus, sender_for
from credflip.layout import Color, Layout
from credflip.rotation import Milestone
from credflip.stores.sqlite import SqliteStore

REGION = "us-east-1"
#: A probe no run gets through: every rotation fails in verify.
FAILING_PROBE = "SELECT * FROM nowhere"
WARNING = "credflip: warning: event "


@dataclass
class Bus:
    """A bus whose rule delivers every credflip event to a queue."""

    name: str
    queue: str
    sqs: Any
    #: The milestone ids received so far.
    seen: set[str] = field(default_factory=set)

    def received(self, *, copies: bool = False) -> list[dict[str, Any]]:
        """The events delivered since the last call, in order; without *copies*, a second
        event of a milestone already received (a send tried again when its first reply
        was lost on a busy machine: EventBridge delivers both) is left out."""
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
            if not got.get("Messages"):
                return out
            for message in got["Messages"]:
                event = json.loads(message["Body"])
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
                milestone = event["detail"]["milestone_id"]
                if copies or milestone not in self.seen:
                    out.append(event)
                self.seen.add(milestone)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail-type"] for e in events]


@pytest.fixture
def bus(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bus:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", moto_endpoint)
    monkeypatch.delenv("CREDFLIP_EVENTS", raising=False)
    name = f"credflip-{secrets.token_hex(4)}"
    events = boto3.client("events", region_name=REGION, endpoint_url=moto_endpoint)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_endpoint)
    events.create_event_bus(Name=name)
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    events.put_rule(Name="all", EventBusName=name, EventPattern='{"source": ["credflip"]}')
    events.put_targets(
        Rule="all", EventBusName=name, Targets=[{"Id": "queue", "Arn": arn["QueueArn"]}]
    )
    return Bus(name, queue, sqs)


@pytest.fixture
def listener() -> Iterator[Listener]:
    port = Listener()
    yield port
    port.close()


@pytest.fixture
def env(app: App, sqlite_store: SqliteStore, layout: Layout) -> Layout:
    commands.init(sqlite_store, layout, admin_url=app.admin_url, writer_url=app.url)
    return layout


def passwords(app: App, store: SqliteStore, layout: Layout) -> list[str]:
    """Every password of the env: blue's, the admin's, and green's (generated)."""
    green = stored_url(store, layout, Color.GREEN).password
    assert green and app.admin_url.password
    return [app.password, app.admin_url.password, green]


# -- the default: no bus, no call -------------------------------------------------------


def test_without_events_a_rotation_sends_nothing(
    app: App,
    sqlite_store: SqliteStore,
    env: Layout,
    cli: Any,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CREDFLIP_EVENTS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{listener.port}")
    done = cli(*rotate_args(app, sqlite_store, env, *FAST))
    rolled = cli(*command("rollback", app, sqlite_store, env, "--yes"))
    assert (done.code, rolled.code) == (0, 0), done.err + rolled.err
    assert listener.attempts() == 0  # no connection to EventBridge at all
    assert WARNING not in done.err + rolled.err


# -- what arrives -----------------------------------------------------------------------


def test_a_rotation_and_its_rollback_arrive_with_their_detail_and_no_password(
    app: App, sqlite_store: SqliteStore, env: Layout, cli: Any, bus: Bus
) -> None:
    done = cli(*rotate_args(app, sqlite_store, env, *FAST, "--events", bus.name))
    assert done.code == 0, done.err
    rotated = bus.received()
    assert types(rotated) == ["Rotation Started", "Rotation Switched", "Rotation Done"]
    started, switched, finished = (e["detail"] for e in rotated)
    for event in rotated:
        assert event["source"] == "credflip" and event["region"] == REGION
    rid = started["rotation_id"]
    for detail, milestone, phase in (
        (started, "started", "prepare"),
        (switched, "switched", "switch"),
        (finished, "done", "done"),
    ):
        assert detail["milestone"] == milestone and detail["phase"] == phase, detail
        assert (detail["env"], detail["prefix"], detail["rotation_id"]) == (env.env, "/db", rid)
        assert (detail["from_color"], detail["to_color"]) == ("blue", "green")
        assert (detail["from_user"], detail["to_user"]) == (app.user, app.green)
        assert detail["reason"] is None and detail["legacy_client_count"] == 0
        assert detail["actor"]["via"] == "person" and "@" in detail["actor"]["user"]
        assert detail["version"] == 1 and detail["started_at"].endswith("Z")
    assert started["timings"] == {}
    assert set(switched["timings"]) == {"prepare", "verify", "switch"}
    assert switched["switched_at"].endswith("Z")
    assert set(finished["timings"]) == {"prepare", "verify", "switch", "drain", "retire", "done"}
    assert finished["drain_seconds"] > 0 and finished["terminated"] == 0

    rolled = cli(*command("rollback", app, sqlite_store, env, "--yes", "--events", bus.name))
    assert rolled.code == 0, rolled.err
    (back,) = bus.received()
    assert back["detail-type"] == "Rotation Rolled Back"
    detail = back["detail"]
    assert (detail["from_color"], detail["to_color"]) == ("green", "blue")
    assert (detail["from_user"], detail["to_user"]) == (app.green, app.user)
    assert detail["rolled_back_rotation"] == rid and detail["phase"] == "done"
    assert detail["flipped"] is True and detail["switched"] is True

    texts = [json.dumps(e) for e in [*rotated, back]] + [done.text, rolled.text]
    found = leaks(passwords(app, sqlite_store, env), texts)
    assert not found, found


def test_a_failing_rotation_sends_failed_then_halted_and_a_resumed_one_no_second_start(
    app: App, sqlite_store: SqliteStore, env: Layout, cli: Any, bus: Bus
) -> None:
    failing = ("--probe", FAILING_PROBE, "--halt-after", "2", "--events", bus.name)
    first = cli(*rotate_args(app, sqlite_store, env, *FAST, *failing))
    assert first.code == 1 and "nowhere" in first.err
    assert types(bus.received()) == ["Rotation Started", "Rotation Failed"]
    second = cli(*rotate_args(app, sqlite_store, env, *FAST, *failing))
    assert second.code == 1
    failed, halted = bus.received()
    assert (failed["detail-type"], halted["detail-type"]) == ("Rotation Failed", "Env Halted")
    assert failed["detail"]["phase"] == "verify" and "nowhere" in failed["detail"]["reason"]
    assert failed["detail"]["error"] and failed["detail"]["rotation_id"]
    assert halted["detail"]["failures"] == 2 and "nowhere" in halted["detail"]["reason"]
    assert halted["detail"]["since"].endswith("Z")
    assert halted["detail"]["rotation_id"] == failed["detail"]["rotation_id"]
    # Halted: a refused run sends nothing. Lifted, the rotation resumes: no second start.
    refused = cli(*rotate_args(app, sqlite_store, env, *FAST, "--events", bus.name))
    assert refused.code == 6 and bus.received() == []
    assert cli("unhalt", "--env", env.env, "--store", sqlite_store.url).code == 0
    done = cli(*rotate_args(app, sqlite_store, env, *FAST, "--events", bus.name))
    assert done.code == 0, done.err
    resumed = bus.received()
    assert types(resumed) == ["Rotation Switched", "Rotation Done"]
    assert resumed[0]["detail"]["rotation_id"] == failed["detail"]["rotation_id"]
    texts = [json.dumps(e) for e in [failed, halted, *resumed]]
    found = leaks(passwords(app, sqlite_store, env), texts)
    assert not found, found


def test_a_drain_timeout_names_the_legacy_client_once_per_rotation(
    app: App, sqlite_store: SqliteStore, env: Layout, cli: Any, bus: Bus
) -> None:
    short = ("--client-ttl", "300ms", "--quiet", "1s", "--events", bus.name)
    address = f"{app.url.host}:{app.url.port}"
    with Legacy(app, app.url, 0.3):  # blue's URL, read once: it never follows
        first = cli(*rotate_args(app, sqlite_store, env, *short, "--drain-timeout", "3s"))
        assert first.code == 4, first.err
        events = bus.received()
        assert types(events) == [
            "Rotation Started",
            "Rotation Switched",
            "Drain Waiting On Legacy Clients",
            "Drain Timeout",
        ]
        named, timeout = events[2]["detail"], events[3]["detail"]
        assert named["phase"] == "drain" and named["user"] == app.user and named["waited"] > 0
        assert named["legacy_client_count"] == 1
        (client,) = named["legacy_clients"]
        # Its short logins are seen by a counter (anonymous) or open (by its address).
        assert client["instance"] == address and client["client"] in (None, "127.0.0.1")
        assert timeout["phase"] == "drain" and timeout["reason"].startswith("drain timed out")
        # By then the drain may have seen it both ways: one client or two, the first named.
        assert client["name"] in timeout["reason"] and timeout["legacy_client_count"] >= 1
        # A second run that times out again tells nothing new.
        again = cli(*rotate_args(app, sqlite_store, env, *short, "--drain-timeout", "3s"))
        assert again.code == 4, again.err
        assert bus.received() == []
    done = cli(*rotate_args(app, sqlite_store, env, *short))
    assert done.code == 0, done.err
    (finished,) = bus.received()
    assert finished["detail-type"] == "Rotation Done"
    assert finished["detail"]["rotation_id"] == named["rotation_id"]
    # What the drain saw in all its runs (the second may have added the anonymous one).
    assert finished["detail"]["legacy_client_count"] >= timeout["legacy_client_count"]


def test_the_scheduled_rotator_sends_to_the_bus_of_its_environment(
    app: App,
    lambda_event: dict[str, Any],
    layout: Layout,
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CREDFLIP_EVENTS", bus.name)  # what the template sets
    done = handler(lambda_event, LambdaContext(30))
    assert done["status"] == "done", done
    events = bus.received()
    assert types(events) == ["Rotation Started", "Rotation Switched", "Rotation Done"]
    actor = events[0]["detail"]["actor"]
    assert actor["via"] == "schedule" and actor["arn"] and "user" not in actor
    assert all(e["detail"]["rotation_id"] == done["rotation"] for e in events)
    # The event key overrides the environment: empty sends nothing.
    assert handler({**lambda_event, "events": ""}, LambdaContext(30))["status"] == "done"
    assert bus.received() == []
    # A bus that does not exist: one warning, and the rotation is done all the same.
    caplog.set_level(logging.WARNING, logger="credflip.events")
    missing = handler({**lambda_event, "events": "no-such-bus"}, LambdaContext(30))
    assert missing["status"] == "done", missing
    warned = [r.getMessage() for r in caplog.records if r.name == "credflip.events"]
    assert len(warned) == 1 and "ResourceNotFoundException" in warned[0], warned
    assert "Rotation Started" in warned[0] and bus.received() == []


# -- a failure to send never fails a rotation ------------------------------------------


@pytest.fixture(params=["missing", "denied", "down"])
def broken(
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    """Where sends fail: a bus that does not exist, a caller without events:PutEvents,
    an endpoint that never answers. The bus to give, and what the warning says."""
    monkeypatch.delenv("CREDFLIP_EVENTS", raising=False)
    if request.param == "missing":
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", moto_endpoint)
        return "no-such-bus", "ResourceNotFoundException"
    if request.param == "denied":
        endpoint = request.getfixturevalue("moto_with_iam")
        name = f"app{secrets.token_hex(3)}"
        creds = iam_user(endpoint, name, "application-policy.json")
        monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
        return "default", "AccessDenied"
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{listener.port}")
    return "default", "ReadTimeoutError"


def test_a_failed_send_is_one_warning_and_the_rotation_finishes(
    app: App,
    sqlite_store: SqliteStore,
    env: Layout,
    cli: Any,
    broken: tuple[str, str],
    listener: Listener,
) -> None:
    name, why = broken
    done = cli(*rotate_args(app, sqlite_store, env, *FAST, "--events", name))
    assert done.code == 0, done.err
    warned = [line for line in done.err.splitlines() if line.startswith(WARNING)]
    assert len(warned) == 1, done.err
    assert (
        "'Rotation Started'" in warned[0] and why in warned[0] and "rotation goes on" in warned[0]
    )
    assert "Traceback" not in done.err and f"green ({app.green}): done" in done.out
    assert fresh(sqlite_store, env).color is Color.GREEN
    if why == "ReadTimeoutError":
        # One send, tried twice, then no more in this run: the rotation was held up once.
        assert listener.attempts() == ATTEMPTS
    found = leaks(passwords(app, sqlite_store, env), [done.text])
    assert not found, found


def test_the_rotator_policy_of_the_docs_may_put_events(moto_with_iam: str) -> None:
    name = f"rot{secrets.token_hex(3)}"
    creds = iam_user(moto_with_iam, name, "rotator-policy.json")
    client = boto3.client(
        "events", region_name=REGION, endpoint_url=moto_with_iam, **creds
    )  # the default bus exists in every account
    sender = EventSender(parse_bus("default"), client)
    assert sender.send(Milestone("started", "prod", "/db")) and sender.sent == 1
    denied = iam_user(moto_with_iam, f"app{secrets.token_hex(3)}", "application-policy.json")
    client = boto3.client("events", region_name=REGION, endpoint_url=moto_with_iam, **denied)
    warned: list[str] = []
    sender = EventSender(parse_bus("default"), client, warn=warned.append)
    assert not sender.send(Milestone("started", "prod", "/db")) and len(warned) == 1


def test_an_entry_eventbridge_refuses_is_a_failed_send(bus: Bus) -> None:
    """``PutEvents`` answers 200 with ``FailedEntryCount`` 1 when it refuses an entry: moto
    does for a detail that is no JSON, so the request is spoiled on its way out."""
    warned: list[str] = []
    sender = sender_for(bus.name, warn=warned.append)
    assert sender is not None

    def spoil(params: dict[str, Any], **_kwargs: Any) -> None:
        params["Entries"][0]["Detail"] = "{not json"

    sender.client.meta.events.register("before-parameter-build.events.PutEvents", spoil)
    assert not sender.send(Milestone("done", "prod", "/db"))
    assert sender.failed == 1 and len(warned) == 1 and "MalformedDetail" in warned[0]
    assert bus.received() == []


def test_a_send_whose_reply_was_lost_delivers_a_copy_with_the_same_milestone_id(
    bus: Bus,
) -> None:
    """botocore tries ``PutEvents`` again when its reply is lost (a read timeout): the
    first attempt was applied, so the bus gets the event twice, and the copy is told
    apart by its ``milestone_id``. The fault is real HTTP: a ``before-send`` handler sends
    the signed request to moto itself, then raises the read timeout."""
    from botocore.exceptions import ReadTimeoutError

    sender = sender_for(bus.name)
    assert sender is not None
    lost: list[str] = []

    def lose_first_reply(request: Any, **_kwargs: Any) -> None:
        if lost:
            return
        applied = urllib.request.Request(
            request.url, data=request.body, headers=dict(request.headers), method=request.method
        )
        with urllib.request.urlopen(applied, timeout=10) as reply:
            lost.append(reply.read().decode())
        raise ReadTimeoutError(endpoint_url=request.url)

    sender.client.meta.events.register_first("before-send.events.PutEvents", lose_first_reply)
    first, second = Milestone("done", "prod", "/db"), Milestone("done", "prod", "/db")
    assert first.id != second.id and first == second  # an id of its own, not compared
    assert sender.send(first) and sender.failed == 0 and len(lost) == 1
    events = bus.received(copies=True)
    assert [e["detail"]["milestone_id"] for e in events] == [first.id, first.id]
    assert bus.received() == []  # both were taken off the queue
    assert sender.send(second)
    assert [e["detail"]["milestone_id"] for e in bus.received()] == [second.id]


def test_a_send_that_could_not_end_before_the_deadline_is_not_tried(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EVENTBRIDGE", f"http://127.0.0.1:{listener.port}")
    now = [100.0]
    warned: list[str] = []
    sender = sender_for("default", deadline=105.0, warn=warned.append)
    assert sender is not None
    sender.clock = lambda: now[0]
    assert not sender.send(Milestone("failed", "prod", "/db", reason="x"))
    assert listener.attempts() == 0 and len(warned) == 1 and "time left" in warned[0]


def test_bad_bus_names_are_refused_before_anything_runs(
    app: App, sqlite_store: SqliteStore, env: Layout, cli: Any
) -> None:
    before = sqlite_store.get(env.state)
    bad = cli(*rotate_args(app, sqlite_store, env, "--events", "no bus!"))
    assert bad.code == 2 and bad.err.startswith("credflip: error: invalid --events 'no bus!'")
    assert sqlite_store.get(env.state) == before
    with pytest.raises(UsageError, match="invalid events"):
        handler({"env": env.env, "events": "arn:aws:sqs:us-east-1:1:q"}, LambdaContext(30))
    assert parse_bus("arn:aws:events:eu-west-1:123456789012:event-bus/ops").region == "eu-west-1"
    assert set(DETAIL_TYPES.values()) >= {"Drain Waiting On Legacy Clients", "Env Halted"}


def test_the_rotators_deadlines_count_from_when_it_read_the_time_left(
    lambda_event: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's first answers (halt, window, admin URL) take time the invocation no
    longer has: the rotation's deadline and the sends' end are counted from the moment
    the time left was read, not from after those answers (a slow store there would push
    both past the margin kept to record the state and free the lock)."""
    from credflip import aws_lambda
    from credflip.errors import LockHeld

    real_gate, real_sender_for = aws_lambda._gate, aws_lambda.sender_for
    seen: dict[str, float] = {}

    def slow_gate(*args: Any, **kwargs: Any) -> Any:
        answer = real_gate(*args, **kwargs)
        time.sleep(0.5)  # a store slow to answer (no synchronisation: only time passing)
        return answer

    def sender_for(*args: Any, **kwargs: Any) -> Any:
        seen["sends_end"] = kwargs["deadline"]
        return real_sender_for(*args, **kwargs)

    def rotate(*_args: Any, options: Any, **_kwargs: Any) -> Any:
        seen["deadline"] = options.deadline
        raise LockHeld("held by the test")

    monkeypatch.setattr(aws_lambda, "_gate", slow_gate)
    monkeypatch.setattr(aws_lambda, "sender_for", sender_for)
    monkeypatch.setattr(aws_lambda, "rotate", rotate)
    context = LambdaContext(60)
    answer = handler({**lambda_event, "events": bus.name, "margin": "10s"}, context)
    assert answer["status"] == "locked", answer
    assert seen["deadline"] <= context.until - 10, (seen, context.until)
    assert seen["sends_end"] <= context.until - 5, (seen, context.until)


def test_a_client_that_cannot_be_made_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A profile that does not exist (botocore's ProfileNotFound when the client is made):
    credflip's error naming the bus and the cause, before anything runs, not a traceback."""
    config = tmp_path / "config"
    config.write_text("[default]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(UsageError, match=r"--events default: .*no-such-profile"):
        sender_for("default")


def test_a_bus_by_name_is_in_aws_region_as_the_error_and_readme_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """botocore reads AWS_DEFAULT_REGION and the profile's region, not AWS_REGION; the
    error for no region and the README tell to set AWS_REGION (what Lambda sets too)."""
    config = tmp_path / "config"
    config.write_text("[default]\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(UsageError, match="set AWS_REGION"):
        sender_for("default")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    sender = sender_for("default")
    assert sender is not None and sender.client.meta.region_name == "eu-west-1"
