"""A moto server that enforces IAM, and users with the policies of docs/iam.

moto's in-process server (``moto_endpoint``) lets every request through; this one,
a process of its own, checks each request against the caller's IAM policies once
:func:`iam_user` has made a user (its admin calls are let through, three of them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from credflip.demo.binaries import free_port

DOCS = Path(__file__).parent.parent / "docs" / "iam"


@contextmanager
def moto_with_iam_server() -> Iterator[str]:
    """A separate moto server (own process) that enforces IAM policies: its endpoint."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until the server answers (a condition, not a guess)
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def iam_user(endpoint: str, name: str, policy_file: str) -> dict[str, str]:
    policy = json.loads((DOCS / policy_file).read_text())
    # moto evaluates the actions of a policy but matches every non-S3 request
    # against resource "*": the ARNs' scoping cannot be checked here, the
    # action lists can.
    for statement in policy["Statement"]:
        statement["Resource"] = "*"
    text = json.dumps(policy)
    # The admin calls below are unauthenticated: allow exactly three of them.
    urllib.request.urlopen(
        urllib.request.Request(
            endpoint + "/moto-api/reset-auth",
            data=b"3",
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
    ).close()
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="credflip", PolicyDocument=text)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }
