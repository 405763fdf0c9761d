"""The engines' plans as data: statements built from catalog snapshots, no server."""

from __future__ import annotations

import pytest

from credflip.engines.base import Step
from credflip.engines.mysql import plan as my
from credflip.engines.mysql import rights
from credflip.engines.postgres import plan as pg
from credflip.engines.postgres import plan_defaults as pg_defaults
from credflip.engines.postgres.catalog import Attributes, DefaultGrant, Grant, Membership
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


def test_column_grants_a_table_revoke_takes_are_given_again_in_its_transaction() -> None:
    """REVOKE SELECT ON t takes SELECT (c) ON t too: the column grant wanted, whether held
    already or not, follows the revoke in the same statement string (one transaction)."""
    table = Grant("TABLE", "public", "t", "", "", "SELECT", False)
    column = Grant("COLUMN", "public", "t", "", "id", "SELECT", True)
    other = Grant("COLUMN", "public", "t", "", "note", "UPDATE", False)
    steps = pg.sync_grants([column, other], [table], "blue", revoke_extra=True, database="")
    assert text(steps) == [
        'GRANT UPDATE ("note") ON TABLE "public"."t" TO "blue"',
        'REVOKE SELECT ON TABLE "public"."t" FROM "blue"; '
        'GRANT SELECT ("id") ON TABLE "public"."t" TO "blue" WITH GRANT OPTION',
    ]
    assert "to take back SELECT on table public.t and WITH GRANT OPTION" in steps[1].hint
    held = pg.sync_grants([column], [table, column], "blue", revoke_extra=True, database="")
    assert text(held) == text(steps)[1:]
    # Only the grant option of the table's right: the column's is given again too.
    option = pg.sync_grants(
        [table, column], [table._replace(grantable=True), column], "g", revoke_extra=False,
        database="",
    )  # fmt: skip
    assert text(option) == [
        'REVOKE GRANT OPTION FOR SELECT ON TABLE "public"."t" FROM "g"; '
        'GRANT SELECT ("id") ON TABLE "public"."t" TO "g" WITH GRANT OPTION'
    ]


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


def test_colors_get_the_groups_default_privileges_by_difference() -> None:
    def d(kind: str, grantee: str, *privs: str, schema: str = "", option: bool = False) -> set:
        return {DefaultGrant(schema, kind, grantee, p, option) for p in privs}

    # The group's defaults: its own rights as owner, SELECT for reporting, no PUBLIC
    # EXECUTE on new functions, and a grant in one schema.
    group = (
        d("r", "app_owner", "SELECT", "INSERT")
        | d("r", "reporting", "SELECT")
        | d("f", "app_owner", "EXECUTE")
        | d("S", "reporting", "USAGE", schema="my schema")
        | d("r", "app", "DELETE")  # to the user itself: it owns what it creates
    )
    want = pg_defaults.like_group(group, "app")
    # The user's: the built-in ones, its own rights, and one the group does not give.
    have = (
        pg_defaults.BUILT_IN
        | d("r", "app", "SELECT", "INSERT", "DELETE")
        | d("r", "reporting", "SELECT", "UPDATE", option=True)
    )
    steps = pg_defaults.sync_default_acl(want, have, "app", "shop")
    head = 'ALTER DEFAULT PRIVILEGES FOR ROLE "app" '
    assert text(steps) == [
        f'{head}GRANT EXECUTE ON FUNCTIONS TO "app_owner"',
        f'{head}GRANT INSERT, SELECT ON TABLES TO "app_owner"',
        f'{head}IN SCHEMA "my schema" GRANT USAGE ON SEQUENCES TO "reporting"',
        f'{head}REVOKE GRANT OPTION FOR SELECT ON TABLES FROM "reporting"',
        f"{head}REVOKE USAGE ON TYPES FROM PUBLIC",
        f"{head}REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        f'{head}REVOKE UPDATE ON TABLES FROM "reporting"',
    ]
    assert {s.database for s in steps} == {"shop"}
    # Equal: no statement at all.
    assert pg_defaults.sync_default_acl(want, want | d("r", "app", "SELECT"), "app", "shop") == []
    with pytest.raises(EngineError, match="unknown privilege"):
        pg_defaults.sync_default_acl(d("r", "g", "ALL; DROP"), set(), "app", "shop")


def _p(kind: str, db: str, name: str, privilege: str, column: str = "") -> rights.Privilege:
    return rights.Privilege(kind, db, name, privilege, column)


