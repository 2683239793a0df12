"""The SDK's exports: create, wait, iterate the rows, chain incrementally, 409 as an error."""

from __future__ import annotations

import io
from datetime import datetime

import httpx
import pytest

from keyrack.client import Client, ConflictError
from keyrack.services.context import Context
from tests.crm.conftest import Crm
from tests.exports.conftest import drain


@pytest.mark.parametrize(("fmt", "gzipped"), [("csv", False), ("ndjson", True)])
def test_the_sdk_iterates_an_exports_rows_and_chains_from_its_watermark(
    live_url: str, api: httpx.Client, crm: Crm, ctx: Context, fmt: str, gzipped: bool
) -> None:
    for name in ("Acme, Inc.", 'The "Best" Co', "Zürich"):
        api.post("/api/v2/clients", json={"name": name}, headers=crm.agency)
    with Client(crm.agency["X-API-Key"], base_url=live_url) as sdk:
        first = sdk.exports.create("clients", format=fmt, gzip=gzipped)
        with pytest.raises(ConflictError):
            sdk.exports.create("clients")
        drain(ctx)
        done = sdk.exports.wait(first["id"], poll=0.01, timeout=10)
        assert done["status"] == "succeeded"
        rows = list(sdk.exports.iter_rows(first["id"]))
        assert [r["name"] for r in rows] == ["Acme, Inc.", 'The "Best" Co', "Zürich"]
        sink = io.BytesIO()
        assert sdk.exports.download(first["id"], sink) == done["bytes"] == len(sink.getvalue())

        changed = sdk.clients.update(rows[1]["id"], arr_cents=7)
        since = datetime.fromisoformat(done["next_updated_since"])
        second = sdk.exports.create("clients", format=fmt, gzip=gzipped, updated_since=since)
        drain(ctx)
        sdk.exports.wait(second["id"], poll=0.01, timeout=10)
        again = list(sdk.exports.iter_rows(second["id"]))
        assert [(r["id"], str(r["arr_cents"])) for r in again] == [(changed["id"], "7")]
        assert [e["id"] for e in sdk.exports.iter()] == [second["id"], first["id"]]
