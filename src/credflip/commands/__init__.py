"""The commands besides rotate and rollback: init, status, history, unlock.

Each is a plain function over a store and a layout that returns data and
raises :class:`~credflip.errors.CredflipError`; the CLI only formats.

The package, by command: :mod:`.adopt` (``init``), :mod:`.overview`
(``status``), :mod:`.signals` (what the drain sees on each instance, for both)
and :mod:`.admin` (the admin URL, ``history``, ``unlock``).
"""

from __future__ import annotations

from .admin import admin_url_for, describe_time, history, save_admin_url, unlock
from .adopt import InitResult, init
from .overview import ColorStatus, Status, earliest_retire, status
from .signals import InstanceStatus, drain_report, enable_signals

__all__ = [
    "ColorStatus",
    "InitResult",
    "InstanceStatus",
    "Status",
    "admin_url_for",
    "describe_time",
    "drain_report",
    "earliest_retire",
    "enable_signals",
    "history",
    "init",
    "save_admin_url",
    "status",
    "unlock",
]