def _sql(steps: list[Step]) -> list[str]:
    """The statements as the driver sends them, with the account bound."""
    return [s.sql % tuple(repr(p) for p in s.params or ()) for s in steps]


def test_mysql_rights_change_by_difference_granting_before_revoking() -> None:
    orders, invoices = ("TABLE", "shop", "orders"), ("TABLE", "shop", "invoices")
    both = {_p("DATABASE", "shop", "", "SELECT"), _p(*orders, "TRIGGER")}
    source = rights.Rights(
        frozenset(
            both
            | {
                _p(*orders, "UPDATE", "color"),
                _p(*orders, "UPDATE", "at"),
                _p(*invoices, "SELECT"),
                _p(*invoices, rights.GRANT_OPTION),
                _p("PROCEDURE", "shop", "add_numbers", "EXECUTE"),
                _p("DATABASE", "shop\\_%", "", "INSERT"),
            }
        ),
        roles={rights.Role("reporting"): False, rights.Role("ops"): True},
        proxies={("app", "%"): False},
        default_roles=(rights.Role("reporting"),),
    )
    target = rights.Rights(
        frozenset(both | {_p("", "", "", "PROCESS"), _p("DATABASE", "shop", "", "DROP")}),
        roles={rights.Role("ops"): True, rights.Role("old"): False},
    )
    grants, revokes = rights.plan_sync(source, target, "app_green", "%", mariadb=True)
    assert _sql(grants) == [
        "GRANT `reporting` TO 'app_green'@'%'",
        "GRANT PROXY ON 'app'@'%' TO 'app_green'@'%'",
        "GRANT INSERT ON `shop\\_%`.* TO 'app_green'@'%'",
        "GRANT EXECUTE ON PROCEDURE `shop`.`add_numbers` TO 'app_green'@'%'",
        "GRANT SELECT ON `shop`.`invoices` TO 'app_green'@'%' WITH GRANT OPTION",
        "GRANT UPDATE (`at`, `color`) ON `shop`.`orders` TO 'app_green'@'%'",
    ]
    assert _sql(revokes) == [
        "REVOKE PROCESS ON *.* FROM 'app_green'@'%'",
        "REVOKE DROP ON `shop`.* FROM 'app_green'@'%'",
        "REVOKE `old` FROM 'app_green'@'%'",
        "SET DEFAULT ROLE `reporting` FOR 'app_green'@'%'",  # last
    ]
    assert all("WITH GRANT OPTION" in s.hint for s in grants + revokes if "ROLE" not in s.sql)
    # Equal rights: nothing at all.
    assert rights.plan_sync(source, source, "app_green", "%", mariadb=True) == ([], [])
    # What an account holds beyond another's, for the refusal to drop it.
    assert target.beyond(source) == ["PROCESS ON *.*", "DROP ON shop.*", "role old"]


def test_mysql_column_privileges_a_table_revoke_takes_are_granted_after_it() -> None:
    t, u = ("TABLE", "shop", "t"), ("TABLE", "shop", "u")
    source = rights.Rights(
        frozenset({_p(*t, "SELECT", "c"), _p(*t, "UPDATE", "c"), _p(*u, "SELECT")})
    )
    target = rights.Rights(frozenset({_p(*t, "SELECT"), _p(*t, "UPDATE", "c"), _p(*u, "INSERT")}))
    grants, revokes = rights.plan_sync(source, target, "g", "%", mariadb=True)
    assert _sql(grants) == ["GRANT SELECT ON `shop`.`u` TO 'g'@'%'"]
    assert _sql(revokes) == [
        "REVOKE SELECT ON `shop`.`t` FROM 'g'@'%'",
        "GRANT SELECT (`c`) ON `shop`.`t` TO 'g'@'%'",  # UPDATE (c) stayed
        "REVOKE INSERT ON `shop`.`u` FROM 'g'@'%'",
    ]


