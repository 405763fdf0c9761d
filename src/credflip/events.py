"""A rotation's milestones as EventBridge events, for whoever subscribes to them.

Each :class:`~credflip.rotation.Milestone` is one event on a bus (``--events BUS``,
``$CREDFLIP_EVENTS``; the rotation Lambda's event key ``events`` or the template's
``EventBusName``): ``source`` is ``credflip``, ``detail-type`` one of
:data:`DETAIL_TYPES` (stable: rules match on them), ``detail`` a JSON object with the
env, the rotation, its colors and users, its phase and the seconds spent in each phase so
far, who runs it, the reason of a failure, a timeout or a halt, the legacy clients the
drain named, and what each milestone adds (:func:`detail`). Never a password: the
rotation scrubs its reasons of the run's secrets, and a URL's password is masked here too.

Sending never fails a rotation or holds it up: each ``PutEvents`` has 2 s to connect
and 2 s to read, two attempts in all (at most :data:`SEND_BOUND` seconds); a failure
(an error, or ``FailedEntryCount`` > 0) is one warning per run, without traceback or
secret, and the rotation goes on. An endpoint that cannot be reached is not tried again
in the same run, and a send that could not end before the caller's *deadline* (the
Lambda's time) is skipped. boto3 is imported only when a sender is made.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .aws_clients import error_code, make_client
from .durations import iso_utc
from .errors import UsageError
from .rotation.events import Event, Milestone, MilestoneKind
from .stores.base import Store

__all__ = [
    "ALARMING",
    "DETAIL_TYPES",
    "ENV_VAR",
    "SOURCE",
    "Bus",
    "EventSender",
    "detail",
    "entry",
    "parse_bus",
    "sender_for",
]

log = logging.getLogger("credflip.events")

SOURCE = "credflip"
#: The ``detail-type`` of each milestone.
DETAIL_TYPES: Mapping[MilestoneKind, str] = {
    "started": "Rotation Started",
    "switched": "Rotation Switched",
    "legacy_clients": "Drain Waiting On Legacy Clients",
    "drain_timeout": "Drain Timeout",
    "done": "Rotation Done",
    "failed": "Rotation Failed",
    "halted": "Env Halted",
    "rolled_back": "Rotation Rolled Back",
}
#: The detail-types the template's rule sends to the alarm topic.
ALARMING = ("Rotation Failed", "Env Halted", "Drain Timeout")
#: The bus when no option or event key names one (empty: no events).
ENV_VAR = "CREDFLIP_EVENTS"
#: The version of the detail's fields (a consumer can tell a change that breaks it).
DETAIL_VERSION = 1
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 2.0
ATTEMPTS = 2
#: The longest one send may take: every attempt's timeouts and botocore's pause between.
SEND_BOUND = ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + 2.0

_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
_ARN = re.compile(r"arn:aws[a-z-]*:events:([a-z0-9-]+):[0-9]{12}:event-bus/[A-Za-z0-9._/-]{1,256}")
#: ``scheme://user:password@``: a URL's password, wherever it might show.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"']+:)[^\s@\"']+@")


@dataclass(frozen=True)
class Bus:
    """An event bus as ``PutEvents`` names it (a name or an ARN), and its region when the
    ARN says."""

    name: str
    region: str | None = None


def parse_bus(text: str, *, what: str = "--events") -> Bus:
    """The bus *text* names, or :class:`UsageError` saying how to name one."""
    arn = _ARN.fullmatch(text)
    if arn is not None:
        return Bus(text, arn[1])
    if _NAME.fullmatch(text):
        return Bus(text)
    raise UsageError(
        f"invalid {what} {text!r}: give an EventBridge bus name (default, or one of letters, "
        f"digits, '.', '_', '-') or its ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME)"
    )


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def detail(milestone: Milestone) -> dict[str, Any]:
    """The event's ``detail``: the same fields for every milestone (None where unknown),
    then what the milestone adds."""
    m = milestone
    fields: dict[str, Any] = {
        "version": DETAIL_VERSION,
        "milestone": m.kind,
        "milestone_id": m.id,
        "env": m.env,
        "prefix": m.prefix,
        "rotation_id": m.rotation_id,
        "from_color": None if m.from_color is None else m.from_color.value,
        "to_color": None if m.to_color is None else m.to_color.value,
        "from_user": m.from_user,
        "to_user": m.to_user,
        "phase": None if m.phase is None else m.phase.value,
        "started_at": iso_utc(m.started_at),
        "timings": dict(m.timings),
        "reason": m.reason,
        "actor": None if m.actor is None else m.actor.to_dict(),
        "legacy_client_count": m.legacy.count,
        "legacy_clients": m.legacy.to_json(),
    }
    fields.update(m.extra)
    return dict(_json_ready(fields))


def entry(milestone: Milestone, bus: str) -> dict[str, Any]:
    """The ``PutEvents`` entry of *milestone* on *bus*."""
    text = json.dumps(detail(milestone), separators=(",", ":"))
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPES[milestone.kind],
        "Detail": _URL_PASSWORD.sub(r"\1***@", text),
        "EventBusName": bus,
    }


def _describe(exc: BaseException) -> str:
    """One line on why a send failed: AWS's code and message, or the error's own."""
    code = error_code(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
        text = f"{code}: {message}" if message else code
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(_URL_PASSWORD.sub(r"\1***@", text).split())[:300]


def _unreachable(exc: BaseException) -> bool:
    """An error that trying again in this run would only repeat, slowly: no connection,
    a timeout, no credentials."""
    from botocore import exceptions

    return isinstance(
        exc, exceptions.ConnectionError | exceptions.HTTPClientError | exceptions.NoCredentialsError
    )


class EventSender:
    """Sends milestones to one bus; as an ``on_event`` callback it picks them out of a
    rotation's events. Never raises."""

    def __init__(
        self,
        bus: Bus,
        client: Any,
        *,
        deadline: float | None = None,
        warn: Callable[[str], None] = lambda message: log.warning("credflip: %s", message),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.client = client
        #: A ``clock()`` instant by which every send must have ended (None: no limit).
        self.deadline = deadline
        self.warn = warn
        self.clock = clock
        self.sent = 0
        self.failed = 0
        #: Set when the endpoint could not be reached: this run sends no more.
        self.off = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Milestone):
            self.send(event)

    def send(self, milestone: Milestone) -> bool:
        """Put *milestone* on the bus; False (and one warning per run) when it was not."""
        kind = DETAIL_TYPES[milestone.kind]
        if self.off:
            return self._failed(kind, "an earlier event of this run could not reach EventBridge")
        if self.deadline is not None and self.clock() + SEND_BOUND > self.deadline:
            return self._failed(kind, "the time left could not cover a send")
        try:
            answer = self.client.put_events(Entries=[entry(milestone, self.bus.name)])
        except Exception as exc:  # a failed event is a warning, never a failed rotation
            self.off = _unreachable(exc)
            return self._failed(kind, _describe(exc))
        if answer.get("FailedEntryCount"):
            failed = (answer.get("Entries") or [{}])[0]
            return self._failed(
                kind, f"{failed.get('ErrorCode', 'failed')}: {failed.get('ErrorMessage', '')}"
            )
        self.sent += 1
        log.info("credflip: event %r sent to EventBridge bus %s", kind, self.bus.name)
        return True

    def _failed(self, kind: str, why: str) -> bool:
        self.failed += 1
        message = (
            f"event {kind!r} was not sent to EventBridge bus {self.bus.name} ({why}); the "
            f"rotation goes on"
        )
        if self.failed == 1:
            self.warn(message + "; later events of this run that fail are not reported")
        else:
            log.info("credflip: %s", message)
        return False


