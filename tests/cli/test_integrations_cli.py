"""``keyrack integrations`` and ``keyrack diagnose`` against the HubSpot fake on a real
socket, on SQLite and PostgreSQL: tables, --json, the bundle written with --out, exit
codes (1 when a run fails or a check finds a problem, 2 for bad usage)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.cli.common import console
from keyrack.errors import NotFound
from keyrack.services.context import Actor
from keyrack.services.crm import clients
from keyrack.services.integrations import connections, syncs
from tests.conftest import Seeded
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.conftest import hubspot_stage  # noqa: F401 (a fixture)
from tests.integrations.peers import HubSpotPeer, Stage, hubspot_peer

ADMIN = Actor(label="admin@acme.test")


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:  # noqa: F811
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


@pytest.fixture
def runner(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("keyrack.cli.integrations.context", lambda: seeded.ctx)
    monkeypatch.setattr("keyrack.cli.keys.context", lambda: seeded.ctx)
    monkeypatch.setattr(console, "width", 100)
    return CliRunner()


def test_list_show_run_test_record_and_diagnose(
    runner: CliRunner, seeded: Seeded, hub: HubSpotPeer, tmp_path: Path
) -> None:
    ctx, scope = seeded.ctx, seeded.scope
    ref = connections.create(
        ctx,
        ADMIN,
        scope,
        provider="hubspot",
        name="CLI HubSpot",
        base_url=hub.base_url,
        credential=hub.credential,
    ).id
    client = clients.create_client(ctx, ADMIN, scope, name="Acme", arr_cents=120_000)
    syncs.put_sync(ctx, ADMIN, scope, ref, "clients", "outbound", enabled=True)

    listed = runner.invoke(cli, ["integrations", "list", "--org", seeded.org_slug])
    assert listed.exit_code == 0, listed.output
    assert ref in listed.output and "CLI HubSpot" in listed.output

    ran = runner.invoke(cli, ["integrations", "run", ref, "--work", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output)["counts"] == {
        "clients": {"outbound": {"synced": 1, "created": 1}}
    }

    shown = runner.invoke(cli, ["integrations", "show", ref])
    assert shown.exit_code == 0, shown.output
    assert "clients" in shown.output and "succeeded" in shown.output

    tested = runner.invoke(
        cli,
        [
            "integrations",
            "test-record",
            ref,
            client.ref,
            "--record-type",
            "clients",
            "--direction",
            "outbound",
        ],
    )
    assert tested.exit_code == 0, tested.output
    assert "would-sync" in tested.output and "dry run" in tested.output

    hub.fake.revoke(hub.credential["api_key"])
    failed = runner.invoke(cli, ["integrations", "run", ref, "--work"])
    assert failed.exit_code == 1 and "failed" in failed.output

    out = tmp_path / "bundle.md"
    found = runner.invoke(cli, ["diagnose", ref, "--out", str(out)])
    assert found.exit_code == 1, found.output  # a check found the problem
    assert "credentials" in found.output and "problem" in found.output
    text = out.read_text()
    assert INVALID_AUTHENTICATION in text and hub.credential["api_key"] not in text
    as_json = runner.invoke(
        cli, ["diagnose", ref, "--record-type", "clients", "--direction", "outbound", "--json"]
    )
    body = json.loads(as_json.output)
    assert body["checks"][0]["verdict"] == "problem"
    assert body["bundle"]["error"]["message"] == INVALID_AUTHENTICATION


def test_bad_usage_and_unknown_integrations(runner: CliRunner, seeded: Seeded) -> None:
    assert runner.invoke(cli, ["integrations", "show"]).exit_code == 2
    missing = runner.invoke(cli, ["diagnose", "int_nope"])
    assert isinstance(missing.exception, NotFound)  # main() prints it and exits 1
    assert missing.exception.exit_code == 1
