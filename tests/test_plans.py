"""The engines' plans as data: statements built from catalog snapshots, no server."""

from __future__ import annotations

import pytest

from credflip.engines.base import Step
from credflip.engines.mysql import plan as my
from credflip.engines.postgres import plan as pg
from credflip.engines.postgres.catalog import Attributes, Grant, Membership
from credflip.errors import EngineError


def text(steps: list[Step]) -> list[str]:
    return [s.sql.as_string(None) for s in steps]


def test_memberships_with_and_without_options() -> None:
    want = {
        "app_owner": Membership(False, True, True),
        "pg_monitor": Membership(True, False, False),
    }
    have = {"app_owner": Membership(False, True, True), "old_role": Membership(False, True, True)}
    assert text(pg.sync_memberships(want, have, "app_green", revoke_extra=True, options=True)) == [
        'GRANT "pg_monitor" TO "app_green" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE',
        'REVOKE "old_role" FROM "app_green"',
    ]
    # Before 16 only ADMIN OPTION exists; nothing is revoked unless asked.
    want15 = {"r": Membership(True), "s": Membership(False)}
    have15 = {"s": Membership(True), "t": Membership(False)}
    assert text(pg.sync_memberships(want15, have15, "g", revoke_extra=False, options=False)) == [
        'GRANT "r" TO "g" WITH ADMIN OPTION',
        'REVOKE ADMIN OPTION FOR "s" FROM "g"',
    ]


def test_grants_are_diffed_and_quoted() -> None:
    select = Grant("TABLE", "my schema", "orders", "", "", "SELECT", False)
    update_col = Grant("COLUMN", "public", "t", "", "note", "UPDATE", True)
    extra = Grant("SCHEMA", "", "billing", "", "", "USAGE", False)
    steps = pg.sync_grants(
        [select, update_col], [extra, select], "app_green", revoke_extra=True, database="shop"
    )
    assert text(steps) == [
        'GRANT UPDATE ("note") ON TABLE "public"."t" TO "app_green" WITH GRANT OPTION',
        'REVOKE USAGE ON SCHEMA "billing" FROM "app_green"',
    ]
    assert {s.database for s in steps} == {"shop"}
    assert "WITH GRANT OPTION to give UPDATE on table public.t column note" in steps[0].hint
    with pytest.raises(EngineError, match="unknown privilege"):
        pg.grant_sql(select._replace(privilege="DROP TABLE x; --"), "r", revoke=False)


def test_settings_keep_lists_as_lists() -> None:
    want = {("", "search_path"): 'billing, "$user", public', ("shop", "work_mem"): "8MB"}
    have = {("", "statement_timeout"): "7s"}
    assert text(pg.sync_settings(want, have, "g")) == [
        "ALTER ROLE \"g\" SET \"search_path\" TO 'billing', '$user', 'public'",
        'ALTER ROLE "g" IN DATABASE "shop" SET "work_mem" TO \'8MB\'',
        'ALTER ROLE "g" RESET "statement_timeout"',
    ]


def test_role_statements() -> None:
    assert text([pg.set_attributes("u", Attributes(True, False, 5))]) == [
        'ALTER ROLE "u" WITH CREATEDB NOINHERIT CONNECTION LIMIT 5'
    ]
    assert text([pg.set_role_setting("u", None), pg.set_role_setting("u", "g")]) == [
        'ALTER ROLE "u" RESET role',
        "ALTER ROLE \"u\" SET role = 'g'",
    ]
    assert text([pg.reassign_owned(["a", "b"], "g", "shop")]) == [
        'REASSIGN OWNED BY "a", "b" TO "g"'
    ]
    assert text([pg.revoke_self("g", "SET"), pg.revoke_self("g")]) == [
        'REVOKE SET OPTION FOR "g" FROM CURRENT_USER',
        'REVOKE "g" FROM CURRENT_USER',
    ]
    with pytest.raises(EngineError):
        pg.revoke_self("g", "ADMIN; DROP")


LINES = [
    "GRANT USAGE ON *.* TO `app`@`%`",
    "GRANT SELECT, INSERT ON `shop\\_%`.* TO `app`@`%`",
    "GRANT `reporting` TO `app`@`%`",
]


def test_mysql_grants_are_replayed_for_the_target_with_its_account_as_parameters() -> None:
    steps = my.copy_grants(LINES, "app", "app_green", "%")
    assert [(s.sql, s.params) for s in steps] == [
        ("GRANT SELECT, INSERT ON `shop\\_%%`.* TO %s@%s", ("app_green", "%")),
        ("GRANT `reporting` TO %s@%s", ("app_green", "%")),
    ]
    # The driver's own substitution turns %% back into %.
    assert steps[0].sql % ("'app_green'", "'%'") == (
        "GRANT SELECT, INSERT ON `shop\\_%`.* TO 'app_green'@'%'"
    )
    with pytest.raises(EngineError, match="cannot read SHOW GRANTS"):
        my.copy_grants(["GRANT SELECT ON *.* TO `other`@`%`"], "app", "g", "%")


def test_mysql_revoke_and_passwords() -> None:
    steps = my.revoke_everything(LINES, "app", "%")
    assert [s.sql for s in steps] == [
        "REVOKE `reporting` FROM %s@%s",
        "REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s",
    ]
    maria = my.set_password("u", "%", "pw", plugin="mysql_native_password", mariadb=True)
    assert maria.sql == "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s"
    assert maria.params == ("u", "%", my.native_password_hash("pw"))
    sha2 = my.set_password("u", "%", "pw", plugin="caching_sha2_password", mariadb=False)
    assert "caching_sha2_password BY %s" in sha2.sql and sha2.params == ("u", "%", "pw")
    limits = my.tls_and_limits(
        "CREATE USER `app`@`%` IDENTIFIED BY PASSWORD '*AB' REQUIRE SSL WITH "
        "MAX_USER_CONNECTIONS 40",
        "app",
        "g",
        "%",
    )
    assert limits.sql == "ALTER USER %s@%s REQUIRE SSL WITH MAX_USER_CONNECTIONS 40"