def store_region(store: Store | None) -> str | None:
    """The region of an SSM store, where a bus given by name is looked for first."""
    inner: Any = getattr(store, "inner", store)  # a FencedStore's store
    if inner is None or getattr(inner, "scheme", None) != "ssm":
        return None
    region = inner.client.meta.region_name
    return None if region is None else str(region)


def sender_for(
    spec: str | None,
    *,
    store: Store | None = None,
    deadline: float | None = None,
    warn: Callable[[str], None] | None = None,
    what: str = "--events",
) -> EventSender | None:
    """A sender to the bus *spec* names (None or empty: no events), in the ARN's region,
    else the SSM *store*'s, else ``$AWS_REGION``, else the AWS configuration's;
    :class:`UsageError` for a bad name, no region or an AWS configuration botocore
    refuses (nothing was sent)."""
    if not spec:
        return None
    bus = parse_bus(spec, what=what)
    from botocore.exceptions import BotoCoreError, NoRegionError

    try:
        client = make_client(
            "events",
            bus.region or store_region(store),  # else $AWS_REGION (make_client)
            attempts=ATTEMPTS,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )
    except NoRegionError:
        raise UsageError(
            f"{what} {spec}: no AWS region is set: give the bus's ARN or set AWS_REGION"
        ) from None
    except BotoCoreError as exc:  # the AWS configuration itself (a profile it lacks...)
        raise UsageError(
            f"{what} {spec}: cannot make an EventBridge client: {_describe(exc)}; fix the AWS "
            f"configuration (AWS_PROFILE, AWS_CONFIG_FILE) or run without {what}"
        ) from None
    if warn is None:
        return EventSender(bus, client, deadline=deadline)
    return EventSender(bus, client, deadline=deadline, warn=warn)
