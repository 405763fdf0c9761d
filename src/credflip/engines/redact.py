"""Keeping secrets out of a driver's messages: the part of an engine's connector that knows
every secret it was given."""

from __future__ import annotations

import abc

from ..urls import DbUrl, scrub

__all__ = ["Redactor"]


class Redactor(abc.ABC):
    """The secrets an engine knows, and its driver's messages scrubbed of them."""

    #: The admin URL (its password is a secret too) and the secrets noted since.
    admin_url: DbUrl
    _secrets: list[str]

    def remember_secret(self, secret: str) -> None:
        """Note a secret so that driver messages can be scrubbed of it."""
        self._secrets.append(secret)

    def _diag(self, exc: BaseException) -> str:
        """The first line of a driver error, scrubbed of every known secret."""
        text = self._message(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        return scrub(first, self._known_secrets())

    def _known_secrets(self) -> list[str]:
        return [*self._secrets, *([self.admin_url.password] if self.admin_url.password else [])]

    @staticmethod
    @abc.abstractmethod
    def _message(exc: BaseException) -> str:
        """The human part of a driver error."""
