"""The sync engine against the HubSpot fake on a real socket, on SQLite and PostgreSQL:
inbound companies → clients and outbound clients → companies with per-record outcomes,
filters that skip with their values, provider errors recorded exactly, a refused
credential and its recovery, directions on their own, change history, retries, one run
at a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from keyrack import outbound
from keyrack.errors import Conflict, InvalidInput
from keyrack.jobs import admin
from keyrack.services import jobs
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, contacts
from keyrack.services.integrations import connections, engine, runs, syncs
from keyrack.services.integrations.runs import RunView
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.notices import Notification
from tests.conftest import MutableClock, Seeded
from tests.fakes.base import loopback_certificate
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.peers import (
    HubSpotPeer,
    SalesforcePeer,
    Stage,
    hubspot_peer,
    salesforce_peer,
)

ADMIN = Actor(label="admin@acme.test")


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


def connect(ctx: Context, seeded: Seeded, hub: HubSpotPeer) -> str:
    view = connections.create(
        ctx,
        ADMIN,
        seeded.scope,
        provider="hubspot",
        name="Our HubSpot",
        base_url=hub.base_url,
        credential=hub.credential,
    )
    assert view.status == "active", view
    return view.id


def run_now(ctx: Context, seeded: Seeded, ref: str) -> RunView:
    requested = runs.request_run(ctx, ADMIN, seeded.scope, ref)
    assert requested.status == "queued"
    jobs.worker(ctx).drain()
    return runs.get_run(ctx, seeded.scope, ref, requested.id)


def records(ctx: Context, seeded: Seeded, ref: str, run: RunView, **filters: Any) -> list[Any]:
    return runs.list_records(ctx, seeded.scope, ref, run.id, limit=200, **filters).data


def remote_by_keyrack_id(hub: HubSpotPeer) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for key, record in hub.fake._tables["companies"].rows.items():
        if record.fields.get("keyrack_id"):
            held.setdefault(record.fields["keyrack_id"], []).append(str(key))
    return held


def test_inbound_companies_become_clients_with_outcomes(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    ids = hub.fake.seed(
        "companies",
        [
            {"name": "Acme", "annualrevenue": "1200.50"},
            {"name": "Globex", "annualrevenue": "10"},
            {"name": "Tiny", "annualrevenue": "5"},
        ],
    )
    syncs.put_sync(
        ctx,
        ADMIN,
        seeded.scope,
        ref,
        "clients",
        "inbound",
        enabled=True,
        filters=[{"field": "annualrevenue", "op": "gte", "value": 10}],
    )
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.counts["clients"]["inbound"] == {"synced": 2, "created": 2, "skipped": 1}
    assert run.api_calls >= 2
    skipped = records(ctx, seeded, ref, run, outcome="skipped")
    assert [r.remote_id for r in skipped] == [ids[2]]
    assert skipped[0].skip == {
        "index": 0,
        "filter": {"field": "annualrevenue", "op": "gte", "value": 10},
        "field": "annualrevenue",
        "tested": "5",
        "present": True,
    }
    held = clients.list_clients(ctx, seeded.scope, external_id=f"hubspot:{ids[0]}").data
    assert [(c.name, c.arr_cents) for c in held] == [("Acme", 120050)]

    again = run_now(ctx, seeded, ref)  # incremental: nothing changed since the watermark
    assert again.counts == {} and again.watermark_before == run.watermark_after
    hub.fake.touch("companies", ids[1])
    third = run_now(ctx, seeded, ref)
    assert third.counts["clients"]["inbound"] == {"synced": 1, "unchanged": 1}


def test_outbound_clients_become_companies_once(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    made = [
        clients.create_client(ctx, ADMIN, seeded.scope, name=f"Client {n}", arr_cents=100 * n)
        for n in range(5)
    ]
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "outbound", enabled=True)
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.counts["clients"]["outbound"] == {"synced": 5, "created": 5}
    held = remote_by_keyrack_id(hub)
    assert sorted(held) == sorted(c.ref for c in made) and all(len(v) == 1 for v in held.values())
    first = clients.get_client(ctx, seeded.scope, made[1].ref)
    assert first.external_ids == {"hubspot": held[made[1].ref][0]}
    assert first.updated_at == made[1].updated_at  # the write-back is no change to send again
    assert hub.fake.record("companies", held[made[1].ref][0])["annualrevenue"] == "1"  # type: ignore[index]

    clients.update_client(ctx, ADMIN, seeded.scope, made[2].ref, name="Renamed")
    second = run_now(ctx, seeded, ref)
    assert second.counts["clients"]["outbound"] == {"synced": 1, "updated": 1}
    assert hub.fake.count("companies") == 5


def test_a_provider_error_is_recorded_exactly_and_retried_alone(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    good = clients.create_client(ctx, ADMIN, seeded.scope, name="Good")
    bad = clients.create_client(ctx, ADMIN, seeded.scope, name="Bad", arr_cents=500)
    mappings = [
        {"local": "name", "remote": "name", "transform": "trim"},
        {"local": "arr_cents", "remote": "colour", "transform": "cents_to_units"},
    ]
    syncs.put_sync(
        ctx, ADMIN, seeded.scope, ref, "clients", "outbound", enabled=True, field_mappings=mappings
    )
    run = run_now(ctx, seeded, ref)
    assert run.status == "partial", run
    failed = records(ctx, seeded, ref, run, outcome="failed")
    assert {r.local_id for r in failed} == {good.ref, bad.ref}
    one = failed[0]
    assert one.error_message.startswith('Property values were not valid: [{"isValid":false')
    assert one.error_code == "VALIDATION_ERROR" and one.http_status in (200, 207, 400)
    assert one.exchange["method"] == "POST" and "batch" in one.exchange["url"]
    assert hub.credential["api_key"] not in str(one.exchange)
    assert records(ctx, seeded, ref, run, q=bad.ref)[0].local_id == bad.ref
    assert records(ctx, seeded, ref, run, q="Goo")[0].local_id == good.ref

    mappings[1]["remote"] = "annualrevenue"
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "outbound", field_mappings=mappings)
    other = clients.create_client(ctx, ADMIN, seeded.scope, name="Not retried")
    retry = runs.retry_run(ctx, ADMIN, seeded.scope, ref, run.id)
    assert retry.retry_of == run.id
    jobs.worker(ctx).drain()
    done = runs.get_run(ctx, seeded.scope, ref, retry.id)
    assert done.status == "succeeded", done
    assert done.counts["clients"]["outbound"] == {"synced": 2, "created": 2}
    assert other.ref not in remote_by_keyrack_id(hub)
    with pytest.raises(InvalidInput, match="no failed record"):
        runs.retry_run(ctx, ADMIN, seeded.scope, ref, retry.id)


def test_a_refused_credential_makes_the_connection_unauthorized_and_reauthorizing_recovers(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", enabled=True)
    hub.refuse()
    run = run_now(ctx, seeded, ref)
    assert run.status == "failed" and run.error == INVALID_AUTHENTICATION
    view = connections.get(ctx, seeded.scope, ref)
    assert (view.status, view.status_reason) == ("unauthorized", "credential-refused")
    assert view.last_error_message == INVALID_AUTHENTICATION and view.last_error_at is not None
    with ctx.db.session() as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
        notified = list(session.scalars(select(Notification.event_type)))
    assert "integration.unauthorized" in actions and "integration.unauthorized" in notified

    fresh = {"api_key": hub.fake.private_app_token()}
    recovered = connections.put_credential(ctx, ADMIN, seeded.scope, ref, fresh)
    assert recovered.status == "active"
    with ctx.db.session() as session:
        assert "integration.recovered" in set(session.scalars(select(Notification.event_type)))
    assert run_now(ctx, seeded, ref).status == "succeeded"


def test_disabling_one_direction_leaves_the_other_and_every_change_is_recorded(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    for direction in ("inbound", "outbound"):
        syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", direction, enabled=True)
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "outbound", enabled=False)
    assert syncs.get_sync(ctx, seeded.scope, ref, "clients", "inbound").enabled
    assert not syncs.get_sync(ctx, seeded.scope, ref, "clients", "outbound").enabled
    clients.create_client(ctx, ADMIN, seeded.scope, name="Stays home")
    hub.fake.seed("companies", [{"name": "Comes in"}])
    run = run_now(ctx, seeded, ref)
    assert set(run.counts["clients"]) == {"inbound"} and hub.fake.count("companies") == 1

    connections.update(ctx, ADMIN, seeded.scope, ref, name="Renamed HubSpot")
    connections.put_credential(ctx, ADMIN, seeded.scope, ref, hub.credential)
    history = connections.list_changes(ctx, seeded.scope, ref, limit=50).data
    what = [c.what for c in reversed(history)]
    assert what[:2] == ["connection", "credential"] and "status" in what
    assert what[-2:] == ["connection", "credential"]
    assert what.count("sync:clients:outbound") == 2
    renamed = history[1]
    assert (renamed.before, renamed.after) == ({"name": "Our HubSpot"}, {"name": "Renamed HubSpot"})
    disabled = next(c for c in history if c.what == "sync:clients:outbound")
    assert (disabled.before, disabled.after) == ({"enabled": True}, {"enabled": False})
    assert hub.credential["api_key"] not in repr(history)


def test_one_run_per_connection_at_a_time(ctx: Context, seeded: Seeded, hub: HubSpotPeer) -> None:
    ref = connect(ctx, seeded, hub)
    first = runs.request_run(ctx, ADMIN, seeded.scope, ref)
    with pytest.raises(Conflict) as refused:
        runs.request_run(ctx, ADMIN, seeded.scope, ref)
    assert refused.value.extra == {"run_id": first.id}  # type: ignore[attr-defined]
    jobs.worker(ctx).drain()
    assert runs.get_run(ctx, seeded.scope, ref, first.id).status == "succeeded"
    assert runs.request_run(ctx, ADMIN, seeded.scope, ref).id != first.id


def test_the_schedule_enqueues_due_runs_and_probes_daily(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer, clock: MutableClock
) -> None:
    assert engine.TICK_JOB in {s.kind for s in jobs.SCHEDULES}
    ref = connect(ctx, seeded, hub)
    assert engine.tick(ctx) == {"runs_enqueued": 0, "probed": 0}  # nothing enabled yet
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", enabled=True)
    assert engine.tick(ctx) == {"runs_enqueued": 1, "probed": 0}  # due at once when enabled
    assert engine.tick(ctx) == {"runs_enqueued": 0, "probed": 0}  # one at a time
    jobs.worker(ctx).drain()
    [run] = runs.list_runs(ctx, seeded.scope, ref).data
    assert (run.trigger, run.status) == ("schedule", "succeeded")
    clock.advance(timedelta(seconds=899))
    assert engine.tick(ctx)["runs_enqueued"] == 0
    clock.advance(timedelta(seconds=2))
    assert engine.tick(ctx)["runs_enqueued"] == 1
    jobs.worker(ctx).drain()

    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", schedule_seconds=0)
    hub.refuse()
    clock.advance(timedelta(days=1, seconds=1))
    assert engine.tick(ctx) == {"runs_enqueued": 0, "probed": 1}  # manual only; probed daily
    assert connections.get(ctx, seeded.scope, ref).status == "unauthorized"


def test_a_provider_down_leaves_the_status_and_records_the_error(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    hub.fail_next(503)
    run = run_now(ctx, seeded, ref)
    assert run.status == "failed" and run.error
    view = connections.get(ctx, seeded.scope, ref)
    assert view.status == "active" and view.last_error_message == run.error


def test_sync_settings_are_checked(ctx: Context, seeded: Seeded, hub: HubSpotPeer) -> None:
    ref = connect(ctx, seeded, hub)
    refused = [
        ({"field_mappings": [{"local": "colour", "remote": "name"}]}, "have no field 'colour'"),
        ({"schedule_seconds": 10**9}, "schedule_seconds"),
        ({"enabled": "yes"}, "enabled must be true or false"),
    ]
    for changes, says in refused:
        with pytest.raises(InvalidInput, match=says):
            syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", **changes)
    with pytest.raises(InvalidInput, match="record_type must be one of"):
        syncs.get_sync(ctx, seeded.scope, ref, "invoices", "inbound")
    unset = syncs.get_sync(ctx, seeded.scope, ref, "engagements", "inbound")
    assert not unset.enabled and "occurred_at" in {m.local for m in unset.field_mappings}
    assert connections.list_changes(ctx, seeded.scope, ref).data[0].what == "status"


@pytest.fixture
def salesforce(salesforce_stage: Stage) -> Iterator[SalesforcePeer]:
    """The Salesforce fake (TLS on loopback), its certificate trusted by outbound calls."""
    outbound.tls_context().load_verify_locations(loopback_certificate()[0])
    with salesforce_peer(salesforce_stage) as peer:
        yield peer


def test_salesforce_accounts_and_clients_both_ways(
    ctx: Context, seeded: Seeded, salesforce: SalesforcePeer
) -> None:
    ref = connections.create(
        ctx,
        ADMIN,
        seeded.scope,
        provider="salesforce",
        name="Salesforce",
        base_url=salesforce.base_url,
        credential=salesforce.credential,
    ).id
    assert connections.get(ctx, seeded.scope, ref).status == "active"
    [account] = salesforce.seed_clients(1)
    mine = clients.create_client(ctx, ADMIN, seeded.scope, name="Ours", arr_cents=250_000)
    for direction in ("inbound", "outbound"):
        syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", direction, enabled=True)
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.counts["clients"]["inbound"] == {"synced": 1, "created": 1}
    assert run.counts["clients"]["outbound"] == {"synced": 1, "created": 1, "skipped": 1}
    [echo] = records(ctx, seeded, ref, run, outcome="skipped")
    assert echo.remote_id == account and echo.skip["reason"] == "from-provider"  # type: ignore[index]
    [came] = clients.list_clients(ctx, seeded.scope, external_id=f"salesforce:{account}").data
    assert came.name == "Account 0"
    sent = clients.get_client(ctx, seeded.scope, mine.ref).external_ids["salesforce"]
    assert salesforce.fake.record("Account", sent)["AnnualRevenue"] in (2500, 2500.0)  # type: ignore[index]
    assert salesforce.count() == 2  # the account that came in was not sent back as another


def test_contacts_go_with_their_client_and_come_back_matched(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    client = clients.create_client(ctx, ADMIN, seeded.scope, name="Acme")
    people = [
        contacts.create_contact(
            ctx, ADMIN, seeded.scope, client_ref=client.ref, name=name, email=f"{name}@acme.test"
        )
        for name in ("ada", "bob")
    ]
    for record_type in ("contacts", "clients"):  # enabled in the wrong order on purpose
        syncs.put_sync(ctx, ADMIN, seeded.scope, ref, record_type, "outbound", enabled=True)
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.counts["contacts"]["outbound"] == {"synced": 2, "created": 2}
    company = clients.get_client(ctx, seeded.scope, client.ref).external_ids["hubspot"]
    for person in people:
        remote = contacts.get_contact(ctx, seeded.scope, person.ref).external_ids["hubspot"]
        assert hub.fake.record("contacts", remote)["email"] == person.email  # type: ignore[index]
        assert company in hub.fake.associated("contacts", remote, "companies")

    for record_type in ("contacts", "clients"):
        syncs.put_sync(ctx, ADMIN, seeded.scope, ref, record_type, "inbound", enabled=True)
    back = run_now(ctx, seeded, ref)
    assert back.counts["contacts"]["inbound"] == {"synced": 2, "unchanged": 2}
    assert back.counts["clients"]["inbound"] == {"synced": 1, "unchanged": 1}
    assert len(contacts.list_contacts(ctx, seeded.scope).data) == 2


def test_a_run_counts_its_api_calls_and_rate_limit_waits(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    clients.create_client(ctx, ADMIN, seeded.scope, name="Paced")
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "outbound", enabled=True)
    hub.rate_limit()  # HubSpot's 429 with its rate-limit headers, waited out
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.rate_limit_wait_seconds > 0 and run.api_calls >= 3  # probe, read-back, write


def test_a_run_whose_job_ended_does_not_block_the_next(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    stuck = runs.request_run(ctx, ADMIN, seeded.scope, ref)
    [job] = admin.list_jobs(ctx.db, kind=runs.RUN_JOB).data
    with ctx.db.transaction() as session:
        admin.cancel(session, job.id, ctx.clock())  # as if its workers had died on every attempt
    fresh = runs.request_run(ctx, ADMIN, seeded.scope, ref)
    ended = runs.get_run(ctx, seeded.scope, ref, stuck.id)
    assert (ended.status, ended.error) == ("failed", runs.ABANDONED)
    jobs.worker(ctx).drain()
    assert runs.get_run(ctx, seeded.scope, ref, fresh.id).status == "succeeded"
