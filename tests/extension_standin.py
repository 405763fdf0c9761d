"""A stand-in for the AWS Parameters and Secrets Lambda Extension, in front of moto's SSM.

The real extension runs only inside Lambda. This server follows its documented
contract (AWS Systems Manager User Guide, "Using Parameter Store parameters in
AWS Lambda functions"), no more:

* ``GET /systemsmanager/parameters/get?name=NAME`` (a trailing ``/`` too), with
  ``version=N`` or ``label=L`` (the first of them in the query counts) and
  ``withDecryption=true`` (omitted or ``false``: a SecureString's value stays
  encrypted). The answer is SSM's ``GetParameter`` answer, as JSON.
* The header ``X-Aws-Parameters-Secrets-Token`` must be the function's session
  token: missing, 401; another, 403.
* A missing name, or one SSM refuses (it does not exist, a bad version), is a 400.
* Each answer is cached per request (name, selector, decryption) for *ttl*
  seconds (``SSM_PARAMETER_STORE_TTL``: at most 300; 0 bypasses the cache),
  measured by *clock*, and never refreshed early.

What the documentation does not say (the bodies of errors) is plain text here;
credflip only reads the status of an error.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.exceptions import ClientError

PATH = "/systemsmanager/parameters/get"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
TOKEN = "stand-in-session-token"


class ExtensionStandIn:
    """The extension on 127.0.0.1:*port* (0: any free port), serving moto's SSM at
    *endpoint_url*. ``ssm_calls`` counts the calls it made to SSM."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        ttl: float = 300.0,
        token: str = TOKEN,
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = min(max(ttl, 0.0), 300.0)
        self.token = token
        self.clock = clock
        self.ssm = boto3.client("ssm", endpoint_url=endpoint_url, region_name="us-east-1")
        self.cache: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}
        self.ssm_calls = 0
        self.requests = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.standin = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ExtensionStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def environ(self) -> dict[str, str]:
        """What a function with this extension sees in its environment."""
        return {
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(self.port),
            "SSM_PARAMETER_STORE_TTL": f"{self.ttl:g}",
            "AWS_SESSION_TOKEN": self.token,
        }

    def answer(self, token: str | None, query: list[tuple[str, str]]) -> tuple[int, bytes]:
        """The status and body for a request with *token* and *query*."""
        self.requests += 1
        if token is None:
            return 401, b"missing X-Aws-Parameters-Secrets-Token"
        if token != self.token:
            return 403, b"X-Aws-Parameters-Secrets-Token is not this function's"
        args = dict(query)
        name = args.get("name", "")
        if not name:
            return 400, b"name is required"
        selector = next((f":{v}" for k, v in query if k in {"version", "label"}), "")
        key = (name + selector, args.get("withDecryption", "false").lower() == "true")
        with self._lock:
            cached = self.cache.get(key)
            if self.ttl > 0 and cached is not None and self.clock() - cached[0] < self.ttl:
                return 200, json.dumps(cached[1]).encode()
            self.ssm_calls += 1
        try:
            reply = self.ssm.get_parameter(Name=key[0], WithDecryption=key[1])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            return 400, f"{error.get('Code')}: {error.get('Message')}".encode()
        doc = {"Parameter": reply["Parameter"], "ResultMetadata": {}}
        doc["Parameter"]["LastModifiedDate"] = doc["Parameter"]["LastModifiedDate"].timestamp()
        with self._lock:
            self.cache[key] = (self.clock(), doc)
        return 200, json.dumps(doc).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        standin: ExtensionStandIn = self.server.standin  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != PATH:
            status, body = 404, b"not found"
        else:
            query = parse_qsl(parts.query, keep_blank_values=True)
            status, body = standin.answer(self.headers.get(TOKEN_HEADER), query)
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a request line names a parameter, and tests read stderr."""
