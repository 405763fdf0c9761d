"""credflip's AWS clients: a session each, one parse of botocore's data per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from credflip import aws_clients
from credflip.aws_clients import make_client

NOWHERE = "http://127.0.0.1:9"  # no call is made: only clients are built


def test_sessions_share_the_loader_and_follow_aws_data_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    make_client("ssm", "us-east-1", NOWHERE)
    seen = aws_clients._shared_loader.cache_info()
    make_client("kms", "us-east-1", NOWHERE)
    after = aws_clients._shared_loader.cache_info()
    assert (after.hits, after.misses) == (seen.hits + 1, seen.misses)  # the same loader
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    client = make_client("ssm", "us-east-1", NOWHERE)
    assert aws_clients._shared_loader.cache_info().misses == seen.misses + 1  # its own
    assert str(tmp_path) in aws_clients._shared_loader(str(tmp_path)).search_paths
    assert client.meta.region_name == "us-east-1"
