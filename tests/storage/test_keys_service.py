"""Key lifecycle through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from keyrack.domain.events import KeyChanged
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Scope
from keyrack.domain.verification import KeyStatus, VerdictStatus
from keyrack.errors import Conflict, InvalidInput, NotFound
from keyrack.services import audit, keys, tenancy
from keyrack.services.context import Context
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.keys import KeySecret
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.verifier import Verifier


def verifier(ctx: Context) -> Verifier:
    return Verifier(ctx)


def test_created_key_verifies_with_its_identity(seeded: Seeded) -> None:
    verdict = verifier(seeded.ctx).verify(seeded.secret)
    assert verdict.status is VerdictStatus.VALID
    assert verdict.key is not None
    assert verdict.key.ref == seeded.key.ref
    assert verdict.key.org_slug == "acme"
    assert verdict.key.permissions == frozenset({"keys:manage"})
    assert (verdict.key.rate_per_second, verdict.key.concurrency) == (5, 1)


def test_many_named_keys_per_scope_are_listed_newest_first_in_pages(seeded: Seeded) -> None:
    for i in range(5):
        seeded.new_key(name=f"Integration {i}", location_id=seeded.location_id)
    first = keys.list_keys(seeded.ctx, seeded.scope, limit=4)
    assert [k.name for k in first.data] == [f"Integration {i}" for i in (4, 3, 2, 1)]
    assert first.next_cursor
    second = keys.list_keys(seeded.ctx, seeded.scope, limit=4, cursor=first.next_cursor)
    assert [k.name for k in second.data] == ["Integration 0", "Seed key"]
    assert second.next_cursor is None
    located = keys.list_keys(seeded.ctx, Scope(seeded.org_id, seeded.location_id))
    assert len(located.data) == 5


def test_a_typo_is_malformed_without_any_database_query(seeded: Seeded) -> None:
    typo = seeded.secret[:-10] + ("A" if seeded.secret[-10] != "A" else "B") + seeded.secret[-9:]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(seeded.ctx.db.engine, "before_cursor_execute", listener)
    try:
        assert verifier(seeded.ctx).verify(typo).status is VerdictStatus.MALFORMED
        assert statements == []
        assert verifier(seeded.ctx).verify(seeded.secret).valid
        assert len(statements) == 1  # the control: a real check does query
    finally:
        event.remove(seeded.ctx.db.engine, "before_cursor_execute", listener)


def test_unknown_well_formed_key_is_not_found(seeded: Seeded) -> None:
    from keyrack.domain.keys import generate

    assert verifier(seeded.ctx).verify(generate(Environment.SANDBOX).secret).status is (
        VerdictStatus.NOT_FOUND
    )


def test_roll_without_grace_voids_the_old_secret_at_once(seeded: Seeded) -> None:
    rolled, new_secret = keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref)
    check = verifier(seeded.ctx)
    assert check.verify(seeded.secret).status is VerdictStatus.REVOKED  # told apart from garbage
    assert check.verify(new_secret).valid
    assert rolled.ref == seeded.key.ref and rolled.last4 == new_secret[-4:]


def test_roll_with_grace_keeps_both_secrets_until_the_grace_ends(
    seeded: Seeded, clock: MutableClock
) -> None:
    _, new_secret = keys.roll_key(
        seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, grace=timedelta(hours=2)
    )
    check = verifier(seeded.ctx)
    clock.advance(timedelta(hours=1, minutes=59))
    assert check.verify(seeded.secret).valid
    assert check.verify(new_secret).valid
    clock.advance(timedelta(minutes=1))
    assert check.verify(seeded.secret).status is VerdictStatus.REVOKED
    assert check.verify(new_secret).valid
    actions = [e.action for e in audit.list_events(seeded.ctx, seeded.org_id).data]
    assert actions[:2] == ["key.rolled", "key.created"]


def test_grace_longer_than_seven_days_is_refused(seeded: Seeded) -> None:
    with pytest.raises(InvalidInput):
        keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, grace=timedelta(days=8))


def test_revoke_is_immediate_and_reports_revoked(seeded: Seeded) -> None:
    changes: list[KeyChanged] = []
    seeded.ctx.bus.subscribe(lambda e: changes.append(e) if isinstance(e, KeyChanged) else None)
    view = keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, reason="leaked")
    assert view.status is KeyStatus.REVOKED and view.revoked_reason == "leaked"
    assert verifier(seeded.ctx).verify(seeded.secret).status is VerdictStatus.REVOKED
    assert changes and changes[0].key_id == seeded.key.id
    with pytest.raises(Conflict):
        keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref)


def test_absolute_expiry_is_enforced_by_the_clock(seeded: Seeded, clock: MutableClock) -> None:
    _, secret = seeded.new_key(expires_at=clock.now + timedelta(days=1))
    assert verifier(seeded.ctx).verify(secret).valid
    clock.advance(timedelta(days=1))
    assert verifier(seeded.ctx).verify(secret).status is VerdictStatus.EXPIRED


def test_disabled_organization_refuses_its_keys(seeded: Seeded) -> None:
    tenancy.update_org(seeded.ctx, OPERATOR, "acme", api_enabled=False)
    assert verifier(seeded.ctx).verify(seeded.secret).status is VerdictStatus.DISABLED


def test_permission_change_is_audited_with_before_and_after(seeded: Seeded) -> None:
    keys.update_key(
        seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, permissions=["clients:read"]
    )
    event_ = audit.list_events(seeded.ctx, seeded.org_id).data[0]
    assert event_.action == "key.permissions_changed"
    assert event_.before and event_.before["permissions"] == ["keys:manage"]
    assert event_.after and event_.after["permissions"] == ["clients:read"]
    assert event_.actor_label == "test-operator"


def test_a_location_scope_cannot_reach_another_locations_or_org_keys(seeded: Seeded) -> None:
    other = tenancy.create_location(seeded.ctx, OPERATOR, org_slug="acme", name="B", slug="b")
    located_scope = Scope(seeded.org_id, other.id)
    with pytest.raises(NotFound):
        keys.get_key(seeded.ctx, located_scope, seeded.key.ref)
    with pytest.raises(NotFound):
        keys.get_key(seeded.ctx, Scope(seeded.org_id + 999), seeded.key.ref)


def test_unknown_permissions_and_bad_names_are_refused(seeded: Seeded) -> None:
    with pytest.raises(InvalidInput):
        seeded.new_key(permissions=["keys:everything"])
    with pytest.raises(InvalidInput):
        seeded.new_key(name="   ")


def test_only_digests_are_stored(seeded: Seeded) -> None:
    with seeded.ctx.db.session() as session:
        stored = session.scalars(select(KeySecret.digest)).all()
    assert stored and all(len(d) == 64 and seeded.secret not in d for d in stored)


def test_last_used_is_written_in_one_batch_and_never_moves_backwards(
    seeded: Seeded, clock: MutableClock
) -> None:
    later = clock.now + timedelta(minutes=5)
    keys.record_last_used(seeded.ctx, {seeded.key.id: (later, "203.0.113.9")})
    keys.record_last_used(seeded.ctx, {seeded.key.id: (clock.now, "198.51.100.1")})
    view = keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref)
    assert (view.last_used_at, view.last_used_ip) == (later, "203.0.113.9")


def test_audit_trail_refuses_to_store_a_secret(seeded: Seeded) -> None:
    with pytest.raises(ValueError), seeded.ctx.db.transaction() as session:
        audit.record(
            session,
            OPERATOR,
            "key.updated",
            now=seeded.ctx.clock(),
            org_id=seeded.org_id,
            target_type="key",
            target_ref="x",
            after={"oops": seeded.secret},
        )
    with seeded.ctx.db.session() as session:
        assert not session.scalars(select(AuditEvent).where(AuditEvent.target_ref == "x")).all()
