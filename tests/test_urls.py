"""URL parsing, building and masking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credflip.errors import UsageError
from credflip.rotation import new_password
from credflip.urls import DbUrl, mask_url, mysqlclient_kwargs, scrub, scrubbed_line


def test_parse_full_url() -> None:
    url = DbUrl.parse("postgresql+psycopg://app:s%40cret@db.example:6432/shop?sslmode=require")
    assert (url.scheme, url.backend, url.user, url.password) == (
        "postgresql+psycopg",
        "postgresql",
        "app",
        "s@cret",
    )
    assert (url.host, url.port, url.database, url.query) == (
        "db.example",
        6432,
        "shop",
        (("sslmode", "require"),),
    )
    assert str(url) == "postgresql+psycopg://app:***@db.example:6432/shop?sslmode=require"
    assert "s@cret" not in repr(url) and "s%40cret" not in repr(url)


@given(st.text(min_size=1, max_size=40), st.text(min_size=0, max_size=40))
def test_any_password_round_trips(user: str, password: str) -> None:
    url = DbUrl(scheme="mysql", host="h", user=user, password=password, port=3306, database="d")
    back = DbUrl.parse(url.secret)
    assert (back.user, back.password) == (user, password)
    masked = DbUrl.parse(str(url))
    assert (masked.user, masked.password) == (user, "***")


def test_generated_passwords_are_long_and_url_safe() -> None:
    seen = {new_password() for _ in range(200)}
    assert len(seen) == 200
    for password in seen:
        assert len(password) >= 32  # 24 random bytes, base64url
        assert DbUrl.parse(f"postgresql://u:{password}@h/d").password == password


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a database URL"),
        ("localhost:5432", "not a database URL"),
        ("postgresql://u:p@h:99999/d", "invalid port"),
        ("postgresql://u:p@h:port/d", "invalid port"),
        ("postgresql://u:p@/d", "has no host"),
        ("1postgres://u:p@h/d", "invalid scheme"),
        ("postgresql://u:p@h/a/b", "path with '/'"),
    ],
)
def test_malformed_urls(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        DbUrl.parse(text, what="--writer-url")
    assert str(info.value).startswith("--writer-url")
    assert ":p@" not in str(info.value)


def test_mask_and_scrub() -> None:
    assert mask_url("mysql://a:b@h/d") == "mysql://a:***@h/d"
    assert mask_url("garbage with secret") == "***"
    assert scrub("x pass%2Fword y pass/word", ["pass/word"]) == "x *** y ***"


def test_a_kept_reason_is_masked_then_cut_at_a_word_and_marked() -> None:
    secret = "s3cr3t-" + "x" * 30
    # The secret straddles the limit: masked first, it cannot survive in part.
    text = "drain timed out after 15m:\n " + "word " * 10 + secret + " tail"
    kept = scrubbed_line(text, [secret], 60)
    assert len(kept) <= 60 and kept.endswith(" …"), kept
    assert "\n" not in kept and "s3cr3t" not in kept
    assert kept.split()[-2] == "word", kept  # a whole word before the mark
    assert scrubbed_line("short reason", [secret], 60) == "short reason"


@given(st.text(min_size=1, max_size=400), st.integers(min_value=10, max_value=300))
def test_a_kept_reason_never_holds_part_of_a_long_secret(text: str, limit: int) -> None:
    secret = "Zq" + "9" * 20
    kept = scrubbed_line(text[: len(text) // 2] + secret + text[len(text) // 2 :], [secret], limit)
    assert len(kept) <= limit and secret[:8] not in kept


def test_with_credentials_and_same_server() -> None:
    url = DbUrl.parse("postgresql://a:b@h:1/d")
    other = url.with_credentials("c", "e")
    assert other.same_server(url) and other.user == "c" and other.password == "e"
    assert other.render(show_password=True) == "postgresql://c:e@h:1/d"


def test_mysqlclient_kwargs_spell_tls_the_mysqlclient_way() -> None:
    url = DbUrl.parse(
        "mysql://u:p@db:3307/shop?ssl_ca=/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem"
        "&ssl_verify_identity=true&connect_timeout=5"
    )
    assert mysqlclient_kwargs(url) == {
        "host": "db",
        "port": 3307,
        "user": "u",
        "password": "p",
        "database": "shop",
        "ssl": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"},
        "ssl_mode": "VERIFY_IDENTITY",
        "connect_timeout": 5,
    }
    assert mysqlclient_kwargs(DbUrl.parse("mariadb://u:p@db/x?ssl_disabled=true"))["ssl_mode"] == (
        "DISABLED"
    )
    assert "ssl_mode" not in mysqlclient_kwargs(DbUrl.parse("mysql://u:p@db/x"))
    with pytest.raises(UsageError, match="'sslmode' is not supported"):
        mysqlclient_kwargs(DbUrl.parse("mysql://u:p@db/x?sslmode=require"))
