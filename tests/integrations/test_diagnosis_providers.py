"""Diagnose against every writable provider — the HubSpot and Salesforce fakes and a
second, real Keyrack — on SQLite and PostgreSQL: when the far side refuses the
credential, the first check names it with the provider's own words, the bundle quotes
them, an issue opens, and no bundle holds the credential."""

from __future__ import annotations

import json

from keyrack import outbound
from keyrack.services import jobs
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients
from keyrack.services.integrations import connections, diagnosis, issues, runs, syncs
from tests.conftest import Seeded
from tests.fakes.base import loopback_certificate
from tests.integrations.peers import WritablePeer

ADMIN = Actor(label="admin@acme.test")


def test_diagnose_names_a_refused_credential_in_the_providers_words(
    ctx: Context, seeded: Seeded, writable: WritablePeer
) -> None:
    outbound.tls_context().load_verify_locations(loopback_certificate()[0])
    scope = seeded.scope
    ref = connections.create(
        ctx,
        ADMIN,
        scope,
        provider=writable.name,
        name=f"Far {writable.name}",
        base_url=writable.base_url,
        credential=writable.credential,
    ).id
    client = clients.create_client(ctx, ADMIN, scope, name="Acme", arr_cents=120_000)
    syncs.put_sync(ctx, ADMIN, scope, ref, "clients", "outbound", enabled=True)
    for expected in ("succeeded", "failed"):
        runs.request_run(ctx, ADMIN, scope, ref)
        jobs.worker(ctx).drain()
        [last] = runs.list_runs(ctx, scope, ref, limit=1).data
        assert last.status == expected, last
        if expected == "succeeded":
            refusal = writable.refuse()
            clients.update_client(ctx, ADMIN, scope, client.ref, name="Acme Inc")

    found = diagnosis.diagnose(ctx, ADMIN, scope, ref)
    first = found.checks[0]
    assert first.name == "credentials" and first.verdict == "problem"
    assert first.data["status"] in {s.value for s in refusal.statuses}
    assert refusal.message in first.summary
    assert found.bundle["error"]["message"].startswith(refusal.message)
    assert [e["local_id"] for e in found.bundle["examples"]] == [client.ref]
    [issue] = issues.list_issues(ctx, scope, ref, status="open").data
    assert issue.kind == "credential"
    texts = json.dumps(found.as_dict(), default=str) + json.dumps(issue.bundle)
    for value in writable.credential.values():
        if isinstance(value, str) and len(value) > 8:
            assert value not in texts
