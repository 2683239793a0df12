"""Production-key requests: customers ask, vendors cannot, staff decide (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from keyrack.domain.keys import Environment
from keyrack.domain.requests import RequestStatus
from keyrack.domain.tenancy import OrgKind, Role, Scope
from keyrack.errors import AccessDenied, Conflict, InvalidInput, NotFound
from keyrack.services import apps, audit, handoffs, keys, requests, tenancy
from keyrack.services.apps import AppView
from keyrack.services.context import Actor, Context
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.tenancy import User
from tests.conftest import OPERATOR, Seeded, seed_org
from tests.verifier import Verifier

APP_PERMISSIONS = ("clients:read", "contacts:read", "usage:write")


@dataclass
class Market:
    """A vendor with a catalog app, a customer, and platform staff with an API key."""

    ctx: Context
    customer: Seeded
    customer_admin: Actor
    vendor: Seeded
    vendor_admin: Actor
    app: AppView
    staff_secret: str

    @property
    def staff(self) -> dict[str, str]:
        return {"X-API-Key": self.staff_secret}


def _admin_actor(ctx: Context, user_id: int) -> Actor:
    with ctx.db.session() as session:
        user = session.get(User, user_id)
    assert user is not None
    return tenancy.actor_for_user(user)


def seed_market(ctx: Context) -> Market:
    customer = seed_org(ctx, "acme")
    vendor_org = tenancy.create_org(ctx, OPERATOR, name="Nexla", slug="nexla", kind=OrgKind.VENDOR)
    vendor_admin = tenancy.create_user(
        ctx, OPERATOR, org_slug="nexla", email="dev@nexla.test", role=Role.ADMIN
    ).user
    vendor_key, vendor_secret = keys.create_key(
        ctx, OPERATOR, Scope(vendor_org.id), name="Nexla admin", permissions=["keys:manage"]
    )
    vendor = Seeded(ctx, vendor_org.id, "nexla", 0, vendor_admin.id, vendor_key, vendor_secret)
    sandbox, _ = keys.create_key(
        ctx, OPERATOR, Scope(vendor_org.id), name="Nexla sandbox", permissions=APP_PERMISSIONS
    )
    vendor_actor = tenancy.actor_for_user(vendor_admin)
    app = apps.register_app(
        ctx,
        vendor_actor,
        vendor_org_id=vendor_org.id,
        name="Nexla Sync",
        description="Syncs clients and usage",
        sandbox_key_ref=sandbox.ref,
    )
    tenancy.create_org(ctx, OPERATOR, name="Ops", slug="ops")
    staff_user = tenancy.create_user(
        ctx, OPERATOR, org_slug="ops", email="ops@keyrack.test", role=Role.OWNER, staff=True
    ).user
    assert staff_user.org_id is not None
    _, staff_secret = keys.create_key(
        ctx, OPERATOR, Scope(staff_user.org_id), name="Staff automation", owner_id=staff_user.id
    )
    return Market(
        ctx,
        customer,
        _admin_actor(ctx, customer.admin_id),
        vendor,
        vendor_actor,
        app,
        staff_secret,
    )


@pytest.fixture
def market(ctx: Context) -> Market:
    return seed_market(ctx)


def verifier(ctx: Context) -> Verifier:
    return Verifier(ctx)


# --- services -------------------------------------------------------------------------------


def test_approved_production_key_has_exactly_the_app_sandbox_permissions(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    assert asked.status is RequestStatus.PENDING
    approved = requests.approve_request(ctx, OPERATOR, asked.ref)
    assert approved.status is RequestStatus.APPROVED and approved.key_ref and approved.claim_ref

    production = keys.get_key(ctx, market.customer.scope, approved.key_ref)
    sandbox = keys.get_key(ctx, Scope(market.vendor.org_id), market.app.sandbox_key_ref)
    assert production.permissions == sandbox.permissions == APP_PERMISSIONS
    assert production.environment is Environment.PRODUCTION
    assert production.org_id == market.customer.org_id
    assert production.owner_id == market.customer.admin_id

    revealed = handoffs.open_claim(
        ctx, market.customer_admin, market.customer.scope, approved.claim_ref
    )
    assert revealed.secret.startswith("kr_live_")
    verdict = verifier(ctx).verify(revealed.secret)
    assert verdict.valid and verdict.key is not None
    assert verdict.key.org_id == market.customer.org_id
    assert verdict.key.permissions == frozenset(APP_PERMISSIONS)


def test_a_vendor_can_never_request_a_production_key_for_a_customer(market: Market) -> None:
    with pytest.raises(AccessDenied):
        requests.create_request(
            market.ctx, market.vendor_admin, org_id=market.customer.org_id, app_ref=market.app.ref
        )
    with pytest.raises(AccessDenied):  # nor for itself: vendors build on sandboxes
        requests.create_request(
            market.ctx, market.vendor_admin, org_id=market.vendor.org_id, app_ref=market.app.ref
        )
    assert requests.list_requests(market.ctx, None).data == []


def test_staff_never_see_the_production_secret(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    approved = requests.approve_request(ctx, OPERATOR, asked.ref)
    values = [getattr(approved, name) for name in type(approved).__slots__]
    assert not any(isinstance(value, str) and value.startswith("kr_") for value in values)
    with pytest.raises(NotFound):  # staff are not the customer: the claim is not theirs
        handoffs.open_claim(ctx, OPERATOR, market.vendor.scope, approved.claim_ref or "")


def test_only_staff_decide_and_each_request_is_decided_once(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    with pytest.raises(AccessDenied):
        requests.approve_request(ctx, market.customer_admin, asked.ref)
    with pytest.raises(InvalidInput):
        requests.reject_request(ctx, OPERATOR, asked.ref, reason="  ")
    rejected = requests.reject_request(ctx, OPERATOR, asked.ref, reason="app under review")
    assert (rejected.status, rejected.reason, rejected.key_ref) == (
        RequestStatus.REJECTED,
        "app under review",
        None,
    )
    with pytest.raises(Conflict):
        requests.approve_request(ctx, OPERATOR, asked.ref)
    with pytest.raises(NotFound):
        requests.approve_request(ctx, OPERATOR, "kreq_unknown")


def test_a_second_pending_request_for_the_same_app_is_a_conflict(market: Market) -> None:
    ctx = market.ctx
    actor, org_id = market.customer_admin, market.customer.org_id
    requests.create_request(ctx, actor, org_id=org_id, app_ref=market.app.ref)
    with pytest.raises(Conflict):
        requests.create_request(ctx, actor, org_id=org_id, app_ref=market.app.ref)
    with pytest.raises(NotFound):
        requests.create_request(ctx, actor, org_id=org_id, app_ref="app_unknown")
    with pytest.raises(InvalidInput):
        requests.create_request(ctx, actor, org_id=org_id)


def test_free_text_request_gets_the_permissions_staff_grant(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, message="Zapier, read-only"
    )
    with pytest.raises(InvalidInput):
        requests.approve_request(ctx, OPERATOR, asked.ref)
    approved = requests.approve_request(ctx, OPERATOR, asked.ref, permissions=["clients:read"])
    assert approved.key_ref
    key = keys.get_key(ctx, market.customer.scope, approved.key_ref)
    assert key.permissions == ("clients:read",)


def test_an_app_request_refuses_permissions_other_than_the_sandbox(market: Market) -> None:
    asked = requests.create_request(
        market.ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    with pytest.raises(InvalidInput):
        requests.approve_request(market.ctx, OPERATOR, asked.ref, permissions=["keys:manage"])


def test_request_lifecycle_is_audited_in_the_customer_trail(market: Market) -> None:
    ctx = market.ctx
    first = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    requests.approve_request(ctx, OPERATOR, first.ref)
    second = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, message="another"
    )
    requests.reject_request(ctx, OPERATOR, second.ref, reason="duplicate")
    trail = audit.list_events(ctx, market.customer.org_id).data
    actions = [e.action for e in trail]
    assert actions[:5] == [
        "key_request.rejected",
        "key_request.created",
        "key_request.approved",
        "key.created",
        "key_request.created",
    ]
    approved = trail[2]
    assert approved.after and approved.after["permissions"] == list(APP_PERMISSIONS)
    assert approved.actor_label == OPERATOR.label


def test_only_vendor_orgs_register_apps_from_their_own_sandbox_keys(market: Market) -> None:
    ctx = market.ctx
    with pytest.raises(AccessDenied):
        apps.register_app(
            ctx,
            market.customer_admin,
            vendor_org_id=market.customer.org_id,
            name="Not a vendor",
            sandbox_key_ref=market.customer.key.ref,
        )
    with pytest.raises(AccessDenied):
        apps.register_app(
            ctx,
            market.customer_admin,
            vendor_org_id=market.vendor.org_id,
            name="Someone else's",
            sandbox_key_ref=market.vendor.key.ref,
        )
    production, _ = keys.create_key(
        ctx, OPERATOR, market.vendor.scope, name="Live", environment=Environment.PRODUCTION
    )
    with pytest.raises(InvalidInput):
        apps.register_app(
            ctx,
            market.vendor_admin,
            vendor_org_id=market.vendor.org_id,
            name="From a live key",
            sandbox_key_ref=production.ref,
        )
    assert [a.name for a in apps.list_apps(ctx).data] == ["Nexla Sync"]


# --- HTTP -----------------------------------------------------------------------------------


def test_catalog_is_visible_to_every_org_and_vendors_register_through_the_api(
    api: httpx.Client, market: Market
) -> None:
    sandbox, _ = keys.create_key(
        market.ctx, OPERATOR, market.vendor.scope, name="Second app", permissions=["pulse:read"]
    )
    created = api.post(
        "/api/v2/apps",
        headers=market.vendor.headers(),
        json={"name": "Pulse Bridge", "sandbox_key": sandbox.ref},
    )
    assert created.status_code == 201
    assert created.json()["permissions"] == ["pulse:read"]
    listed = api.get("/api/v2/apps", headers=market.customer.headers())
    assert listed.status_code == 200
    assert [a["name"] for a in listed.json()["data"]] == ["Pulse Bridge", "Nexla Sync"]
    assert "kr_test_" not in listed.text


def test_customer_requests_over_the_api_and_sees_only_its_own(
    api: httpx.Client, market: Market
) -> None:
    created = api.post(
        "/api/v2/key-requests", headers=market.customer.headers(), json={"app": market.app.ref}
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["app"], body["organization"]) == (
        "pending",
        market.app.ref,
        "acme",
    )
    mine = api.get("/api/v2/key-requests", headers=market.customer.headers()).json()["data"]
    assert [r["ref"] for r in mine] == [body["ref"]]
    theirs = api.get("/api/v2/key-requests", headers=market.vendor.headers()).json()["data"]
    assert theirs == []
    other = api.get(f"/api/v2/key-requests/{body['ref']}", headers=market.vendor.headers())
    assert other.status_code == 404


def test_a_vendor_key_asking_for_a_production_key_is_refused_with_403(
    api: httpx.Client, market: Market
) -> None:
    refused = api.post(
        "/api/v2/key-requests", headers=market.vendor.headers(), json={"app": market.app.ref}
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert requests.list_requests(market.ctx, None).data == []


@pytest.mark.parametrize(
    ("payload", "status"),
    [({}, 400), ({"app": "app_nope"}, 404), ({"message": "x", "extra": 1}, 400)],
)
def test_bad_request_bodies_are_problems(
    api: httpx.Client, market: Market, payload: dict[str, object], status: int
) -> None:
    response = api.post("/api/v2/key-requests", headers=market.customer.headers(), json=payload)
    assert response.status_code == status
    assert response.json()["status"] == status


def test_key_requests_need_a_key_with_keys_manage(api: httpx.Client, market: Market) -> None:
    _, reader = keys.create_key(
        market.ctx, OPERATOR, market.customer.scope, name="Reader", permissions=["clients:read"]
    )
    assert api.get("/api/v2/key-requests").status_code == 401
    denied = api.post("/api/v2/key-requests", headers={"X-API-Key": reader}, json={"message": "x"})
    assert denied.status_code == 403


def test_approval_writes_no_secret_into_the_audit_trail(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    approved = requests.approve_request(ctx, OPERATOR, asked.ref)
    revealed = handoffs.open_claim(
        ctx, market.customer_admin, market.customer.scope, approved.claim_ref or ""
    )
    with ctx.db.session() as session:
        rows = session.scalars(select(AuditEvent)).all()
    text_ = repr([(r.before, r.after, r.target_ref) for r in rows])
    assert revealed.secret not in text_ and revealed.secret[8:40] not in text_


def test_concurrent_approvals_issue_one_production_key(market: Market) -> None:
    ctx = market.ctx
    asked = requests.create_request(
        ctx, market.customer_admin, org_id=market.customer.org_id, app_ref=market.app.ref
    )
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            requests.approve_request(ctx, OPERATOR, asked.ref)
            outcomes.append("approved")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["approved", "conflict", "conflict", "conflict"]
    production = keys.list_keys(ctx, market.customer.scope).data
    assert [k.environment for k in production].count(Environment.PRODUCTION) == 1
