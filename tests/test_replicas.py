"""Matching the replicas the servers report against the instances the drain watches.

Pure: host names go through a resolver given to :func:`match` (the real one,
``getaddrinfo``, is checked on the names every machine has).
"""

from __future__ import annotations

import pytest

from credflip.replicas import KnownReplica, addresses, match

PRIMARY = ("127.0.0.1", 5432)

#: A small private name service: what the fleet's host names resolve to.
NAMES = {
    "db-1.internal": {"10.0.0.5"},
    "db-2.internal": {"10.0.0.7"},
    "db-2-alias.internal": {"10.0.0.7"},
    "db-3.internal": {"10.0.0.8"},
}


def resolve(host: str) -> frozenset[str]:
    if host in NAMES:
        return frozenset(NAMES[host])
    return addresses(host)


def standby(
    host: str, port: int | None = None, of: tuple[str, int | None] = PRIMARY
) -> KnownReplica:
    return KnownReplica(host, port, of, "standby")


def test_loopback_names_and_addresses_are_one_host() -> None:
    assert addresses("127.0.0.1") == addresses("localhost") == addresses("::1")
    assert addresses("::ffff:127.0.0.1") == addresses("127.0.0.1")
    assert addresses("10.0.0.7") == {"10.0.0.7"}
    # A name that does not resolve stands for itself.
    assert addresses("No-Such-Host.invalid") == {"no-such-host.invalid"}


def test_a_standby_nobody_watches_is_named_with_what_to_add() -> None:
    check = match([standby("127.0.0.1")], [PRIMARY], resolve=resolve)
    assert check.blocking() == [
        "standby 127.0.0.1 of 127.0.0.1:5432: add --instance 127.0.0.1:PORT (the port it "
        "serves on), or --unwatched-ok 127.0.0.1"
    ]
    assert check.notes() == []


def test_a_watched_standby_matches_by_address_not_by_name() -> None:
    # Reported as 127.0.0.1 (its connection's address), watched as localhost:5433.
    assert (
        match([standby("127.0.0.1")], [PRIMARY, ("localhost", 5433)], resolve=resolve).blocking()
        == []
    )
    # A replica reporting a name, watched at its address.
    rep = KnownReplica("db-2.internal", 3306, ("db-1.internal", 3306))
    assert (
        match([rep], [("db-1.internal", 3306), ("10.0.0.7", 3306)], resolve=resolve).blocking()
        == []
    )


def test_the_reporting_server_never_stands_for_its_own_replica() -> None:
    # The primary also appears as a writer URL under another name: still itself.
    watched = [PRIMARY, ("localhost", 5432)]
    assert len(match([standby("127.0.0.1")], watched, resolve=resolve).unwatched) == 1


def test_ports_are_compared_when_both_sides_know_them() -> None:
    of = ("db-1.internal", 3306)
    rep = KnownReplica("10.0.0.7", 3307, of)
    other_port = match([rep], [of, ("db-2.internal", 3306)], resolve=resolve)
    assert [r.address for r in other_port.unwatched] == ["10.0.0.7:3307"]
    assert "add --instance 10.0.0.7:3307, or --unwatched-ok 10.0.0.7" in other_port.blocking()[0]
    assert match([rep], [of, ("db-2.internal", 3307)], resolve=resolve).blocking() == []
    # Port unknown on the replica's side: the address decides.
    portless = KnownReplica("10.0.0.7", None, of)
    assert match([portless], [of, ("db-2.internal", 3306)], resolve=resolve).blocking() == []


def test_each_watched_instance_stands_for_one_replica() -> None:
    found = [standby("127.0.0.1"), standby("127.0.0.1")]
    one = match(found, [PRIMARY, ("127.0.0.1", 5433)], resolve=resolve)
    assert len(one.unwatched) == 1
    assert (
        match(
            found, [PRIMARY, ("127.0.0.1", 5433), ("127.0.0.1", 5434)], resolve=resolve
        ).blocking()
        == []
    )


