"""A resolver's SSM reads through the AWS Parameters and Secrets Lambda Extension.

The extension (a Lambda layer from AWS) serves parameters on
``http://localhost:$PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`` (default 2773) from
a cache of its own: ``GET /systemsmanager/parameters/get?name=...&withDecryption=true``
with the header ``X-Aws-Parameters-Secrets-Token: $AWS_SESSION_TOKEN``, one
parameter per request. Reading through it takes the standard library's HTTP
client only: no boto3 import, which is most of a Lambda's cold start.

What its documentation says, and what this store does about it:

* Its cache keeps a value ``SSM_PARAMETER_STORE_TTL`` seconds (default 300, at
  most 300; ``0``, ``PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=false`` or
  ``PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE=0`` turn it off), does not notice
  changes, and no request can go around it. A value it serves may be that old,
  so the resolver counts that age against its own TTL: a flip still reaches the
  client within the TTL the rotator's cache wait assumes. When the cache's TTL
  is not below the resolver's (the defaults: 300 s against 60 s) that cannot
  hold: the extension is refused (one warning) and reads go through boto3.
* A read that must see the parameters as they are now (``refresh()`` after a
  refused login) goes through boto3 while that cache is on, and so do the
  env's reads for the cache's TTL after it, so that none brings back an older
  value than the refresh saw.
* It answers only while a function is invoked, not in its init phase, and may
  be missing. Whenever it does not answer with a value (refused, timed out, any
  status but 200: a name that does not exist is a 400) the read goes through
  boto3, imported then.

A resolve reads the pointer, then the two URLs of the color it names: three
requests (each one ``GetParameter`` call when the extension's cache misses).
Writes, and every read but a resolver's, go through boto3.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode

from ..errors import UsageError
from .base import Store
from .ssm import ssm_url

__all__ = [
    "SsmExtensionStore",
    "extension_cache_ttl",
    "extension_port",
    "extension_wanted",
    "fetch",
]

log = logging.getLogger("credflip.stores.ssm_extension")

DEFAULT_PORT = 2773
PATH = "/systemsmanager/parameters/get"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"  # noqa: S105 - a header's name
#: The extension caps its TTL at five minutes, and caches that long by default.
MAX_CACHE_TTL = 300.0
#: Seconds to connect to the extension on localhost, then to wait for its answer
#: (it may call SSM first). Past either, the read goes through boto3.
CONNECT_TIMEOUT = 0.25
READ_TIMEOUT = 1.0

_told: set[str] = set()  # what this process has logged once


def extension_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a resolver in this process tries the extension: ``CREDFLIP_SSM_EXTENSION``
    ``on`` or ``off``, else (``auto``) when running in a Lambda."""
    raw = environ.get("CREDFLIP_SSM_EXTENSION", "").strip().lower()
    if raw in {"", "auto"}:
        return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if raw in {"on", "off"}:
        return raw == "on"
    raise UsageError(f"CREDFLIP_SSM_EXTENSION={raw!r}: use on, off or auto")


def extension_port(environ: Mapping[str, str] = os.environ) -> int:
    """The extension's port: ``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``, else 2773."""
    raw = environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UsageError(f"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT={raw!r} is not a port")
    return int(raw)


def extension_cache_ttl(environ: Mapping[str, str] = os.environ) -> float:
    """How many seconds the extension may serve a parameter from its cache, from the
    variables it reads. Only their documented forms count (whole seconds from 0, a
    whole number of entries, ``false``): what the extension may not read as credflip
    would (``-1``, ``5.5``, ``nan``, a space before ``0``) may leave it at its default, so it counts
    as that default (300 s, the longest it caches)."""
    # Only the documented spelling: were another one ignored by the extension, its
    # cache would run while credflip counted none.
    if environ.get("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED") == "false":
        return 0.0
    if _whole(environ.get("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE"), 1000) == 0:
        return 0.0
    return min(_whole(environ.get("SSM_PARAMETER_STORE_TTL"), MAX_CACHE_TTL), MAX_CACHE_TTL)


def _whole(raw: str | None, default: float) -> float:
    return float(raw) if raw and raw.isascii() and raw.isdigit() else default


def _once(key: str, level: int, message: str, *args: object) -> None:
    if key not in _told:
        _told.add(key)
        log.log(level, message, *args)


class _NoAnswer(Exception):
    """The extension gave no value: *why* names the reason (never a value)."""

    def __init__(self, why: str, status: int = 0) -> None:
        super().__init__(why)
        self.why, self.status = why, status


