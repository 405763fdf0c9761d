"""Who runs a rotation or a rollback, for the history: a person or a schedule, and as whom.

An :class:`Actor` says how the run was started (``via``: ``person`` at the
command line, ``schedule`` for the rotation Lambda, ``program`` for a program
that calls the Python API without saying), the local ``user@host`` (not in a
Lambda, where it names a sandbox) and, on AWS, the caller identity: the ARN
``sts:GetCallerIdentity`` answers, asked once per process and only when the
store is SSM (or in the Lambda). That call needs no IAM permission; when STS
cannot be reached (a VPC without an STS endpoint or NAT) the identity is left
out, after one short try, and the run goes on.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from .stores.base import Store

__all__ = ["Actor", "Via", "aws_identity", "login_name", "run_by"]

log = logging.getLogger(__name__)

Via = Literal["person", "schedule", "program"]

#: Characters kept of a user@host or an ARN (the state must stay under 4 KB).
_CHARS = 120


def login_name() -> str:
    """This process's user name (its uid when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class Actor:
    """Who ran a rotation or a rollback."""

    via: Via
    #: ``user@host`` of the process (None in a Lambda).
    user: str | None = None
    #: The AWS caller identity (an ARN), when known.
    arn: str | None = None

    def to_dict(self) -> dict[str, str]:
        """Compact: what is unknown is left out."""
        out: dict[str, str] = {"via": self.via}
        for key, value in (("user", self.user), ("arn", self.arn)):
            if value:
                out[key] = value[:_CHARS]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Actor | None:
        """The inverse of :meth:`to_dict`; None for anything else (an older record)."""
        if not isinstance(data, dict) or data.get("via") not in ("person", "schedule", "program"):
            return None
        user, arn = data.get("user"), data.get("arn")
        return cls(
            data["via"], None if user is None else str(user), None if arn is None else str(arn)
        )

    def describe(self) -> str:
        """``person alice@laptop as arn:aws:sts::123456789012:assumed-role/Admin/alice``."""
        text = self.via + (f" {self.user}" if self.user else "")
        return text + (f" as {self.arn}" if self.arn else "")

    def short(self) -> str:
        """For a table: ``alice@laptop`` or ``schedule assumed-role/Rotator/fn``."""
        who = self.user or (self.arn.split(":", 5)[-1] if self.arn else "")
        return who if self.via == "person" and who else f"{self.via} {who}".strip()


def run_by(store: Store, via: Via, *, fallback_arn: str | None = None) -> Actor:
    """The actor of a run started *via* this process, with its AWS identity when the store
    is SSM (else, or when STS does not answer, *fallback_arn*: a Lambda's own ARN)."""
    user = None if via == "schedule" else f"{login_name()}@{socket.gethostname()}"
    return Actor(via, user, aws_identity(store) or fallback_arn)


def aws_identity(store: Store) -> str | None:
    """The caller's ARN as STS names it (the default credentials), when *store* is SSM;
    asked once per process."""
    inner: Any = getattr(store, "inner", store)  # a FencedStore's store
    if inner.scheme != "ssm":
        return None
    meta = inner.client.meta
    return _identity(meta.region_name, _sts_endpoint(meta.endpoint_url))


def _sts_endpoint(ssm_endpoint: str) -> str | None:
    """Where to ask STS: AWS's own endpoint, unless the store talks to an emulator (an
    endpoint that is no AWS host, as moto's or LocalStack's) and nothing names STS's."""
    if os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    host = urlsplit(ssm_endpoint).hostname or ""
    aws = host.endswith((".amazonaws.com", ".amazonaws.com.cn"))
    return None if aws else ssm_endpoint


@functools.cache
def _identity(region: str | None, endpoint: str | None) -> str | None:
    """Ask STS once per region and endpoint (an answer or a failure is kept)."""
    from .aws_clients import make_client

    try:
        client = make_client("sts", region, endpoint, attempts=1, connect_timeout=2)
        return str(client.get_caller_identity()["Arn"])
    except Exception as exc:  # who ran it is a record, never a reason to fail
        log.info("credflip: the AWS caller identity is unknown (%s)", exc)
        return None
