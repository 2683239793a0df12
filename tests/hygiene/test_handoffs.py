"""One-time hand-offs: open once, then gone; expired, then gone; nothing left at rest."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from keyrack.domain.handoffs import HandoffPurpose, HandoffStatus
from keyrack.domain.keys import Environment
from keyrack.errors import InvalidInput, NotFound
from keyrack.http.routes.handoffs import OPEN_LINK_PATH
from keyrack.services import audit, handoffs, keys, requests
from keyrack.services.context import Actor, Context
from keyrack.storage.tables import Base
from keyrack.storage.tables.requests import Handoff
from tests.conftest import OPERATOR, MutableClock, Seeded, seed_org
from tests.hygiene.test_requests import APP_PERMISSIONS, Market, seed_market

ADMIN = Actor(label="user:admin@acme.test")


@pytest.fixture
def market(ctx: Context) -> Market:
    return seed_market(ctx)


def raw_database(ctx: Context) -> bytes:
    """Every byte the database holds: the SQLite files as they are on disk (database and
    write-ahead log, no checkpoint forced), or every row of every PostgreSQL table as text."""
    if ctx.db.dialect == "sqlite":
        database = Path(make_url(ctx.db.url).database or "")
        files = [database, *database.parent.glob(database.name + "-*")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    rows: list[str] = []
    with ctx.db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows.extend(conn.execute(text(f'SELECT t::text FROM "{table.name}" t')).scalars())
    return "\n".join(rows).encode()


def sealed_of(ctx: Context, ref: str) -> str:
    with ctx.db.session() as session:
        sealed = session.scalar(select(Handoff.sealed).where(Handoff.ref == ref))
    assert sealed is not None
    return sealed


def assert_gone_from_the_database(ctx: Context, secret: str, sealed: str) -> None:
    image = raw_database(ctx)
    assert len(image) > 1000 and b"handoff" in image  # the control: the rows are there
    for fragment in (secret, secret[8:40], sealed, sealed[16:48]):
        assert fragment.encode() not in image


# --- links ----------------------------------------------------------------------------------


def test_a_link_opens_once_then_is_gone_and_leaves_nothing_at_rest(seeded: Seeded) -> None:
    ctx = seeded.ctx
    link = handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    assert link.path == f"/console/handoff/{link.token}" and len(link.token) >= 43
    sealed = sealed_of(ctx, link.handoff.ref)
    assert seeded.secret not in sealed

    revealed = handoffs.open_link(ctx, link.token, ip="203.0.113.7")
    assert revealed.secret == seeded.secret and revealed.key.ref == seeded.key.ref
    assert revealed.handoff.status is HandoffStatus.OPENED
    with pytest.raises(NotFound) as second:
        handoffs.open_link(ctx, link.token)
    assert second.value.code == "gone"
    with pytest.raises(NotFound) as unknown:
        handoffs.open_link(ctx, link.token[:-2] + "xx")
    assert unknown.value.code == "not-found"
    assert_gone_from_the_database(ctx, seeded.secret, sealed)


def test_only_the_token_digest_is_stored(seeded: Seeded) -> None:
    link = handoffs.create_link(seeded.ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    image = raw_database(seeded.ctx)
    assert link.token.encode() not in image
    assert handoffs.token_digest(link.token).encode() in image


def test_an_expired_link_is_gone_and_its_ciphertext_erased(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx = seeded.ctx
    link = handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    assert link.handoff.expires_at == clock.now + timedelta(hours=24)
    sealed = sealed_of(ctx, link.handoff.ref)
    clock.advance(timedelta(hours=24))
    with pytest.raises(NotFound) as expired:
        handoffs.open_link(ctx, link.token)
    assert expired.value.code == "gone"
    assert_gone_from_the_database(ctx, seeded.secret, sealed)
    actions = [e.action for e in audit.list_events(ctx, seeded.org_id).data]
    assert actions[:2] == ["handoff.expired", "handoff.created"]


def test_the_sweep_erases_expired_hand_offs_without_a_visitor(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx = seeded.ctx
    old = handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    sealed = sealed_of(ctx, old.handoff.ref)
    clock.advance(timedelta(hours=23))
    fresh = handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    clock.advance(timedelta(hours=1))
    assert handoffs.purge_expired_handoffs(ctx, clock.now) == 1
    assert handoffs.purge_expired_handoffs(ctx, clock.now) == 0
    assert sealed.encode() not in raw_database(ctx)
    listed = handoffs.list_handoffs(ctx, seeded.scope).data
    assert [(h.ref, h.status) for h in listed] == [
        (fresh.handoff.ref, HandoffStatus.PENDING),
        (old.handoff.ref, HandoffStatus.EXPIRED),
    ]
    assert handoffs.open_link(ctx, fresh.token).secret == seeded.secret


def test_a_link_needs_the_current_secret_of_that_key_in_the_callers_org(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx = seeded.ctx
    other_key, other_secret = seeded.new_key(name="Other")
    with pytest.raises(InvalidInput):
        handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, other_secret)
    with pytest.raises(InvalidInput):
        handoffs.create_link(ctx, ADMIN, seeded.scope, seeded.key.ref, "kr_live_garbage")
    stranger = seed_org(ctx, "globex")
    with pytest.raises(NotFound):
        handoffs.create_link(ctx, ADMIN, stranger.scope, seeded.key.ref, seeded.secret)
    _, rolled = keys.roll_key(ctx, OPERATOR, seeded.scope, other_key.ref)
    with pytest.raises(InvalidInput):  # the old secret no longer works, so it is not handed off
        handoffs.create_link(ctx, ADMIN, seeded.scope, other_key.ref, other_secret)
    assert handoffs.create_link(ctx, ADMIN, seeded.scope, other_key.ref, rolled).token


def test_a_link_to_a_key_revoked_since_is_gone(seeded: Seeded) -> None:
    link = handoffs.create_link(seeded.ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, reason="rotated")
    with pytest.raises(NotFound) as gone:
        handoffs.open_link(seeded.ctx, link.token)
    assert gone.value.code == "gone"


# --- claims (approved production keys) ------------------------------------------------------


def _approved_claim(market: Market) -> str:
    asked = requests.create_request(
        market.ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    claim = requests.approve_request(market.ctx, OPERATOR, asked.ref).claim_ref
    assert claim is not None
    return claim


def test_a_claim_opens_once_for_its_own_org_only(market: Market) -> None:
    ctx, org_id, scope = market.ctx, market.customer.org_id, market.customer.scope
    claim = _approved_claim(market)
    pending = handoffs.list_handoffs(
        ctx, scope, purpose=HandoffPurpose.CLAIM, status=HandoffStatus.PENDING
    ).data
    assert [h.ref for h in pending] == [claim]
    sealed = sealed_of(ctx, claim)
    with pytest.raises(NotFound):
        handoffs.open_claim(ctx, market.vendor_admin, market.vendor.scope, claim)
    revealed = handoffs.open_claim(ctx, market.customer_admin, scope, claim)
    with pytest.raises(NotFound) as second:
        handoffs.open_claim(ctx, market.customer_admin, scope, claim)
    assert second.value.code == "gone"
    assert_gone_from_the_database(ctx, revealed.secret, sealed)
    assert audit.list_events(ctx, org_id).data[0].action == "key.revealed"


def test_an_unopened_claim_expires_after_seven_days(market: Market, clock: MutableClock) -> None:
    claim = _approved_claim(market)
    clock.advance(handoffs.CLAIM_TTL)
    assert handoffs.purge_expired_handoffs(market.ctx) == 1
    with pytest.raises(NotFound) as gone:
        handoffs.open_claim(market.ctx, market.customer_admin, market.customer.scope, claim)
    assert gone.value.code == "gone"


# --- HTTP -----------------------------------------------------------------------------------


def test_the_link_api_works_once_then_410_and_unknown_is_404(
    api: httpx.Client, seeded: Seeded
) -> None:
    created = api.post(
        f"/api/v2/keys/{seeded.key.ref}/handoff",
        headers=seeded.headers(),
        json={"key": seeded.secret},
    )
    assert created.status_code == 201
    body = created.json()
    assert seeded.secret not in created.text
    token = body["url"].rsplit("/handoff/", 1)[1]
    assert body["url"].startswith(str(api.base_url)) and body["status"] == "pending"

    first = api.post(OPEN_LINK_PATH, json={"token": token})
    assert first.status_code == 200
    assert first.json()["key"] == seeded.secret
    assert first.headers["cache-control"] == "no-store"
    again = api.post(OPEN_LINK_PATH, json={"token": token})
    assert again.status_code == 410 and again.json()["status"] == 410
    unknown = api.post(OPEN_LINK_PATH, json={"token": "A" * 43})
    assert unknown.status_code == 404
    assert seeded.secret not in again.text + unknown.text


def test_the_link_url_is_the_console_page_and_viewing_it_does_not_use_it_up(
    api: httpx.Client, seeded: Seeded
) -> None:
    created = api.post(
        f"/api/v2/keys/{seeded.key.ref}/handoff",
        headers=seeded.headers(),
        json={"key": seeded.secret},
    )
    url = created.json()["url"]
    assert url.startswith(f"{api.base_url}/console/handoff/")
    page = api.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert seeded.secret not in page.text
    token = url.rsplit("/", 1)[1]
    assert handoffs.open_link(seeded.ctx, token).secret == seeded.secret


def test_creating_a_link_refuses_a_wrong_secret_and_keys_without_keys_manage(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, other = seeded.new_key(name="Reader", permissions=["clients:read"])
    wrong = api.post(
        f"/api/v2/keys/{seeded.key.ref}/handoff", headers=seeded.headers(), json={"key": other}
    )
    assert wrong.status_code == 400 and other not in wrong.text
    denied = api.post(
        f"/api/v2/keys/{seeded.key.ref}/handoff",
        headers=seeded.headers(other),
        json={"key": seeded.secret},
    )
    assert denied.status_code == 403
    missing = api.post(
        "/api/v2/keys/key_nope/handoff", headers=seeded.headers(), json={"key": seeded.secret}
    )
    assert missing.status_code == 404


def test_the_customer_opens_an_approved_key_claim_once_over_the_api(
    api: httpx.Client, market: Market
) -> None:
    claim = _approved_claim(market)
    _, capable = market.customer.new_key(  # a key that could have made the claimed key itself
        name="Production manager",
        environment=Environment.PRODUCTION,
        owner_id=market.customer.admin_id,
        permissions=["keys:manage", *APP_PERMISSIONS],
    )
    customer = market.customer.headers(capable)
    pending = api.get("/api/v2/handoffs?purpose=claim&status=pending", headers=customer)
    assert [h["ref"] for h in pending.json()["data"]] == [claim]
    assert api.post(
        f"/api/v2/claims/{claim}/open", headers=market.vendor.headers()
    ).status_code == (404)
    opened = api.post(f"/api/v2/claims/{claim}/open", headers=customer)
    assert opened.status_code == 200
    body = opened.json()
    assert body["key"].startswith("kr_live_") and body["permissions"] == [
        "clients:read",
        "contacts:read",
        "usage:write",
    ]
    assert api.post(f"/api/v2/claims/{claim}/open", headers=customer).status_code == 410


def test_concurrent_openings_reveal_the_secret_once(seeded: Seeded) -> None:
    link = handoffs.create_link(seeded.ctx, ADMIN, seeded.scope, seeded.key.ref, seeded.secret)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            handoffs.open_link(seeded.ctx, link.token)
            outcomes.append("opened")
        except NotFound as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["gone", "gone", "gone", "opened"]
