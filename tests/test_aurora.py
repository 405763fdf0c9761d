"""Aurora instance discovery: endpoint names, and the RDS API on moto."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import boto3
import pytest
from apps import App
from helpers import dump
from psycopg import sql

from credflip import commands
from credflip.aurora import describe_cluster, parse_host
from credflip.engines import engine_for
from credflip.errors import ConfigurationError
from credflip.instances import Fleet, parse_address
from credflip.layout import Layout
from credflip.rotation import RotateOptions, rotate
from credflip.stores.sqlite import SqliteStore
from credflip.urls import DbUrl


@pytest.mark.parametrize(
    ("host", "name", "cluster", "instance"),
    [
        (
            "shop.cluster-c9abc.eu-west-1.rds.amazonaws.com",
            "shop",
            True,
            "shop-2.c9abc.eu-west-1.rds.amazonaws.com",
        ),
        (
            "shop.cluster-ro-c9abc.eu-west-1.rds.amazonaws.com",
            "shop",
            True,
            "shop-2.c9abc.eu-west-1.rds.amazonaws.com",
        ),
        (
            "reports.cluster-custom-c9abc.us-gov-west-1.rds.amazonaws.com",
            "reports",
            True,
            "shop-2.c9abc.us-gov-west-1.rds.amazonaws.com",
        ),
        (
            "Shop-1.C9ABC.eu-west-1.rds.amazonaws.com",
            "shop-1",
            False,
            "shop-2.c9abc.eu-west-1.rds.amazonaws.com",
        ),
        (
            "shop.cluster-c9abc.cn-north-1.rds.amazonaws.com.cn",
            "shop",
            True,
            "shop-2.c9abc.cn-north-1.rds.amazonaws.com.cn",
        ),
    ],
)
def test_endpoint_names(host: str, name: str, cluster: bool, instance: str) -> None:
    parsed = parse_host(host)
    assert parsed is not None
    assert (parsed.name, parsed.cluster) == (name, cluster)
    assert parsed.instance("shop-2") == instance


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "db.internal", "shop.cluster-c9abc.eu-west-1.example.com", "rds.amazonaws.com"],
)
def test_other_hosts_are_not_rds(host: str) -> None:
    assert parse_host(host) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("db-2", ("db-2", None)), ("DB-2:5433", ("db-2", 5433)), ("[::1]:5432", ("::1", 5432))],
)
def test_instance_addresses(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "db:0", "db:99999", "db:x", "a b", "user@db"])
def test_bad_instance_addresses(text: str) -> None:
    with pytest.raises(Exception, match="invalid --instance"):
        parse_address(text)


_clusters = itertools.count(1)


@pytest.fixture
def rds(moto_endpoint: str) -> tuple[Any, str]:
    """A cluster with a writer and two readers on moto's RDS; yields (client, cluster id)."""
    client = boto3.client("rds", region_name="us-east-1", endpoint_url=moto_endpoint)
    cluster = f"shop{next(_clusters)}"
    client.create_db_cluster(
        DBClusterIdentifier=cluster,
        Engine="aurora-postgresql",
        MasterUsername="master",
        MasterUserPassword="not-a-real-one",
    )
    for n in (1, 2, 3):
        client.create_db_instance(
            DBInstanceIdentifier=f"{cluster}-{n}",
            DBInstanceClass="db.r6g.large",
            Engine="aurora-postgresql",
            DBClusterIdentifier=cluster,
        )
    return client, cluster


def test_the_rds_api_lists_a_writer_and_two_readers(rds: tuple[Any, str]) -> None:
    client, cluster = rds
    found = describe_cluster(cluster, "us-east-1", client=client)
    assert [host.split(".")[0] for host, _port in found] == [
        f"{cluster}-1",
        f"{cluster}-2",
        f"{cluster}-3",
    ]
    assert all(port > 0 for _host, port in found)


def test_an_unknown_cluster_says_what_to_do(rds: tuple[Any, str]) -> None:
    with pytest.raises(ConfigurationError, match="rds:DescribeDBClusters"):
        describe_cluster("nope", "us-east-1", client=rds[0])


def test_a_reader_endpoint_is_replaced_by_every_instance(
    rds: tuple[Any, str], app: App, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's server is not Aurora here, so the reader URL's cluster endpoint makes
    the fleet ask the RDS API (the way it does when the cluster hides its topology)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_RDS", moto_endpoint)
    client, cluster = rds
    described = client.describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
    reader_endpoint = described["ReaderEndpoint"]
    reader = DbUrl("postgresql", reader_endpoint, "app", "x", 5432, "shop")
    with engine_for(app.admin_url) as eng:
        fleet = Fleet.of(eng, urls=[("blue reader URL", reader)])
        try:
            assert [i.source for i in fleet.instances] == [
                "admin URL",
                "Aurora",
                "Aurora",
                "Aurora",
            ]
            assert reader_endpoint not in fleet.describe()
            names = [i.host.split(".")[0] for i in fleet.replicas]
            assert names == [f"{cluster}-1", f"{cluster}-2", f"{cluster}-3"]
        finally:
            fleet.close()


# -- Aurora behind a DNS name of one's own ----------------------------------------


def looks_like_aurora(app: App, members: list[str]) -> None:
    """Give the app's database Aurora PostgreSQL's topology function, listing *members*.

    The server is a plain PostgreSQL reached as 127.0.0.1, the way an Aurora
    cluster is reached through a CNAME that is not an RDS endpoint: only the
    function's rows stand in for Aurora's.
    """
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, now())").format(
            sql.Literal(member), sql.Literal("MASTER_SESSION_ID" if n == 0 else f"s{n}")
        )
        for n, member in enumerate(members)
    )
    with app.su() as conn:
        body = sql.SQL("SELECT * FROM (VALUES {}) v").format(rows).as_string(conn)
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.aurora_replica_status() RETURNS TABLE (server_id text, "
                "session_id text, last_update_timestamp timestamptz) LANGUAGE sql AS {}"
            ).format(sql.Literal(body))
        )