def test_mysql_options_roles_and_proxies_lost_or_narrowed() -> None:
    t = ("TABLE", "shop", "t")
    source = rights.Rights(
        frozenset({_p(*t, "SELECT")}),
        roles={rights.Role("r", "%"): False},
        proxies={("p", "%"): False},
    )
    target = rights.Rights(
        frozenset({_p(*t, "SELECT"), _p(*t, "SELECT", "c"), _p(*t, rights.GRANT_OPTION)}),
        roles={rights.Role("r", "%"): True},
        proxies={("p", "%"): True},
        default_roles=(rights.Role("r", "%"),),
    )
    grants, revokes = rights.plan_sync(source, target, "g", "%", mariadb=False)
    assert grants == []
    assert _sql(revokes) == [
        "REVOKE SELECT (`c`), GRANT OPTION ON `shop`.`t` FROM 'g'@'%'",
        # MySQL has no REVOKE ADMIN OPTION FOR: revoked, then granted without it.
        "REVOKE `r`@`%` FROM 'g'@'%'",
        "GRANT `r`@`%` TO 'g'@'%'",
        "REVOKE PROXY ON 'p'@'%' FROM 'g'@'%'",
        "GRANT PROXY ON 'p'@'%' TO 'g'@'%'",
        "ALTER USER 'g'@'%' DEFAULT ROLE NONE",
    ]
    maria = rights.plan_sync(source, target, "g", "%", mariadb=True)[1]
    assert "REVOKE ADMIN OPTION FOR `r`@`%` FROM 'g'@'%'" in _sql(maria)
    with pytest.raises(EngineError, match="cannot read the privilege"):
        _p(*t, "SELECT; DROP TABLE x")
    assert rights.ident("a`b%") == "`a``b%%`"


def test_mysql_passwords_and_account_options() -> None:
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


def test_mysql_narrowed_options_are_revoked_and_granted_last_then_the_default_roles() -> None:
    """MySQL only (no MySQL server here: the plan as data). Where the server cannot narrow
    a grant (a role's ADMIN OPTION on MySQL, a proxy's GRANT OPTION), the role or proxy is
    revoked and at once granted again, after every grant and every other revoke; a role
    that is a default role is made one again after that (MySQL may forget it with the
    revoke). Breaks when a pair is split, comes before another revoke, or the default
    roles are set before it (or not at all)."""
    t = ("TABLE", "shop", "t")
    reporting, ops = rights.Role("reporting", "%"), rights.Role("ops", "%")
    source = rights.Rights(
        frozenset({_p(*t, "SELECT"), _p(*t, "INSERT")}),
        roles={reporting: False, ops: False},
        proxies={("p", "%"): False},
        default_roles=(reporting,),
    )
    target = rights.Rights(
        frozenset({_p(*t, "SELECT"), _p(*t, "DELETE")}),
        roles={reporting: True, rights.Role("old", "%"): False},
        proxies={("p", "%"): True},
        default_roles=(reporting,),
    )
    grants, after = rights.plan_sync(source, target, "g", "%", mariadb=False)
    assert _sql(grants) == [
        "GRANT `ops`@`%` TO 'g'@'%'",
        "GRANT INSERT ON `shop`.`t` TO 'g'@'%'",
    ]
    assert _sql(after) == [
        "REVOKE DELETE ON `shop`.`t` FROM 'g'@'%'",
        "REVOKE `old`@`%` FROM 'g'@'%'",
        "REVOKE `reporting`@`%` FROM 'g'@'%'",
        "GRANT `reporting`@`%` TO 'g'@'%'",
        "REVOKE PROXY ON 'p'@'%' FROM 'g'@'%'",
        "GRANT PROXY ON 'p'@'%' TO 'g'@'%'",
        "ALTER USER 'g'@'%' DEFAULT ROLE `reporting`@`%`",
    ]
    # Nothing narrowed: the default roles, equal, are not set again.
    plain = rights.Rights(target.privileges, {reporting: False}, {}, (reporting,))
    plain_after = rights.plan_sync(source, plain, "g", "%", mariadb=False)[1]
    assert not any("DEFAULT ROLE" in s for s in _sql(plain_after))
    # MariaDB narrows the role alone: no revoke of the role, its default role kept.
    maria = _sql(rights.plan_sync(source, target, "g", "%", mariadb=True)[1])
    assert "REVOKE ADMIN OPTION FOR `reporting`@`%` FROM 'g'@'%'" in maria
    assert not any(s.startswith(("SET DEFAULT ROLE", "GRANT `reporting`")) for s in maria)


def test_mysql_the_account_a_definer_falls_back_to() -> None:
    """With its own account gone, the server runs a DEFINER at 10.9.% as another account
    of that user whose host pattern matches the host as a name ('%', '10.%'); prepare
    drops a DEFINER's account only then. A netmask pattern counts as no match."""
    assert my.host_matches("%", "10.9.%") and my.host_matches("10.%", "10.9.%")
    assert my.host_matches("DB_.example.com", "db1.EXAMPLE.com")
    assert not my.host_matches("127.0.0.1", "10.9.%")
    assert not my.host_matches("10.0.%", "10.9.%")
    assert not my.host_matches("10.9.0.0/255.255.0.0", "10.9.%")