def test_an_exact_port_match_is_not_taken_by_a_portless_replica() -> None:
    of = ("db-1.internal", 3306)
    found = [KnownReplica("10.0.0.7", None, of), KnownReplica("10.0.0.7", 3307, of)]
    check = match(found, [of, ("10.0.0.7", 3307)], resolve=resolve)
    assert [(r.host, r.port) for r in check.unwatched] == [("10.0.0.7", None)]


def test_unwatched_ok_accepts_by_host_or_address_and_port() -> None:
    of = ("db-1.internal", 3306)
    rep = KnownReplica("10.0.0.7", 3307, of)
    for ok in ([("10.0.0.7", None)], [("db-2.internal", None)], [("db-2-alias.internal", 3307)]):
        check = match([rep], [of], ok, resolve=resolve)
        assert check.blocking() == [], ok
        assert check.notes() == [
            "not watching replica 10.0.0.7:3307 of db-1.internal:3306 (--unwatched-ok): "
            "clients of the old user there are not seen"
        ]
    for ok in ([("10.0.0.8", None)], [("db-3.internal", None)], [("10.0.0.7", 3308)]):
        assert len(match([rep], [of], ok, resolve=resolve).unwatched) == 1, ok


def test_an_aurora_member_nobody_located_is_accepted_by_its_identifier_only() -> None:
    member = KnownReplica(
        "shop-2", None, ("db.example.com", 5432), "Aurora instance", why="no AWS_REGION set"
    )
    check = match([member], [("db.example.com", 5432), ("shop-2", 5432)], resolve=resolve)
    assert check.blocking() == [
        "Aurora instance shop-2 of the cluster at db.example.com:5432 (no AWS_REGION set): "
        "add --instance with its endpoint, or --unwatched-ok shop-2"
    ]
    assert (
        match([member], [("db.example.com", 5432)], [("shop-2", None)], resolve=resolve).blocking()
        == []
    )


def test_a_replica_two_servers_report_is_named_once_and_problems_follow() -> None:
    writer = ("10.0.0.5", 3306)
    found = [
        KnownReplica("10.0.0.9", None, writer),
        KnownReplica("10.0.0.9", None, ("db-1.internal", 3306)),
    ]
    check = match(
        found,
        [writer, ("db-1.internal", 3306)],
        problems=["cannot list the replicas of x: y"],
        resolve=resolve,
    )
    assert len(check.unwatched) == 1
    assert check.blocking()[-1] == "cannot list the replicas of x: y"


@pytest.mark.parametrize(
    ("host", "shown"), [("fd00::7", "[fd00::7]:PORT"), ("10.0.0.7", "10.0.0.7:PORT")]
)
def test_ipv6_addresses_are_written_as_options_take_them(host: str, shown: str) -> None:
    assert f"--instance {shown} " in standby(host).advice()


def test_a_cascaded_standby_on_the_primarys_host_is_not_taken_for_the_primary() -> None:
    """P (watched, primary) streams to S1 (watched); S1 streams to S2 on the same host as
    P, on a port nobody reports (PostgreSQL): S2 is unwatched, whatever P's address."""
    primary, s1 = ("10.0.0.1", 5432), ("10.0.0.2", 5432)
    found = [
        KnownReplica("10.0.0.2", None, primary),
        KnownReplica("10.0.0.1", None, s1),
    ]
    check = match(found, [primary, s1], resolve=lambda h: frozenset({h}))
    assert [r.host for r in check.unwatched] == ["10.0.0.1"]
    # The primary watched under a second name reports S1 twice: one replica, watched.
    names = {"db-1": frozenset({"10.0.0.1"}), "10.0.0.1": frozenset({"10.0.0.1"})}
    twice = [
        KnownReplica("10.0.0.2", None, primary),
        KnownReplica("10.0.0.2", None, ("db-1", 5432)),
    ]
    check = match(
        twice,
        [primary, ("db-1", 5432), s1],
        resolve=lambda h: names.get(h, frozenset({h})),
    )
    assert not check.unwatched