def test_aurora_behind_a_cname_is_watched_where_the_rds_api_says(
    rds: tuple[Any, str], app: App, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_RDS", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client, cluster = rds
    looks_like_aurora(app, [f"{cluster}-1", f"{cluster}-2", f"{cluster}-3"])
    notes: list[str] = []
    with engine_for(app.admin_url) as eng:
        fleet = Fleet.of(eng, notice=notes.append)
        try:
            assert [i.source for i in fleet.instances] == [
                "admin URL",
                "Aurora",
                "Aurora",
                "Aurora",
            ]
            endpoints = client.describe_db_instances(DBInstanceIdentifier=f"{cluster}-2")
            address = endpoints["DBInstances"][0]["Endpoint"]["Address"]
            assert address.lower() in [i.host for i in fleet.replicas]
            assert fleet.unlocated == []
            assert any("Aurora behind a name that is not an RDS endpoint" in n for n in notes)
        finally:
            fleet.close()
    # A member the API does not know stays unlocated, and says why.
    members = [f"{cluster}-1", "gone-7"]
    with app.su() as conn:
        conn.execute("DROP FUNCTION public.aurora_replica_status()")
    looks_like_aurora(app, members)
    with engine_for(app.admin_url) as eng:
        fleet = Fleet.of(eng)
        try:
            assert [i.source for i in fleet.instances] == ["admin URL", "Aurora"]
            # (The member it located is at moto's made-up endpoint: unreachable.)
            assert fleet.unwatched()[0] == (
                f"Aurora instance gone-7 of the cluster at 127.0.0.1:{app.admin_url.port} (the "
                f"RDS API does not know it): add --instance with its endpoint, or --unwatched-ok "
                f"gone-7"
            )
        finally:
            fleet.close()


def test_aurora_behind_a_cname_without_the_rds_api_refuses_before_anything_changes(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    looks_like_aurora(app, ["shop-1", "shop-2"])
    layout = Layout("cname")
    with SqliteStore(tmp_path / "params.db") as store:
        commands.init(store, layout, admin_url=app.admin_url, writer_url=app.url)
        before = dump(store)
        with pytest.raises(ConfigurationError) as caught:
            rotate(store, layout, admin_url=app.admin_url, options=RotateOptions(client_ttl=0.3))
        message = str(caught.value)
        port = app.admin_url.port
        assert (
            f"Aurora instance shop-2 of the cluster at 127.0.0.1:{port} (no AWS_REGION set to ask "
            f"the RDS API for its endpoint): add --instance with its endpoint, or --unwatched-ok "
            f"shop-2; nothing was changed"
        ) in message
        assert "Aurora instance shop-1 " in message
        assert dump(store) == before
        options = RotateOptions(client_ttl=0.3, quiet=1.0, unwatched_ok=("shop-1", "shop-2"))
        result = rotate(store, layout, admin_url=app.admin_url, options=options)
        assert result.finished


def test_a_reader_cname_into_the_cluster_is_not_watched_and_a_new_member_is_named(
    rds: tuple[Any, str], app: App, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader URL at a name of one's own reaches one member at random: the members
    are watched at their own endpoints instead. A member that joins later (autoscaling)
    is named as unwatched."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_RDS", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    _client, cluster = rds
    members = [f"{cluster}-1", f"{cluster}-2", f"{cluster}-3"]
    looks_like_aurora(app, members)
    with app.su() as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.aurora_db_instance_identifier() RETURNS text "
                "LANGUAGE sql AS {}"
            ).format(sql.Literal(f"SELECT {sql.Literal(members[1]).as_string(conn)}::text"))
        )
    reader = DbUrl("postgresql", "localhost", app.user, app.password, app.url.port, app.database)
    notes: list[str] = []
    with engine_for(app.admin_url) as eng:
        fleet = Fleet.of(eng, urls=[("reader URL", reader)], notice=notes.append)
        try:
            assert [i.source for i in fleet.instances] == ["admin URL"] + ["Aurora"] * 3
            assert f"localhost:{app.url.port} (reader URL) leads to Aurora instance " in "".join(
                notes
            )
            # (The members' endpoints are moto's made-up ones: unreachable.)
            assert fleet.new_members() == []
            with app.su() as conn:
                conn.execute("DROP FUNCTION public.aurora_replica_status()")
            looks_like_aurora(app, [*members, f"{cluster}-4"])
            (new,) = fleet.new_members()
            assert new.advice() == (
                f"Aurora instance {cluster}-4 of the cluster at 127.0.0.1:{app.admin_url.port} "
                f"(it joined after the drain began): add --instance with its endpoint, or "
                f"--unwatched-ok {cluster}-4"
            )
            assert new.advice() in fleet.unwatched()
        finally:
            fleet.close()
