"""Two real Keyracks through the engine: the near one is the test's (SQLite and
PostgreSQL), the far one its own server on its own SQLite database, reached by the
``keyrack`` connector with one of its keys. A client made on the far side comes in; a
near client goes out exactly once; the far side revoking the key turns the connection
``revoked`` with the far side's problem document as its last error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyrack.services.context import Context
from keyrack.services.crm import clients
from keyrack.services.integrations import connections, syncs
from tests.conftest import Seeded
from tests.integrations.far_keyrack import FarKeyrack, far_keyrack, sqlite_copy
from tests.integrations.test_engine import ADMIN, records, run_now


@pytest.fixture
def far(_sqlite_template: Path, tmp_path: Path) -> Iterator[FarKeyrack]:
    with far_keyrack(sqlite_copy(_sqlite_template, tmp_path)) as server:
        yield server


def connect(ctx: Context, seeded: Seeded, far: FarKeyrack) -> str:
    view = connections.create(
        ctx,
        ADMIN,
        seeded.scope,
        provider="keyrack",
        name="The far Keyrack",
        base_url=far.url,
        credential={"api_key": far.secret},
    )
    assert view.status == "active", view
    return view.id


def test_a_far_client_comes_in_and_a_near_one_goes_out_once(
    ctx: Context, seeded: Seeded, far: FarKeyrack
) -> None:
    ref = connect(ctx, seeded, far)
    [theirs] = far.seed_clients(1)
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", enabled=True)
    came = run_now(ctx, seeded, ref)
    assert came.status == "succeeded", came
    assert came.counts["clients"]["inbound"] == {"synced": 1, "created": 1}
    [copy] = clients.list_clients(ctx, seeded.scope, external_id=f"keyrack:{theirs}").data
    assert copy.name == far.client(theirs).name

    mine = clients.create_client(ctx, ADMIN, seeded.scope, name="Near Corp", arr_cents=990)
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "outbound", enabled=True)
    went = run_now(ctx, seeded, ref)
    assert went.status == "succeeded", went
    assert went.counts["clients"]["outbound"]["created"] == 1
    [echo] = records(ctx, seeded, ref, went, outcome="skipped")
    assert echo.remote_id == theirs  # the client that came in is not sent back
    there = clients.get_client(ctx, seeded.scope, mine.ref).external_ids["keyrack"]
    assert (far.client(there).name, far.client(there).arr_cents) == ("Near Corp", 990)

    for _ in range(2):  # again: nothing new on either side
        again = run_now(ctx, seeded, ref)
        assert again.status == "succeeded", again
        assert "created" not in again.counts.get("clients", {}).get("outbound", {})
        assert "created" not in again.counts.get("clients", {}).get("inbound", {})
    names = sorted(c.name for c in far.all_clients())
    assert names == sorted([far.client(theirs).name, "Near Corp"])  # each once
    assert len(clients.list_clients(ctx, seeded.scope).data) == 2


def test_the_far_side_revoking_the_key_makes_the_connection_revoked(
    ctx: Context, seeded: Seeded, far: FarKeyrack
) -> None:
    ref = connect(ctx, seeded, far)
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", enabled=True)
    assert run_now(ctx, seeded, ref).status == "succeeded"
    far.revoke()
    with httpx.Client(base_url=far.url, headers={"X-API-Key": far.secret}) as http:
        document = http.get("/api/v2/clients").json()  # what the far side says to the key
    assert document["type"] == "https://keyrack.dev/problems/revoked-key"

    refused = run_now(ctx, seeded, ref)
    assert refused.status == "failed"
    view = connections.get(ctx, seeded.scope, ref)
    assert view.status == "revoked"
    said = f"{document['title']}: {document['detail']}"
    assert view.last_error_message == said and refused.error == said
    assert far.secret not in repr(view)
