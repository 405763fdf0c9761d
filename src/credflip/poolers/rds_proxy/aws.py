"""The AWS side of RDS Proxy support: boto3 clients, and their errors as credflip's.

boto3 is imported only when an env has an RDS Proxy. Clients use the region
the env recorded, the usual endpoint variables (``AWS_ENDPOINT_URL_RDS``,
``AWS_ENDPOINT_URL_SECRETS_MANAGER``: a VPC endpoint, or a test's server),
botocore's ``standard`` retries and short timeouts, as the SSM store does.
botocore's DEBUG logs of Secrets Manager calls carry the secret in the
request: a filter masks ``SecretString`` values before they are written.
"""

from __future__ import annotations

from typing import Any

from ...aws_clients import THROTTLING, error_code, make_client, mask_in_botocore_logs
from ...errors import (
    ConfigurationError,
    CredflipError,
    StoreAccessDenied,
    StoreError,
    StoreThrottled,
)

__all__ = ["client", "error_code", "translate"]

_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}


mask_in_botocore_logs("SecretString")


def client(service: str, region: str) -> Any:
    """A boto3 client of *service* in *region*, bounded like the SSM store's."""
    try:
        return make_client(service, region)
    except Exception as exc:
        raise StoreError(f"cannot create an AWS {service} client: {exc}") from exc


def translate(exc: Exception, action: str, what: str, *, key: str | None = None) -> Exception:
    """A botocore error of *action* on *what* as credflip's own, saying what to do.

    Other exceptions are returned as they are (the caller re-raises them).
    """
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        ParamValidationError,
    )

    if isinstance(exc, CredflipError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return StoreAccessDenied(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run with an IAM role"
        )
    if not isinstance(exc, ClientError):
        if isinstance(exc, ParamValidationError):  # its message repeats the value
            return StoreError(f"{action} on {what} failed: botocore refused a parameter")
        if isinstance(exc, BotoCoreError):
            return StoreError(f"{action} on {what} failed: {exc}")
        return exc
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    if code in THROTTLING:
        return StoreThrottled(f"AWS throttled {action} on {what} (rate exceeded): retry later")
    if "KMS" in code or (code in _DENIED and "kms" in message.lower()):
        return StoreAccessDenied(
            f"KMS refused {action} on {what} ({code}): allow kms:GenerateDataKey and "
            f"kms:Decrypt on key {key or 'aws/secretsmanager'} for this role (through "
            f"Secrets Manager, as deploy/template.yaml does)"
        )
    if code in _DENIED:
        return StoreAccessDenied(
            f"access denied: allow {action} on {what} for this role (see deploy/template.yaml)"
        )
    if code == "DBProxyNotFoundFault":
        return ConfigurationError(
            f"no RDS Proxy named {what!r} in this account and region: check --rds-proxy and "
            f"AWS_REGION"
        )
    return StoreError(f"{action} on {what} failed with {code}: {message[:200]}")
