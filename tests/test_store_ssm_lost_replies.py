"""SSM writes that were applied but whose reply was lost (issue 24, point 4).

A call to SSM can reach it, be applied, and have its reply lost on the way
back (a read timeout, a reset connection). botocore then sends the same call
again. For a create-only write the second attempt meets the parameter the
first one created, and SSM answers ``ParameterAlreadyExists``: credflip must
recognise that parameter as its own write (the content it wrote, with its
random token) and go on, instead of reporting its own lock as someone else's.

The fault is real HTTP against moto's server mode with real boto3: a
``before-send.ssm.<Operation>`` handler, registered first on the store's own
client, sends the signed request to moto itself (so moto applies it), then
raises botocore's ``ReadTimeoutError`` as if the reply never came; botocore's
``standard`` retry mode (credflip's default) retries it as it would on AWS.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps import App, make_app
from clusters import Clusters
from helpers import assert_pointer_connects, connects, stored_url

from credflip import commands
from credflip.errors import LockHeld
from credflip.layout import Color, Layout
from credflip.lock import FencedStore, LockInfo, hold_lock, read_lock
from credflip.rotation import RotateOptions, rotate
from credflip.state import load_state, save_state
from credflip.stores.base import claim_name
from credflip.stores.ssm import SsmStore


@pytest.fixture
def ssm(moto_endpoint: str) -> Iterator[SsmStore]:
    store = SsmStore(region="us-east-1", endpoint_url=moto_endpoint)
    yield store
    store.close()


def lose_replies(
    store: SsmStore, operation: str, when: Callable[[dict[str, Any]], bool]
) -> list[str]:
    """Lose the reply of the first call of *operation* on each parameter *when* picks.

    The call is applied on moto, then botocore sees a read timeout and retries.
    Returns the names whose reply was lost, in order.
    """
    from botocore.exceptions import ReadTimeoutError

    lost: list[str] = []

    def handler(request: Any, **_kwargs: Any) -> None:
        params = json.loads(request.body)
        name = str(params.get("Name", ""))
        if name in lost or not when(params):
            return
        lost.append(name)
        applied = urllib.request.Request(
            request.url, data=request.body, headers=dict(request.headers), method=request.method
        )
        with urllib.request.urlopen(applied, timeout=10) as reply:
            assert reply.status == 200, reply.read()
        raise ReadTimeoutError(endpoint_url=request.url)

    store.client.meta.events.register_first(f"before-send.ssm.{operation}", handler)
    return lost


def count_calls(store: SsmStore, operation: str) -> list[str]:
    """The parameter name of every *operation* call the client sends, retries included."""
    names: list[str] = []

    def record(request: Any, **_kwargs: Any) -> None:
        names.append(json.loads(request.body).get("Name", ""))

    store.client.meta.events.register_first(f"before-send.ssm.{operation}", record)
    return names


def named(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get("Name") == name


def test_a_lock_whose_create_reply_was_lost_is_taken_as_our_own(
    ssm: SsmStore, layout: Layout
) -> None:
    """The create-only write of the lock is applied, its reply lost, botocore retries and
    meets ParameterAlreadyExists: credflip holds its lock, and releases it after."""
    sent = count_calls(ssm, "PutParameter")
    lost = lose_replies(ssm, "PutParameter", named(layout.lock))
    with hold_lock(ssm, layout, purpose="rotate") as mine:
        assert read_lock(ssm, layout) == mine
    assert lost == [layout.lock]
    assert sent == [layout.lock, layout.lock]  # the retry reached SSM and was refused
    assert read_lock(ssm, layout) is None


def test_the_lock_of_another_holder_is_still_refused(ssm: SsmStore, layout: Layout) -> None:
    """Recognising our own write does not let a live holder's lock pass as ours."""
    theirs = LockInfo("ops", "other-host", 4242, time.time(), token="theirs")
    ssm.put(layout.lock, theirs.to_json(), overwrite=False)
    with pytest.raises(LockHeld, match="ops on other-host"), hold_lock(ssm, layout, purpose="x"):
        pass
    assert read_lock(ssm, layout) == theirs


def test_a_takeover_whose_claim_reply_was_lost_goes_on(ssm: SsmStore, layout: Layout) -> None:
    """The create-only claim that takes over a stale lock is applied, its reply lost:
    the retry's ParameterAlreadyExists is our own claim, so the takeover goes on
    (instead of reporting another taker and leaving the env locked until
    ``unlock --force``)."""
    now = time.time()
    stale = LockInfo("sbx", "169.254.1.1", 8, now - 900, token="gone", expires_at=now - 1)
    ssm.put(layout.lock, stale.to_json(), overwrite=False)
    claim = claim_name(layout.lock, stale.to_json())
    lost = lose_replies(ssm, "PutParameter", named(claim))
    notices: list[str] = []
    with hold_lock(ssm, layout, purpose="rotate", notice=notices.append) as mine:
        assert read_lock(ssm, layout) == mine
    assert lost == [claim]
    assert notices == [f"took over a stale lock: {stale.describe()} (its holder is gone)"]
    assert read_lock(ssm, layout) is None
    assert ssm.get(claim) is None  # dropped on release, as after any takeover


def test_a_state_record_whose_reply_was_lost_holds_what_was_written(
    ssm: SsmStore, layout: Layout
) -> None:
    """The rotation record, written under the lock (through the fenced store): a write
    applied with its reply lost is retried, and the record holds what was written.

    The record is written with ``Overwrite=True``, so the retry simply applies it
    again (this passes without the lock's fix); it guards the record's writes should
    they ever become create-only or conditional."""
    ssm.put(layout.state, '{"engine": "postgresql", "users": {}}')
    state = load_state(ssm, layout)
    state.sessions_only = True
    sent = count_calls(ssm, "PutParameter")
    lost = lose_replies(ssm, "PutParameter", named(layout.state))
    with hold_lock(ssm, layout, purpose="rotate") as mine:
        save_state(FencedStore(ssm, layout, mine), layout, state)
    assert lost == [layout.state]
    assert sent == [layout.lock, layout.state, layout.state]
    assert load_state(ssm, layout).sessions_only


@pytest.fixture
def app15(clusters: Clusters) -> App:
    """One PostgreSQL version is enough: the fault is in the store, not the engine."""
    return make_app(clusters.get(15))


def test_a_rotation_goes_on_when_every_writes_first_reply_is_lost(
    ssm: SsmStore, layout: Layout, app15: App
) -> None:
    """A whole rotation on SSM where the first write and the first delete of every
    parameter (lock, state, lease, URLs, pointer) is applied with its reply lost:
    it finishes, the new color connects, the lock is free and the history has it."""
    commands.init(ssm, layout, admin_url=app15.admin_url, writer_url=app15.url)
    put = lose_replies(ssm, "PutParameter", lambda _params: True)
    deleted = lose_replies(ssm, "DeleteParameter", lambda _params: True)
    result = rotate(
        ssm, layout, admin_url=app15.admin_url, options=RotateOptions(client_ttl=0.1, quiet=0.1)
    )
    assert result.finished
    assert {layout.lock, layout.state, layout.pointer} <= set(put)
    assert layout.lock in deleted
    assert assert_pointer_connects(ssm, layout) is Color.GREEN
    assert connects(stored_url(ssm, layout, Color.GREEN))
    assert read_lock(ssm, layout) is None
    state = load_state(ssm, layout)
    assert state.current is None
    assert [(h.result, h.to_color) for h in state.history] == [("done", Color.GREEN)]
