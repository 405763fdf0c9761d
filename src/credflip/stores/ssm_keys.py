"""Which KMS keys encrypt existing SecureStrings, for ``init``'s warning when they are not the
key the store writes with. Best effort: what SSM or KMS will not say is left out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_ssm.type_defs import ParameterStringFilterTypeDef

__all__ = ["DEFAULT_KEY", "other_keys"]

logger = logging.getLogger(__name__)

#: The key SSM encrypts a SecureString with when none is named.
DEFAULT_KEY = "alias/aws/ssm"
#: DescribeParameters takes at most this many names in one filter.
_NAMES_PER_FILTER = 50


def other_keys(
    client: SSMClient, names: Sequence[str], mine: str, kms: Callable[[], Any]
) -> dict[str, str]:
    """The SecureStrings among *names* under another key than *mine*, with their key.

    ``ssm:DescribeParameters`` names each one's key; ``kms:DescribeKey``
    (through the client *kms* makes) tells whether an alias, a key id and an
    ARN name the same key. When SSM will not say, nothing is reported.
    """
    found: dict[str, str] = {}
    try:
        pages = client.get_paginator("describe_parameters")
        for start in range(0, len(names), _NAMES_PER_FILTER):
            chosen: ParameterStringFilterTypeDef = {
                "Key": "Name",
                "Option": "Equals",
                "Values": list(names[start : start + _NAMES_PER_FILTER]),
            }
            for page in pages.paginate(ParameterFilters=[chosen]):
                for param in page.get("Parameters", []):
                    if param.get("Type") == "SecureString":
                        found[param["Name"]] = param.get("KeyId") or DEFAULT_KEY
    except Exception as exc:  # a check, not a step: it never fails a command
        logger.debug("cannot describe parameters: %s", exc)
        return {}
    arns = _KeyArns(kms)
    other = {key for key in found.values() if not arns.same(key, mine)}
    return {name: key for name, key in sorted(found.items()) if key in other}


class _KeyArns:
    """Key ids (ARN, id, alias) resolved to key ARNs through KMS, once each."""

    def __init__(self, kms: Callable[[], Any]) -> None:
        self._make = kms
        self._client: Any = None
        self._arns: dict[str, str | None] = {}

    def same(self, one: str, two: str) -> bool:
        """Whether *one* and *two* name one key; a key KMS will not describe is another."""
        if one == two:
            return True
        first, second = self._arn(one), self._arn(two)
        return first is not None and first == second

    def _arn(self, key: str) -> str | None:
        if key not in self._arns:
            try:
                if self._client is None:
                    self._client = self._make()
                self._arns[key] = str(self._client.describe_key(KeyId=key)["KeyMetadata"]["Arn"])
            except Exception as exc:  # no kms:DescribeKey, an unknown alias: unknown
                logger.debug("cannot describe KMS key %s: %s", key, exc)
                self._arns[key] = None
        return self._arns[key]
