"""MySQL and MariaDB: the engine (:mod:`.engine`), its statements as data (:mod:`.plan`)
and what it shows the drain (:mod:`.signals`)."""

from .engine import MysqlEngine
from .plan import native_password_hash

__all__ = ["MysqlEngine", "native_password_hash"]
