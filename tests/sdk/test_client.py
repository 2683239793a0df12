"""``keyrack.Client`` against the real app on a loopback socket (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket

import pytest

import keyrack
from keyrack.client import (
    AuthenticationError,
    Client,
    KeyrackError,
    NotFoundError,
    Page,
    PermissionDeniedError,
    TransportError,
    ValidationError,
)
from keyrack.domain.keys import Environment, generate
from tests.conftest import Seeded
from tests.sdk.conftest import Wire


def test_keyrack_client_is_the_sdk_client() -> None:
    assert keyrack.Client is Client


def test_health_names_the_organization_and_the_key(seeded: Seeded, sdk: Client) -> None:
    assert sdk.health() == {"status": "ok", "organization": "Acme", "key": seeded.key.ref}


def test_keys_self_introspects_the_calling_key_whatever_its_permissions(
    live_url: str, seeded: Seeded
) -> None:
    view, secret = seeded.new_key(name="Reporting", permissions=[], rate_per_second=7)
    with Client(secret, base_url=live_url) as client:
        found = client.keys.self()
    assert (found["ref"], found["name"], found["last4"]) == (view.ref, "Reporting", secret[-4:])
    assert found["rate_limit"]["rate_per_second"] == 7
    assert secret not in repr(found)


def test_an_unknown_key_raises_authentication_error_with_the_problem_document(
    live_url: str, seeded: Seeded
) -> None:
    bogus = generate(Environment.SANDBOX).secret
    with Client(bogus, base_url=live_url) as client, pytest.raises(AuthenticationError) as caught:
        client.keys.list()
    error = caught.value
    assert (error.status, error.code) == (401, "invalid-key")
    assert error.problem["type"] == "https://keyrack.dev/problems/invalid-key"
    assert error.problem["status"] == 401
    assert error.detail == error.problem["detail"]
    assert bogus not in str(error)
    assert bogus not in repr(error.problem)


def test_a_revoked_key_raises_authentication_error_revoked_key(
    live_url: str, seeded: Seeded, sdk: Client
) -> None:
    view, secret = seeded.new_key(permissions=["keys:manage"])
    sdk.keys.revoke(view.ref, reason="rotated out")
    with Client(secret, base_url=live_url) as client, pytest.raises(AuthenticationError) as caught:
        client.keys.list()
    assert caught.value.code == "revoked-key"
    assert caught.value.problem["status"] == 401


def test_a_key_without_the_permission_raises_permission_denied(
    live_url: str, seeded: Seeded
) -> None:
    _, secret = seeded.new_key(permissions=[])
    with Client(secret, base_url=live_url) as client, pytest.raises(PermissionDeniedError) as e:
        client.keys.list()
    assert (e.value.status, e.value.code) == (403, "insufficient-permission")
    assert "keys:manage" in e.value.detail


def test_an_unknown_ref_raises_not_found(sdk: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        sdk.keys.get("key_0000000000000000000000000")
    assert (caught.value.status, caught.value.code) == (404, "not-found")
    assert caught.value.problem["title"]


def test_an_invalid_body_raises_validation_error_listing_the_fields(sdk: Client) -> None:
    with pytest.raises(ValidationError) as caught:
        sdk.keys.create(name="", rate_per_second=0)
    error = caught.value
    assert (error.status, error.code) == (400, "validation-error")
    fields = {e["field"] for e in error.problem["errors"]}
    assert {"body.name", "body.rate_per_second"} <= fields


def test_a_path_segment_is_escaped_not_interpreted(sdk: Client, wire: Wire) -> None:
    with pytest.raises(NotFoundError):
        sdk.keys.get("../keys?limit=1")
    assert wire.requests[-1].url.raw_path == b"/api/v2/keys/..%2Fkeys%3Flimit%3D1"


def test_a_key_is_created_read_updated_rolled_and_revoked(live_url: str, sdk: Client) -> None:
    created = sdk.keys.create(
        name="Nexla Integration", permissions=["keys:manage"], rate_per_second=3
    )
    ref, secret = created["ref"], created["key"]
    assert created["rate_limit"] == {"rate_per_second": 3, "concurrency": None}
    assert sdk.keys.get(ref)["name"] == "Nexla Integration"
    assert sdk.keys.update(ref, name="Nexla")["name"] == "Nexla"

    rolled = sdk.keys.roll(ref)
    assert rolled["ref"] == ref
    assert rolled["key"] != secret
    with Client(rolled["key"], base_url=live_url) as holder:
        assert holder.keys.get(ref)["name"] == "Nexla"
    with Client(secret, base_url=live_url) as old, pytest.raises(AuthenticationError):
        old.keys.get(ref)

    revoked = sdk.keys.revoke(ref, reason="integration removed")
    assert (revoked["status"], revoked["revoked_reason"]) == ("revoked", "integration removed")


def test_iter_follows_next_cursor_through_every_page(
    seeded: Seeded, sdk: Client, wire: Wire
) -> None:
    made = {seeded.new_key(name=f"Integration {i}")[0].ref for i in range(7)}
    refs = [key["ref"] for key in sdk.keys.iter(limit=3)]
    assert sorted(refs) == sorted(made | {seeded.key.ref})
    assert len(refs) == 8
    pages = [r for r in wire.requests if r.url.path == "/api/v2/keys"]
    assert [r.url.params.get("limit") for r in pages] == ["3", "3", "3"]
    assert [bool(r.url.params.get("cursor")) for r in pages] == [False, True, True]


def test_iter_fetches_a_page_only_when_it_is_needed(
    seeded: Seeded, sdk: Client, wire: Wire
) -> None:
    for i in range(4):
        seeded.new_key(name=f"Integration {i}")
    items = sdk.keys.iter(limit=2)
    assert wire.requests == []
    next(items)
    next(items)
    assert len(wire.requests) == 1
    next(items)
    assert len(wire.requests) == 2


def test_list_returns_one_page_and_its_cursor(seeded: Seeded, sdk: Client) -> None:
    seeded.new_key(name="Second")
    first = sdk.keys.list(limit=1)
    assert isinstance(first, Page)
    assert [k["name"] for k in first.data] == ["Second"]
    assert first.next_cursor is not None
    second = sdk.keys.list(limit=1, cursor=first.next_cursor)
    assert [k["name"] for k in second.data] == ["Seed key"]
    assert second.next_cursor is None


def test_the_key_travels_only_in_the_x_api_key_header(
    seeded: Seeded, sdk: Client, wire: Wire
) -> None:
    seeded.new_key(name="Second")
    list(sdk.keys.iter(limit=1))
    with pytest.raises(NotFoundError):
        sdk.keys.get("key_missing")
    assert len(wire.requests) == 3
    for request in wire.requests:
        assert seeded.secret not in str(request.url)
        assert request.headers["X-API-Key"] == seeded.secret
        assert "authorization" not in request.headers
        assert seeded.secret not in request.content.decode()


def test_repr_shows_only_the_masked_key(seeded: Seeded, sdk: Client) -> None:
    shown = repr(sdk)
    assert seeded.secret not in shown
    assert f"kr_test_••••••••{seeded.secret[-4:]}" in shown


def test_the_client_refuses_to_put_its_key_in_a_url(
    seeded: Seeded, sdk: Client, wire: Wire
) -> None:
    with pytest.raises(KeyrackError) as caught:
        sdk.keys.list(token=seeded.secret)
    assert seeded.secret not in str(caught.value)
    assert wire.statuses == []


def test_no_server_raises_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = generate(Environment.SANDBOX).secret
    with (
        Client(key, base_url=f"http://127.0.0.1:{port}") as client,
        pytest.raises(TransportError) as caught,
    ):
        client.keys.list()
    assert key not in str(caught.value)


@pytest.mark.parametrize("key", ["", "   "])
def test_a_client_needs_a_key(key: str) -> None:
    with pytest.raises(ValueError):
        Client(key)
