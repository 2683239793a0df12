"""The fan-out from audit records, and in-app notifications through the services and the API."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from keyrack.domain.tenancy import Role
from keyrack.errors import NotFound
from keyrack.services import audit, keys, notifications, tenancy, webhooks
from keyrack.services.context import Actor
from keyrack.storage.tables.notices import Notification, OutboxEmail
from keyrack.storage.tables.webhooks import WebhookDelivery
from tests.conftest import OPERATOR, Seeded


def _record(seeded: Seeded, action: str, **after: object) -> None:
    with seeded.ctx.db.transaction() as session:
        audit.record(
            session,
            Actor(label="test"),
            action,
            now=seeded.ctx.clock(),
            org_id=seeded.org_id,
            target_type="key" if action.startswith("key.") else "key_request",
            target_ref=seeded.key.ref if action.startswith("key.") else "kreq_01TEST",
            after={"name": seeded.key.name, "last4": seeded.key.last4, **after},
        )


def _counts(seeded: Seeded, action: str) -> tuple[int, int, int]:
    with seeded.ctx.db.session() as session:
        return (
            session.scalar(select(func.count()).where(Notification.event_type == action)) or 0,
            session.scalar(
                select(func.count())
                .select_from(OutboxEmail)
                .join(Notification, Notification.audit_event_id == OutboxEmail.audit_event_id)
                .where(Notification.event_type == action)
            )
            or 0,
            session.scalar(select(func.count()).where(WebhookDelivery.event_type == action)) or 0,
        )


@pytest.mark.parametrize(
    "action",
    ["key.leaked", "key_request.created", "key_request.approved", "key_request.rejected"],
)
def test_leaks_and_key_requests_notify_admins_by_app_email_and_webhook(
    seeded: Seeded, action: str
) -> None:
    webhooks.create_endpoint(seeded.ctx, OPERATOR, seeded.org_id, url="https://hooks.example/k")
    _record(seeded, action, environment="sandbox")
    assert _counts(seeded, action) == (1, 1, 1)


def test_creating_a_key_notifies_in_app_and_by_webhook_but_sends_no_email(seeded: Seeded) -> None:
    webhooks.create_endpoint(seeded.ctx, OPERATOR, seeded.org_id, url="https://hooks.example/k")
    seeded.new_key(name="Quiet")
    assert _counts(seeded, "key.created") == (2, 0, 1)  # the seed key's and this one's


def test_other_audit_actions_notify_nobody(seeded: Seeded) -> None:
    _record(seeded, "org.updated")
    with seeded.ctx.db.session() as session:
        assert (
            session.scalar(select(func.count()).where(Notification.event_type == "org.updated"))
            == 0
        )


def test_only_active_human_owners_and_admins_are_notified(seeded: Seeded) -> None:
    ctx = seeded.ctx
    owner = tenancy.create_user(
        ctx, OPERATOR, org_slug="acme", email="o@acme.test", role=Role.OWNER
    )
    tenancy.create_user(ctx, OPERATOR, org_slug="acme", email="m@acme.test", role=Role.MEMBER)
    tenancy.create_user(
        ctx, OPERATOR, org_slug="acme", email="api@acme.test", role=Role.ADMIN, service=True
    )
    gone = tenancy.create_user(ctx, OPERATOR, org_slug="acme", email="g@acme.test", role=Role.ADMIN)
    tenancy.set_user_active(ctx, OPERATOR, gone.user.id, False)
    _record(seeded, "key.leaked", environment="sandbox")
    with ctx.db.session() as session:
        notified = set(
            session.scalars(
                select(Notification.user_id).where(Notification.event_type == "key.leaked")
            )
        )
        mailed = set(session.scalars(select(OutboxEmail.recipient)))
    assert notified == {seeded.admin_id, owner.user.id}
    assert mailed == {"admin@acme.test", "o@acme.test"}


def test_a_secret_never_reaches_a_notice(seeded: Seeded) -> None:
    with pytest.raises(ValueError, match="secret"):
        _record(seeded, "key.leaked", reason=seeded.secret)
    _, rolled = keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref)
    with seeded.ctx.db.session() as session:
        texts = [n.title + n.body for n in session.scalars(select(Notification))]
    assert texts and not any(seeded.secret in t or rolled in t for t in texts)


def test_a_user_reads_and_marks_their_notifications(seeded: Seeded) -> None:
    ctx, admin = seeded.ctx, seeded.admin_id
    seeded.new_key(name="Second")
    assert notifications.unread_count(ctx, admin) == 2
    page = notifications.list_notifications(ctx, admin, limit=1)
    assert page.data[0].title == "API key “Second” created" and page.next_cursor
    read = notifications.mark_read(ctx, admin, page.data[0].id)
    assert read.read and notifications.mark_read(ctx, admin, read.id).read_at == read.read_at
    assert notifications.unread_count(ctx, admin) == 1
    assert [n.id for n in notifications.list_notifications(ctx, admin, unread_only=True).data] != [
        read.id
    ]
    assert notifications.mark_all_read(ctx, admin) == 1
    assert notifications.unread_count(ctx, admin) == 0


def test_nobody_marks_someone_elses_notification(seeded: Seeded) -> None:
    other = tenancy.create_org(seeded.ctx, OPERATOR, name="O", slug="o")
    stranger = tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug="o", email="a@o.test", role=Role.ADMIN
    ).user
    [mine] = notifications.list_notifications(seeded.ctx, seeded.admin_id).data
    with pytest.raises(NotFound):
        notifications.mark_read(seeded.ctx, stranger.id, mine.id)
    with pytest.raises(NotFound):
        notifications.mark_read(seeded.ctx, None, mine.id, org_id=other.id)


def test_an_ownerless_key_reads_its_organizations_notifications_over_the_api(
    api: httpx.Client, seeded: Seeded
) -> None:
    tenancy.create_user(seeded.ctx, OPERATOR, org_slug="acme", email="o@acme.test", role=Role.OWNER)
    seeded.new_key(name="Second")
    listed = api.get("/api/v2/notifications", params={"limit": 1}, headers=seeded.headers())
    assert listed.status_code == 200
    assert len(listed.json()["data"]) == 1 and 'rel="next"' in listed.headers["link"]
    everything = api.get("/api/v2/notifications", headers=seeded.headers()).json()["data"]
    assert len(everything) == 3  # the seed key's for the admin; "Second" for admin and owner
    first = everything[0]["id"]
    marked = api.post(f"/api/v2/notifications/{first}/read", headers=seeded.headers())
    assert marked.status_code == 200 and marked.json()["read"] is True
    unread = api.get("/api/v2/notifications", params={"unread": "true"}, headers=seeded.headers())
    assert first not in [n["id"] for n in unread.json()["data"]]


def test_a_key_with_an_owner_reads_only_its_owners_notifications(
    api: httpx.Client, seeded: Seeded
) -> None:
    owner = tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug="acme", email="o@acme.test", role=Role.OWNER
    ).user
    _, secret = seeded.new_key(name="Owned", owner_id=owner.id, permissions=["keys:manage"])
    listed = api.get("/api/v2/notifications", headers=seeded.headers(secret)).json()["data"]
    assert {n["user_id"] for n in listed} == {owner.id}
    assert [n["title"] for n in listed] == ["API key “Owned” created"]


def test_notification_api_errors_are_problem_documents(api: httpx.Client, seeded: Seeded) -> None:
    _, reader = seeded.new_key(name="Reader", permissions=["clients:read"])
    assert api.get("/api/v2/notifications").status_code == 401
    assert api.get("/api/v2/notifications", headers=seeded.headers(reader)).status_code == 403
    missing = api.post("/api/v2/notifications/999999/read", headers=seeded.headers())
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = api.get("/api/v2/notifications", params={"cursor": "nope"}, headers=seeded.headers())
    assert bad.status_code == 400
    wrong = api.post("/api/v2/notifications/abc/read", headers=seeded.headers())
    assert wrong.status_code == 400
    huge = api.post(f"/api/v2/notifications/{2**70}/read", headers=seeded.headers())
    assert huge.status_code == 400


def test_a_location_key_reads_only_notices_about_its_locations_keys(
    api: httpx.Client, seeded: Seeded
) -> None:
    ctx = seeded.ctx
    berlin = tenancy.create_location(ctx, OPERATOR, org_slug="acme", name="Berlin", slug="berlin")
    paris = tenancy.create_location(ctx, OPERATOR, org_slug="acme", name="Paris", slug="paris")
    _, reader = seeded.new_key(
        name="Berlin admin", location_id=berlin.id, permissions=["keys:manage"]
    )
    seeded.new_key(name="Berlin sync", location_id=berlin.id)
    seeded.new_key(name="Paris sync", location_id=paris.id)

    listed = api.get("/api/v2/notifications", headers=seeded.headers(reader)).json()["data"]
    assert sorted(n["title"] for n in listed) == [
        "API key “Berlin admin” created",
        "API key “Berlin sync” created",
    ]
    paris_notice = next(
        n.id
        for n in notifications.list_notifications(ctx, None, org_id=seeded.org_id).data
        if "Paris" in n.title
    )
    refused = api.post(f"/api/v2/notifications/{paris_notice}/read", headers=seeded.headers(reader))
    assert refused.status_code == 404
