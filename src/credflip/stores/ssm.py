"""AWS Systems Manager Parameter Store through boto3.

URLs are written as SecureString (with ``kms_key_id`` when given), the pointer
and credflip's state as String, all in the standard tier. A read of up to ten
names is one ``GetParameters`` call; names SSM reports as invalid are simply
missing. A folder is listed with ``GetParametersByPath`` (ten values a page),
its SecureStrings left out unless asked for. Create-only writes use
``Overwrite=False``. boto3 is imported only when this store is opened, so
applications that use the SQLite store (or only import :mod:`credflip`) never
load it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..aws_clients import THROTTLING, error_code, make_client, mask_in_botocore_logs
from ..errors import (
    ConfigurationError,
    ParameterExists,
    StoreAccessDenied,
    StoreError,
    StoreThrottled,
)
from .base import Store
from .ssm_keys import DEFAULT_KEY, other_keys

if TYPE_CHECKING:
    from botocore.exceptions import ClientError
    from mypy_boto3_ssm import SSMClient

__all__ = ["DEFAULT_KEY", "SsmStore", "ssm_url"]

#: GetParameters accepts at most this many names per call.
_BATCH = 10

_KMS_ERRORS = {
    "InvalidKeyId",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
}


mask_in_botocore_logs("Value")  # decrypted SecureStrings


class SsmStore(Store):
    """Parameters in AWS SSM Parameter Store.

    Pass *client* to inject a configured ``boto3.client("ssm")``; otherwise one
    is made for *region* (or the default chain) and *endpoint_url*, with
    botocore's ``standard`` retry mode unless ``AWS_RETRY_MODE`` says otherwise.
    """

    scheme = "ssm"

    def __init__(
        self,
        *,
        client: SSMClient | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        kms_key_id: str | None = None,
    ) -> None:
        self.kms_key_id = kms_key_id
        self._endpoint_url = endpoint_url
        self._client: SSMClient = (
            client if client is not None else _make_client(region, endpoint_url)
        )
        self.region: str = self._client.meta.region_name or region or ""

    @property
    def client(self) -> SSMClient:
        """The boto3 SSM client this store calls."""
        return self._client

    @property
    def url(self) -> str:
        """``ssm://REGION`` plus the endpoint and the KMS key when set: opens this store again."""
        return ssm_url(self.region, self._endpoint_url, self.kms_key_id)

    @property
    def write_key(self) -> str:
        """The KMS key SecureStrings are written with: ``kms_key_id``, else SSM's default."""
        return self.kms_key_id or DEFAULT_KEY

    def other_keys(self, names: Sequence[str]) -> dict[str, str]:
        """The SecureStrings among *names* under another KMS key than this store writes with."""
        kms = functools.partial(_make_client, self.region, self._endpoint_url, service="kms")
        return other_keys(self._client, names, self.write_key, kms)

    def _get_many(self, names: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(names), _BATCH):
            chunk = names[start : start + _BATCH]
            try:
                reply = self._client.get_parameters(Names=chunk, WithDecryption=True)
            except Exception as exc:
                raise self._translate(exc, "ssm:GetParameters", chunk[0]) from exc
            for param in reply.get("Parameters", []):
                found[param["Name"]] = param["Value"]
        return found

    def _get_path(self, folder: str, *, secure: bool) -> dict[str, str]:
        # Without *secure*, SSM leaves SecureStrings out itself: no ciphertext comes back,
        # nothing is decrypted, and the pages hold only what is asked for.
        kwargs: dict[str, Any] = {"Path": folder, "Recursive": True, "WithDecryption": secure}
        if not secure:
            kwargs["ParameterFilters"] = [{"Key": "Type", "Option": "Equals", "Values": ["String"]}]
        found: dict[str, str] = {}
        try:
            for page in self._client.get_paginator("get_parameters_by_path").paginate(**kwargs):
                for param in page.get("Parameters", []):
                    found[param["Name"]] = param["Value"]
        except Exception as exc:
            raise self._translate(exc, "ssm:GetParametersByPath", folder) from exc
        return found

    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool) -> None:
        kwargs: dict[str, Any] = {
            "Name": name,
            "Value": value,
            "Type": "SecureString" if secure else "String",
            "Overwrite": overwrite,
            "Tier": "Standard",
        }
        if secure and self.kms_key_id:
            kwargs["KeyId"] = self.kms_key_id
        try:
            self._client.put_parameter(**kwargs)
        except Exception as exc:
            raise self._translate(exc, "ssm:PutParameter", name) from exc

    def _delete(self, name: str) -> bool:
        try:
            self._client.delete_parameter(Name=name)
        except Exception as exc:
            if error_code(exc) == "ParameterNotFound":
                return False
            raise self._translate(exc, "ssm:DeleteParameter", name) from exc
        return True

    def _translate(self, exc: Exception, action: str, name: str) -> Exception:
        """Turn a botocore error into credflip's own, naming what to do."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )

        if isinstance(exc, NoCredentialsError):
            return StoreAccessDenied(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, or run with an IAM role"
            )
        if isinstance(exc, NoRegionError):
            return ConfigurationError(
                "no AWS region set: use --store ssm://REGION or set AWS_REGION"
            )
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"cannot reach SSM at {exc.kwargs.get('endpoint_url', '?')}: "
                f"check the network, region and endpoint_url"
            )
        if not isinstance(exc, ClientError):
            if isinstance(exc, BotoCoreError):
                return StoreError(f"SSM call {action} on {name} failed: {exc}")
            return exc
        return _client_error(exc, action, name, region=self.region, key=self.write_key)


def _client_error(exc: ClientError, action: str, name: str, *, region: str, key: str) -> Exception:
    """An error SSM answered with (its code) as credflip's own, naming what to do (*key*:
    the KMS key the store writes with)."""
    code = error_code(exc)
    arn = f"arn:aws:ssm:{region or '*'}:*:parameter{name}"
    if code in THROTTLING:
        return StoreThrottled(
            f"SSM throttled {action} on {name} (rate exceeded): retry later, raise the "
            f"client TTL, or enable higher throughput for Parameter Store"
        )
    if code == "ParameterAlreadyExists":
        return ParameterExists(f"parameter {name} already exists")
    if code == "ParameterNotFound":
        return StoreError(f"parameter {name} not found: run 'credflip init' for this env")
    if code in _KMS_ERRORS or "KMS" in code:
        return StoreAccessDenied(
            f"KMS refused {action} on {name} ({code}): check that key {key} exists, is "
            f"enabled and allows kms:Encrypt/kms:Decrypt for this role"
        )
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"} or (
        status == 403 and code not in _KMS_ERRORS
    ):
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if "kms" in message.lower():
            return StoreAccessDenied(
                f"KMS denied {action} on {name}: allow kms:Decrypt/kms:Encrypt on key {key}"
            )
        return StoreAccessDenied(
            f"access denied: allow {action} on {arn} for this role (see docs/iam/)"
        )
    if code == "ValidationException":
        return StoreError(f"SSM rejected {action} on {name}: {_error_message(exc)}")
    return StoreError(f"SSM call {action} on {name} failed with {code}: {_error_message(exc)}")


def ssm_url(region: str, endpoint_url: str | None, kms_key_id: str | None) -> str:
    """``ssm://REGION`` plus the endpoint and the KMS key when set."""
    options = {"endpoint_url": endpoint_url, "kms_key_id": kms_key_id}
    query = urlencode({k: v for k, v in options.items() if v}, safe=":/")
    return f"ssm://{region}" + (f"?{query}" if query else "")


def _make_client(region: str | None, endpoint_url: str | None, service: str = "ssm") -> Any:
    try:
        return make_client(service, region, endpoint_url)
    except Exception as exc:
        if not isinstance(exc, ImportError):  # no boto3: no botocore to look in either
            from botocore.exceptions import NoRegionError

            if isinstance(exc, NoRegionError):
                raise ConfigurationError(
                    "no AWS region set: use --store ssm://REGION or set AWS_REGION"
                ) from exc
        raise StoreError(f"cannot create an {service.upper()} client: {exc}") from exc


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", ""))
    return str(exc)
