"""Every instance of an env's database, each read through the admin's login.

Sessions and counters are per instance: a session of the old user on a read
replica is invisible from the primary. The drain, ``status``, ``verify`` and
``--terminate`` therefore work on a :class:`Fleet`: the admin URL's host (the
primary, always first), the hosts of both colors' URLs, the instances the
operator named (``--instance``, kept in the env's state), and on Aurora every
instance of the cluster. Each is reached with the admin URL's user, password,
database and options, on its own host and port. A replica that one of them
streams to but none of them is (:mod:`credflip.replicas`) makes the drain blind there:
:meth:`Fleet.unwatched` names it.

The package: :mod:`.addresses` (where each instance is), :mod:`.discovery`
(Aurora members), :mod:`.connections` (one admin connection each, and the
drain's reads through them), :mod:`.pooled` (what the env's PgBouncer changes
in those reads, and ending its connections of a user) and :mod:`.fleet`
(:class:`Fleet`: finding the instances, and what they can show the drain).
A URL that goes through the env's PgBouncer names the pooler, not an instance.
"""

from __future__ import annotations

from .addresses import Instance, format_address, gather, normalize, parse_address
from .fleet import Fleet

__all__ = ["Fleet", "Instance", "format_address", "gather", "normalize", "parse_address"]
