"""Parameter names and their validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credflip.errors import ConfigurationError, UsageError
from credflip.layout import Color, Layout


def test_names_match_the_original_design() -> None:
    layout = Layout("prod")
    assert layout.pointer == "/db/prod/blue-green-env"
    assert layout.url(Color.BLUE, "writer") == "/db/prod/blue/writer-db-url"
    assert layout.url(Color.GREEN, "reader") == "/db/prod/green/reader-db-url"
    assert layout.state == "/db/prod/rotation"
    assert layout.lock == "/db/prod/rotation-lock"
    assert layout.admin_url == "/db/prod/admin-db-url"
    assert layout.resolver_names[0] == layout.pointer and len(layout.resolver_names) == 5


def test_prefix_is_normalised() -> None:
    assert Layout("qa", "/apps/db/").pointer == "/apps/db/qa/blue-green-env"


@given(
    st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True).filter(lambda s: s not in {".", ".."})
)
def test_valid_env_names(env: str) -> None:
    assert Layout(env).env == env


@pytest.mark.parametrize("env", ["", "a b", "a/b", "..", "prod\n", "é", "a;b"])
def test_invalid_env_names(env: str) -> None:
    with pytest.raises(UsageError, match="invalid env name"):
        Layout(env)


@pytest.mark.parametrize("prefix", ["db", "", "/", "/db//x", "/d b"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(UsageError, match="invalid prefix"):
        Layout("prod", prefix)


def test_color_parse() -> None:
    assert Color.parse(" green\n", where="x") is Color.GREEN
    assert Color.BLUE.other is Color.GREEN
    with pytest.raises(ConfigurationError, match="neither 'blue' nor 'green'"):
        Color.parse("purple", where="pointer /db/prod/blue-green-env")
