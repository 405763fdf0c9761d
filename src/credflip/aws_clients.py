"""AWS (botocore) clients as credflip makes them, and what botocore may log of them.

One place for what every AWS call of credflip shares: botocore's ``standard``
retries (or the operator's ``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS``), short
timeouts, a session of its own, the codes AWS throttles with, and a log filter
that masks secret fields. The SSM store and RDS Proxy support use it; each
translates the errors in its own words. botocore is imported only inside
:func:`make_client`, so importing this module loads no SDK.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any

__all__ = ["THROTTLING", "error_code", "make_client", "mask_in_botocore_logs"]

#: Error codes with which AWS services say "rate exceeded".
THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "TooManyUpdates",
        "RequestThrottledException",
    }
)

#: botocore's loggers that write whole request and response bodies at DEBUG.
_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers")


def make_client(
    service: str,
    region: str | None,
    endpoint_url: str | None = None,
    *,
    attempts: int | None = None,
    connect_timeout: float = 5,
    read_timeout: float = 10,
) -> Any:
    """A boto3 (botocore) client of *service*: a session of its own, bounded retries and timeouts
    (*attempts*: that many in all, whatever the environment says; *connect_timeout* and
    *read_timeout* in seconds, per attempt).

    botocore's errors (``NoRegionError``...) propagate for the caller to word.
    """
    import botocore.session
    from botocore.config import Config

    # botocore's "standard" mode retries throttling with backoff; respect an
    # operator's explicit choice through the usual environment variables.
    retries: dict[str, Any] = {"mode": os.environ.get("AWS_RETRY_MODE", "standard")}
    if attempts is not None:
        retries["total_max_attempts"] = attempts
    elif os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = int(os.environ["AWS_MAX_ATTEMPTS"])
    # AWS answers in milliseconds; botocore's 60 s defaults would let one silent
    # endpoint hold a rotation (or a Lambda) for minutes per attempt.
    config = Config(retries=retries, connect_timeout=connect_timeout, read_timeout=read_timeout)  # type: ignore[arg-type]
    # A session of its own: a process-wide session caches credentials and region
    # for the whole process, which would outlive a changed environment. Only the
    # service models it reads from disk are shared (:func:`_shared_loader`).
    # AWS_REGION first, as the AWS CLI v2 and the Lambda runtime have it (botocore
    # alone reads only AWS_DEFAULT_REGION and the profile's region).
    session = botocore.session.Session()
    loader = _shared_loader(session.get_config_variable("data_path"))
    session.register_component("data_loader", loader)
    return session.create_client(
        service,
        region_name=region or os.environ.get("AWS_REGION") or None,
        endpoint_url=endpoint_url,
        config=config,
    )


@functools.cache
def _shared_loader(data_path: str | None) -> Any:
    """botocore's reader of its JSON data (service models, endpoints), one per process
    and extra model path (``AWS_DATA_PATH``, read by each session as botocore does).

    A new session would parse them again: about 150 ms of CPU per client, most of a
    CLI command's or a Lambda invocation's own work. The loader holds only that data
    (no credentials), and caches what it read.
    """
    from botocore.loaders import create_loader

    return create_loader(data_path)


def error_code(exc: BaseException) -> str:
    """The code AWS answered with (``ParameterNotFound``...), or '' for any other error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class _MaskField(logging.Filter):
    """Masks the values of one JSON field in botocore's DEBUG logs of bodies.

    botocore logs whole request and response bodies at DEBUG, decrypted values
    included; an operator turning on debug logging must not find database
    passwords in it.
    """

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field
        # "Field": "...", up to the closing quote that is not escaped and is
        # followed by the next field or the end of the object.
        self._value = re.compile(
            rf"""(["']{re.escape(field)}["']\s*:\s*)(["']).*?(?<!\\)\2(?=\s*[,}}])"""
        )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.field in message:
            record.msg = self._value.sub(r"\1\2***\2", message)
            record.args = None
        return True


def mask_in_botocore_logs(field: str) -> None:
    """Mask *field*'s values in botocore's body logs from now on (once per field)."""
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MaskField) and f.field == field for f in logger.filters):
            logger.addFilter(_MaskField(field))
