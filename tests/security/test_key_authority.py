"""Who may create, change, roll, revoke, or open a claim for a key (issue 16, items 1, 2, 5, 7).

One rule, ``keyrack.domain.authority.check``: an actor may only hold, or hand out, a
key it could have made itself. Each test here is an attacker's attempt through the
real paths (the API on a socket, the console through its forms), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from keyrack.domain.keys import Environment
from keyrack.domain.permissions import PERMISSIONS
from keyrack.domain.tenancy import OrgKind, Role, Scope
from keyrack.services import apps, audit, keys, requests, tenancy
from keyrack.services.context import Context
from keyrack.services.keys import KeyView
from keyrack.storage.tables.requests import Handoff, KeyRequest
from keyrack.storage.tables.tenancy import User
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.console.conftest import PASSWORD, Browser
from tests.gateway.conftest import problem_code as code

SECRET = re.compile(r"kr_(?:test|live)_[0-9A-Za-z]{38}")
APP_PERMISSIONS = ("clients:read", "contacts:read", "usage:write")


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert code(response) == "insufficient-permission"
    assert not SECRET.search(response.text)


def _works(api: httpx.Client, secret: str) -> bool:
    return api.get("/api/v2/health", headers={"X-API-Key": secret}).status_code == 200


def _actions(ctx: Context, org_id: int) -> set[str]:
    return {event.action for event in audit.list_events(ctx, org_id, limit=500).data}


def _user(ctx: Context, org_slug: str, email: str, role: Role) -> int:
    created = tenancy.create_user(
        ctx, OPERATOR, org_slug=org_slug, email=email, role=role, password=PASSWORD
    )
    return created.user.id


@pytest.fixture
def browser(live_url: str) -> Iterator[Browser]:
    with httpx.Client(base_url=live_url, timeout=10) as client:
        yield Browser(client)


# --- item 1: becoming platform staff, or the owner, by rolling or changing their key -------


@dataclass
class FirstRun:
    """The first-run organization: its owner is platform staff; a plain admin beside them."""

    org_id: int
    staff_owner_id: int
    admin_email: str
    staff_key: KeyView
    staff_secret: str


@pytest.fixture
def first_run(ctx: Context) -> FirstRun:
    assert tenancy.bootstrap(ctx) is not None
    with ctx.db.session() as session:
        staff_owner = session.scalar(select(User).where(User.email == "owner@keyrack.local"))
    assert staff_owner is not None and staff_owner.org_id is not None
    admin_email = "admin@keyrack.local"
    _user(ctx, tenancy.DEFAULT_ORG_SLUG, admin_email, Role.ADMIN)
    tenancy.create_org(ctx, OPERATOR, name="Victim", slug="victim")
    staff_key, staff_secret = keys.create_key(
        ctx, OPERATOR, Scope(staff_owner.org_id), name="Ops automation", owner_id=staff_owner.id
    )
    return FirstRun(staff_owner.org_id, staff_owner.id, admin_email, staff_key, staff_secret)


def _victim_api_enabled(ctx: Context) -> bool:
    return tenancy.get_org(ctx, "victim").api_enabled


def test_an_admin_cannot_become_staff_by_rolling_the_staff_owners_key_in_the_console(
    browser: Browser, first_run: FirstRun, ctx: Context, api: httpx.Client
) -> None:
    browser.sign_in(first_run.admin_email)
    ref = first_run.staff_key.ref
    browser.get(f"/console/settings/api/keys/{ref}")
    rolled = browser.post(
        f"/console/settings/api/keys/{ref}/regenerate", {"confirm": "yes", "grace_seconds": "0"}
    )
    assert rolled.status_code == 403
    page = browser.get(f"/console/settings/api/keys/{ref}")
    assert page.status_code == 200 and not SECRET.search(rolled.text + page.text)
    assert f"/keys/{ref}/regenerate" not in page.text  # not even offered
    assert _works(api, first_run.staff_secret)  # the staff owner's secret was not voided
    assert "key.rolled" not in _actions(ctx, first_run.org_id)
    assert _victim_api_enabled(ctx)


def test_a_keys_manage_key_cannot_become_staff_by_rolling_the_staff_owners_key(
    api: httpx.Client, first_run: FirstRun, ctx: Context
) -> None:
    _, attacker = keys.create_key(
        ctx,
        OPERATOR,
        Scope(first_run.org_id),
        name="Everything but staff",
        environment=Environment.PRODUCTION,
        permissions=PERMISSIONS,
        rate_per_second=1000,
        concurrency=100,
    )
    headers = {"X-API-Key": attacker}
    rolled = api.post(f"/api/v2/keys/{first_run.staff_key.ref}/roll", headers=headers)
    _refused(rolled)
    disabled = api.patch("/api/v2/staff/orgs/victim", headers=headers, json={"api_enabled": False})
    assert disabled.status_code == 404
    assert _victim_api_enabled(ctx) and _works(api, first_run.staff_secret)


def test_a_keys_manage_key_cannot_take_over_the_staff_owners_key_by_changing_it(
    api: httpx.Client, first_run: FirstRun, ctx: Context
) -> None:
    _, attacker = keys.create_key(
        ctx, OPERATOR, Scope(first_run.org_id), name="Manager", permissions=PERMISSIONS
    )
    changed = api.patch(
        f"/api/v2/keys/{first_run.staff_key.ref}",
        headers={"X-API-Key": attacker},
        json={"name": "Mine now", "allowed_cidrs": ["127.0.0.1/32"]},
    )
    _refused(changed)
    kept = keys.get_key(ctx, Scope(first_run.org_id), first_run.staff_key.ref)
    assert kept.name == "Ops automation" and kept.allowed_cidrs == ()


@pytest.mark.parametrize(
    ("attacker_role", "victim_role"),
    [(None, Role.MEMBER), (Role.ADMIN, Role.OWNER)],
    ids=["nobody-over-a-member", "admin-over-the-owner"],
)
def test_a_key_cannot_take_over_a_key_acting_as_someone_above_its_owner(
    api: httpx.Client, seeded: Seeded, attacker_role: Role | None, victim_role: Role
) -> None:
    ctx = seeded.ctx
    attacker_owner = (
        _user(ctx, "acme", "attacker@acme.test", attacker_role) if attacker_role else None
    )
    victim_owner = _user(ctx, "acme", "victim@acme.test", victim_role)
    _, attacker = seeded.new_key(name="Attacker", owner_id=attacker_owner, permissions=PERMISSIONS)
    victim, victim_secret = seeded.new_key(name="Victim", owner_id=victim_owner)
    _refused(api.post(f"/api/v2/keys/{victim.ref}/roll", headers=seeded.headers(attacker)))
    assert _works(api, victim_secret)


def test_an_admin_cannot_become_the_owner_by_regenerating_the_owners_key_in_the_console(
    browser: Browser, ctx: Context, api: httpx.Client
) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme")
    owner = _user(ctx, "acme", "owner@acme.test", Role.OWNER)
    _user(ctx, "acme", "admin@acme.test", Role.ADMIN)
    victim, secret = keys.create_key(ctx, OPERATOR, Scope(org.id), name="Owner's", owner_id=owner)
    browser.sign_in("admin@acme.test")
    browser.get(f"/console/settings/api/keys/{victim.ref}")
    rolled = browser.post(f"/console/settings/api/keys/{victim.ref}/regenerate", {"confirm": "yes"})
    assert rolled.status_code == 403 and not SECRET.search(rolled.text)
    assert _works(api, secret)
    page = browser.get(f"/console/settings/api/keys/{victim.ref}")
    assert f"/keys/{victim.ref}/regenerate" not in page.text  # not even offered


def test_an_admin_cannot_mint_a_key_acting_as_the_owner_in_the_console(
    browser: Browser, ctx: Context
) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme")
    owner = _user(ctx, "acme", "owner@acme.test", Role.OWNER)
    _user(ctx, "acme", "admin@acme.test", Role.ADMIN)
    browser.sign_in("admin@acme.test")
    browser.get("/console/settings/api/new")
    made = browser.post("/console/settings/api", {"name": "Acts as the owner", "owner": str(owner)})
    assert made.status_code == 403  # with the form kept
    assert 'value="Acts as the owner"' in made.text and not SECRET.search(made.text)
    assert keys.list_keys(ctx, Scope(org.id)).data == []
    form = browser.get("/console/settings/api/new")
    assert f'<option value="{owner}"' not in form.text  # the owner is not even offered


# --- item 7: revoking follows the same rule -------------------------------------------------


@pytest.mark.parametrize("how", ["revoke", "delete"])
def test_a_weak_key_cannot_revoke_a_production_key_stronger_than_itself(
    api: httpx.Client, seeded: Seeded, how: str
) -> None:
    strong, secret = seeded.new_key(
        name="Everything, fast",
        environment=Environment.PRODUCTION,
        permissions=PERMISSIONS,
        rate_per_second=1000,
    )
    if how == "revoke":
        response = api.post(
            f"/api/v2/keys/{strong.ref}/revoke", headers=seeded.headers(), json={"reason": "bye"}
        )
    else:
        response = api.delete(f"/api/v2/keys/{strong.ref}", headers=seeded.headers())
    _refused(response)
    assert _works(api, secret)


def test_an_admin_cannot_revoke_the_owners_key_in_the_console(
    browser: Browser, ctx: Context, api: httpx.Client
) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme")
    owner = _user(ctx, "acme", "owner@acme.test", Role.OWNER)
    _user(ctx, "acme", "admin@acme.test", Role.ADMIN)
    victim, secret = keys.create_key(ctx, OPERATOR, Scope(org.id), name="Owner's", owner_id=owner)
    browser.sign_in("admin@acme.test")
    browser.get(f"/console/settings/api/keys/{victim.ref}")
    revoked = browser.post(f"/console/settings/api/keys/{victim.ref}/revoke", {"reason": "oops"})
    assert revoked.status_code == 403
    assert _works(api, secret)
    page = browser.get(f"/console/settings/api/keys/{victim.ref}")
    assert f"/keys/{victim.ref}/revoke" not in page.text  # not even offered


# --- item 5: a key hands out no more than it holds ------------------------------------------


def test_a_one_per_second_key_cannot_make_a_child_faster_by_leaving_the_rate_to_the_plan(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, slow = seeded.new_key(name="Slow manager", permissions=["keys:manage"], rate_per_second=1)
    made = api.post("/api/v2/keys", headers=seeded.headers(slow), json={"name": "Child"})
    assert made.status_code == 201, made.text
    child = api.get("/api/v2/keys/self", headers=seeded.headers(made.json()["key"])).json()
    assert child["rate_limit"] == {"rate_per_second": 1, "concurrency": 1}


def test_a_one_per_second_key_cannot_roll_a_key_running_at_the_plan_default(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, slow = seeded.new_key(name="Slow manager", permissions=["keys:manage"], rate_per_second=1)
    default, secret = seeded.new_key(name="Plan default")
    _refused(api.post(f"/api/v2/keys/{default.ref}/roll", headers=seeded.headers(slow)))
    assert _works(api, secret)


def test_a_key_fenced_to_one_address_cannot_make_a_child_usable_from_anywhere(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, fenced = seeded.new_key(
        name="Office only", permissions=["keys:manage"], allowed_cidrs=["127.0.0.1/32"]
    )
    wider = api.post(
        "/api/v2/keys",
        headers=seeded.headers(fenced),
        json={"name": "Anywhere", "allowed_cidrs": ["0.0.0.0/0"]},
    )
    _refused(wider)
    made = api.post("/api/v2/keys", headers=seeded.headers(fenced), json={"name": "Unfenced"})
    assert made.status_code == 201, made.text
    assert made.json()["allowed_cidrs"] == ["127.0.0.1/32"]


def test_a_key_expiring_tomorrow_cannot_make_a_child_that_outlives_it(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    tomorrow = clock.now + timedelta(days=1)
    _, expiring = seeded.new_key(name="Temp", permissions=["keys:manage"], expires_at=tomorrow)
    later = (clock.now + timedelta(days=30)).isoformat()
    outliving = api.post(
        "/api/v2/keys",
        headers=seeded.headers(expiring),
        json={"name": "Forever-ish", "expires_at": later},
    )
    _refused(outliving)
    made = api.post("/api/v2/keys", headers=seeded.headers(expiring), json={"name": "Forever"})
    assert made.status_code == 201, made.text
    assert keys.get_key(seeded.ctx, seeded.scope, made.json()["ref"]).expires_at == tomorrow


@pytest.mark.parametrize(
    "widening",
    [
        {"allowed_cidrs": []},
        {"allowed_cidrs": ["0.0.0.0/0"]},
        {"expires_at": "2030-01-01T00:00:00Z"},
        {"rate_per_second": 50},
    ],
    ids=["no-allow-list", "allow-everyone", "later-expiry", "faster"],
)
def test_a_key_cannot_widen_itself(
    api: httpx.Client, seeded: Seeded, clock: MutableClock, widening: dict[str, object]
) -> None:
    me, secret = seeded.new_key(
        name="Fenced",
        permissions=["keys:manage"],
        allowed_cidrs=["127.0.0.1/32"],
        expires_at=clock.now + timedelta(days=1),
    )
    _refused(api.patch(f"/api/v2/keys/{me.ref}", headers=seeded.headers(secret), json=widening))
    kept = keys.get_key(seeded.ctx, seeded.scope, me.ref)
    assert (kept.allowed_cidrs, kept.expires_at, kept.rate_per_second) == (
        me.allowed_cidrs,
        me.expires_at,
        me.rate_per_second,
    )


def test_a_sandbox_key_cannot_create_a_production_key(api: httpx.Client, seeded: Seeded) -> None:
    made = api.post(
        "/api/v2/keys",
        headers=seeded.headers(),
        json={"name": "Live", "environment": "production", "permissions": ["keys:manage"]},
    )
    _refused(made)
    assert [k.name for k in keys.list_keys(seeded.ctx, seeded.scope).data] == ["Seed key"]


# --- item 2: production-key claims and key requests -----------------------------------------


def _approved_claim(ctx: Context, org_id: int, requester_id: int) -> str:
    """A vendor's app, a customer's request for it by ``requester_id``, approved by staff."""
    vendor = tenancy.create_org(ctx, OPERATOR, name="Nexla", slug="nexla", kind=OrgKind.VENDOR)
    sandbox, _ = keys.create_key(
        ctx, OPERATOR, Scope(vendor.id), name="Nexla sandbox", permissions=APP_PERMISSIONS
    )
    app = apps.register_app(
        ctx, OPERATOR, vendor_org_id=vendor.id, name="Nexla Sync", sandbox_key_ref=sandbox.ref
    )
    with ctx.db.session() as session:
        requester = session.get(User, requester_id)
    assert requester is not None
    asked = requests.create_request(
        ctx, tenancy.actor_for_user(requester), org_id=org_id, app_ref=app.ref
    )
    claim = requests.approve_request(ctx, OPERATOR, asked.ref).claim_ref
    assert claim is not None
    return claim


def _pending_claims(ctx: Context) -> list[str]:
    with ctx.db.session() as session:
        return list(session.scalars(select(Handoff.ref).where(Handoff.sealed.is_not(None))))


def test_a_location_key_cannot_see_or_open_its_agencys_production_key_claims(
    api: httpx.Client, seeded: Seeded
) -> None:
    ctx = seeded.ctx
    claim = _approved_claim(ctx, seeded.org_id, seeded.admin_id)
    _, local = keys.create_key(
        ctx,
        OPERATOR,
        Scope(seeded.org_id, seeded.location_id),
        name="Main street manager",
        environment=Environment.PRODUCTION,
        owner_id=seeded.admin_id,
        permissions=PERMISSIONS,
    )
    headers = seeded.headers(local)
    listed = api.get("/api/v2/handoffs", headers=headers)
    assert listed.status_code == 200 and listed.json()["data"] == []
    opened = api.post(f"/api/v2/claims/{claim}/open", headers=headers)
    assert opened.status_code == 404 and not SECRET.search(opened.text)
    asked = api.get("/api/v2/key-requests", headers=headers)
    assert asked.status_code == 200 and asked.json()["data"] == []
    with ctx.db.session() as session:
        request_ref = session.scalar(select(KeyRequest.ref))
    assert api.get(f"/api/v2/key-requests/{request_ref}", headers=headers).status_code == 404
    asking = api.post("/api/v2/key-requests", headers=headers, json={"message": "agency key"})
    assert asking.status_code == 403  # the key it asks for would be an agency key
    assert _pending_claims(ctx) == [claim]


@pytest.mark.parametrize(
    ("environment", "permissions"),
    [
        (Environment.PRODUCTION, ("keys:manage",)),
        (Environment.SANDBOX, PERMISSIONS),
    ],
    ids=["lacking-its-permissions", "sandbox"],
)
def test_a_key_cannot_open_a_claim_for_a_key_it_could_not_have_made(
    api: httpx.Client,
    seeded: Seeded,
    environment: Environment,
    permissions: tuple[str, ...],
) -> None:
    ctx = seeded.ctx
    claim = _approved_claim(ctx, seeded.org_id, seeded.admin_id)
    _, weaker = seeded.new_key(
        name="Weaker", environment=environment, owner_id=seeded.admin_id, permissions=permissions
    )
    _refused(api.post(f"/api/v2/claims/{claim}/open", headers=seeded.headers(weaker)))
    assert _pending_claims(ctx) == [claim]  # not used up by the refusal
    assert "key.revealed" not in _actions(ctx, seeded.org_id)


def test_an_admin_cannot_reveal_a_claim_for_a_key_acting_as_the_owner_in_the_console(
    browser: Browser, ctx: Context
) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme")
    owner = _user(ctx, "acme", "owner@acme.test", Role.OWNER)
    _user(ctx, "acme", "admin@acme.test", Role.ADMIN)
    claim = _approved_claim(ctx, org.id, owner)
    browser.sign_in("admin@acme.test")
    opened = browser.post(f"/console/settings/api/claims/{claim}", {})
    assert opened.status_code == 403 and not SECRET.search(opened.text)
    assert _pending_claims(ctx) == [claim]