class SsmExtensionStore(Store):
    """SSM for a resolver: through the extension when it answers, else through boto3.

    *port* and *cache_ttl* default to what the function's environment tells
    the extension; *clock* measures the cache's TTL after a fresh read.
    """

    scheme = "ssm"

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        kms_key_id: str | None = None,
        port: int | None = None,
        cache_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region or os.environ.get("AWS_REGION") or ""
        self.endpoint_url = endpoint_url
        self.kms_key_id = kms_key_id
        self.port = extension_port() if port is None else port
        self.cache_ttl = extension_cache_ttl() if cache_ttl is None else cache_ttl
        self._clock = clock
        self._direct: Store | None = None
        self._direct_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The same URL as the SSM store's."""
        return ssm_url(self.region, self.endpoint_url, self.kms_key_id)

    @property
    def direct(self) -> Store:
        """The SSM store through boto3, opened (boto3 imported) on first use."""
        if self._direct is None:
            with self._lock:
                if self._direct is None:
                    from .ssm import SsmStore

                    self._direct = SsmStore(
                        region=self.region or None,
                        endpoint_url=self.endpoint_url,
                        kms_key_id=self.kms_key_id,
                    )
        return self._direct

    def get_pointed(
        self, pointer: str, targets: Mapping[str, Sequence[str]], *, max_age: float | None = None
    ) -> tuple[dict[str, str], float]:
        """The pointer, then the URLs it names, through the extension when its cache
        allows *max_age* and it answers; else everything at once through boto3."""
        if self._may_use(pointer, max_age):
            try:
                return self._through_extension(pointer, targets), self.cache_ttl
            except _NoAnswer as exc:
                _tell(self.port, exc)
        return self.direct.get_pointed(pointer, targets)

    def _may_use(self, pointer: str, max_age: float | None) -> bool:
        if self.cache_ttl == 0:
            return True  # no cache: every answer is SSM's own
        now = self._clock()
        if max_age == 0:
            # Around the cache now, and while it may still hold what preceded this read.
            self._direct_until[pointer] = now + self.cache_ttl
            return False
        if max_age is not None and max_age <= self.cache_ttl:
            _once(
                "refused",
                logging.WARNING,
                "credflip: SSM_PARAMETER_STORE_TTL=%gs lets the AWS Parameters and Secrets "
                "Lambda Extension serve a pointer that old, not less than credflip's TTL of "
                "%gs: a flip would reach this function after the rotator's cache wait. "
                "Reading SSM through boto3; set SSM_PARAMETER_STORE_TTL=0 (or below the TTL) "
                "to use the extension",
                self.cache_ttl,
                max_age,
            )
            return False
        return now >= self._direct_until.get(pointer, float("-inf"))

    def _through_extension(
        self, pointer: str, targets: Mapping[str, Sequence[str]]
    ) -> dict[str, str]:
        token = os.environ.get("AWS_SESSION_TOKEN", "")
        values = {pointer: fetch(self.port, pointer, token)}
        for name in targets.get(values[pointer].strip(), ()):
            values[name] = fetch(self.port, name, token)
        _once(
            "answered",
            logging.DEBUG,
            "credflip: reading SSM through the AWS Parameters and Secrets Lambda Extension "
            "on localhost:%d (its cache keeps values %gs)",
            self.port,
            self.cache_ttl,
        )
        return values

    def _get_many(self, names: list[str]) -> dict[str, str]:
        return self.direct.get_many(names)

    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool) -> None:
        self.direct.put(name, value, secure=secure, overwrite=overwrite)

    def _delete(self, name: str) -> bool:
        return self.direct.delete(name)

    def _get_path(self, folder: str, *, secure: bool) -> dict[str, str]:
        return self.direct.get_path(folder, secure=secure)

    def close(self) -> None:
        """Close the boto3 store, when one was opened."""
        if self._direct is not None:
            self._direct.close()


def fetch(port: int, name: str, token: str) -> str:
    """*name*'s value (decrypted) from the extension on *port*, or :class:`_NoAnswer`."""
    import http.client

    query = urlencode({"name": name, "withDecryption": "true"})
    conn = http.client.HTTPConnection("localhost", port, timeout=CONNECT_TIMEOUT)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT)
        conn.request("GET", f"{PATH}?{query}", headers={TOKEN_HEADER: token} if token else {})
        reply = conn.getresponse()
        body = reply.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _NoAnswer(type(exc).__name__) from None
    finally:
        conn.close()
    if reply.status != 200:
        raise _NoAnswer(f"HTTP {reply.status} for {name}", reply.status)
    try:
        return str(json.loads(body)["Parameter"]["Value"])
    except (ValueError, KeyError, TypeError):
        raise _NoAnswer(f"an answer without a value for {name}") from None


def _tell(port: int, exc: _NoAnswer) -> None:
    """Say once why the extension gave no value (a refused token: a warning)."""
    if exc.status in {401, 403}:
        _once(
            "token",
            logging.WARNING,
            "credflip: the AWS Parameters and Secrets Lambda Extension on localhost:%d "
            "refused the session token (HTTP %d): AWS_SESSION_TOKEN must be the "
            "function's own; reading SSM through boto3",
            port,
            exc.status,
        )
    else:
        _once(
            "no-answer",
            logging.DEBUG,
            "credflip: the AWS Parameters and Secrets Lambda Extension on localhost:%d gave "
            "no value (%s); reading SSM through boto3",
            port,
            exc.why,
        )
