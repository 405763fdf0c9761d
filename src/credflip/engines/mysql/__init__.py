"""MySQL and MariaDB: the engine (:mod:`.engine`) composed of its connection
(:mod:`.connection`), its reads of accounts (:mod:`.catalog`), users and their rights
(:mod:`.grants`) and what it observes (:mod:`.observe`); its statements as data
(:mod:`.plan`, :mod:`.rights`) and what it shows the drain (:mod:`.signals`)."""

from .engine import MysqlEngine
from .plan import native_password_hash

__all__ = ["MysqlEngine", "native_password_hash"]
