"""The commands besides rotate and rollback: init, status, history, unlock.

Each is a plain function over a store and a layout that returns data and
raises :class:`~credflip.errors.CredflipError`; the CLI only formats.

The package, by command: :mod:`.adopt` (``init``), :mod:`.overview`
(``status``), :mod:`.fleet` (``status --all``), :mod:`.signals` (what the
drain sees on each instance, for both), :mod:`.admin` (the admin URL,
``history``, ``unlock``) and :mod:`.pooler` (the env's PgBouncer,
``pooler-userlist``).
"""

from __future__ import annotations

from ..halt import Halt
from .admin import admin_url_for, describe_time, history, save_admin_url, unlock
from .adopt import InitResult, init
from .fleet import DrainView, EnvRow, FleetStatus, status_all
from .overview import ColorStatus, Status, earliest_retire, status, window_dict
from .pooler import UserlistLine, check_pooler, pooler_userlist, save_pooler_url
from .signals import InstanceStatus, drain_report, enable_signals

__all__ = [
    "ColorStatus",
    "DrainView",
    "EnvRow",
    "FleetStatus",
    "Halt",
    "InitResult",
    "InstanceStatus",
    "Status",
    "UserlistLine",
    "admin_url_for",
    "check_pooler",
    "describe_time",
    "drain_report",
    "earliest_retire",
    "enable_signals",
    "history",
    "init",
    "pooler_userlist",
    "save_admin_url",
    "save_pooler_url",
    "status",
    "status_all",
    "unlock",
    "window_dict",
]
