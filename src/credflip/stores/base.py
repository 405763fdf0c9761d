"""The interface every parameter store offers.

A store holds small named string values. It can read many names in one call,
list the values under a folder (``status --all``), write one (plain or secure,
overwriting or create-only) and delete one. That is all a rotation and a
resolver need; create-only writes are what the rotation lock is built on, and
a conditional replace (built on them where the store has no conditional
write) is how a stale lock is taken over.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from types import TracebackType

from ..errors import CredflipError, ParameterExists, UsageError
from ..layout import validate_prefix

__all__ = ["MAX_VALUE_BYTES", "Store", "claim_name"]

#: SSM's standard tier holds 4 KB per value; every store keeps to it so that a
#: state that works on the local store also works on AWS.
MAX_VALUE_BYTES = 4096


class Store(abc.ABC):
    """A parameter store: read many, write one, delete one."""

    #: The URL scheme that names this kind of store in ``--store``.
    scheme: str = ""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The store's URL as shown to users (never holds a secret)."""

    def get_many(self, names: Sequence[str]) -> dict[str, str]:
        """Return the values of those *names* that exist, in one round trip."""
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        return self._get_many(unique)

    def get_path(self, path: str, *, secure: bool = False) -> dict[str, str]:
        """Return every parameter under the folder *path*, at any depth, in as few round
        trips as the store allows (``status --all``).

        Secure values are left out unless *secure*: they are then read (decrypted on
        SSM, which needs ``kms:Decrypt``) only by a caller that needs them.
        """
        folder = validate_prefix(path)
        return self._get_path(folder, secure=secure)

    def get_pointed(
        self, pointer: str, targets: Mapping[str, Sequence[str]], *, max_age: float | None = None
    ) -> tuple[dict[str, str], float]:
        """The values of *pointer* and of the names *targets* lists under its value, and
        how many seconds old they may be.

        This is a resolver's read: *targets* maps each value the pointer may hold to
        the names needed then (a color to its URLs). Stores that read many names in
        one round trip read them all at once, from the store itself (age 0: this
        default). A store with a cache in front returns values at most *max_age*
        old (None: any age; 0: none from a cache).
        """
        names = [pointer, *(name for group in targets.values() for name in group)]
        return self.get_many(names), 0.0

    def get(self, name: str) -> str | None:
        """Return the value of *name*, or None when it does not exist."""
        return self.get_many([name]).get(name)

    def put(self, name: str, value: str, *, secure: bool = False, overwrite: bool = True) -> None:
        """Write *value* under *name*.

        With ``overwrite=False`` the write only creates: when *name* exists,
        :class:`~credflip.errors.ParameterExists` is raised and nothing changes.
        *secure* marks a value that holds a secret (SSM SecureString).
        """
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise UsageError(
                f"value for {name} is {size} bytes, over the {MAX_VALUE_BYTES}-byte limit of a "
                f"standard parameter; shorten it"
            )
        self._put(name, value, secure=secure, overwrite=overwrite)

    def delete(self, name: str) -> bool:
        """Delete *name*; return whether it existed."""
        return self._delete(name)

    def delete_if(self, name: str, value: str) -> bool:
        """Delete *name* only if it holds *value*; return whether it was deleted.

        Stores with a conditional delete do it in one step. The default reads,
        then deletes: another writer could replace the value in between (SSM
        has no conditional delete), which only matters for a lock someone
        broke with ``unlock --force`` and re-took within that round trip.
        """
        if self.get(name) != value:
            return False
        return self.delete(name)

    def replace_if(self, name: str, expected: str, value: str) -> bool:
        """Write *value* (a plain value) under *name* only while it holds *expected*;
        True when written. Of callers racing to replace one *expected*, at most one
        ever succeeds; *expected* never comes back once replaced, and *value* is the
        caller's own (a lock's values carry a random token).

        Stores with a conditional write do it in one step. The default builds on
        create-only writes (SSM has no conditional overwrite): the one caller that
        creates the claim ``{name}-claim-{hash of expected}`` may overwrite, once it
        read *expected* again. The claim stays, so that a caller that read *expected*
        late (or from a lagging replica of the store) still loses; :meth:`drop_claim`
        removes it when no such caller can be left. A claim that already holds
        *value* is this caller's: a create-only write the store applied but whose
        reply was lost, which the client then retried.
        """
        claim = claim_name(name, expected)
        try:
            self.put(claim, value, secure=False, overwrite=False)
        except ParameterExists:
            if self.get(claim) != value:
                return False
        if self.get(name) != expected:
            # Replaced before we claimed it (and that claim dropped): ours guards nothing.
            with contextlib.suppress(CredflipError):
                self.drop_claim(name, expected)
            return False
        self.put(name, value, secure=False)
        return True

    def drop_claim(self, name: str, expected: str) -> None:
        """Remove the claim a :meth:`replace_if` of *expected* left (none: nothing happens)."""
        self.delete(claim_name(name, expected))

    @property
    def write_key(self) -> str | None:
        """The encryption key secure values are written with (None: the store has no keys)."""
        return None

    def other_keys(self, names: Sequence[str]) -> dict[str, str]:
        """The secure values among *names* encrypted under another key than this store
        writes with, each with its key; stores without keys have none."""
        return {}

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release the store's resources."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @abc.abstractmethod
    def _get_many(self, names: list[str]) -> dict[str, str]: ...

    @abc.abstractmethod
    def _get_path(self, folder: str, *, secure: bool) -> dict[str, str]: ...

    @abc.abstractmethod
    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool) -> None: ...

    @abc.abstractmethod
    def _delete(self, name: str) -> bool: ...


def claim_name(name: str, expected: str) -> str:
    """The parameter that claims the one replacement of *expected* under *name*."""
    return f"{name}-claim-{hashlib.sha256(expected.encode()).hexdigest()[:16]}"
