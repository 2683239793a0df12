"""``keyrack export``: runs the export through the services, writes the file, prints the
watermark for the next ``--since``."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.errors import NotFound
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients
from tests.conftest import Seeded


@pytest.fixture
def runner(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("keyrack.cli.exports.context", lambda: seeded.ctx)
    return CliRunner()


def test_keyrack_export_writes_the_file_and_chains_from_since(
    runner: CliRunner, seeded: Seeded, ctx: Context, tmp_path: Path
) -> None:
    made = [
        clients.create_client(ctx, Actor(label="t"), seeded.scope, name=f"Client {i}, Ltd")
        for i in range(3)
    ]
    target = tmp_path / "clients.csv"
    args = ["export", "clients", "--org", seeded.org_slug, "-o", str(target), "--json"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["rows"] == 3 and summary["file"] == str(target)
    with target.open(newline="", encoding="utf-8") as file:
        assert [r["name"] for r in csv.DictReader(file)] == [c.name for c in made]

    clients.update_client(ctx, Actor(label="t"), seeded.scope, made[0].ref, arr_cents=5)
    nd = tmp_path / "changed.ndjson.gz"
    since = ["--since", summary["next_updated_since"], "--format", "ndjson", "--gzip"]
    second = runner.invoke(cli, [*args[:4], "-o", str(nd), *since])
    assert second.exit_code == 0, second.output
    assert "1 rows" in second.stdout and "next: --since" in second.stdout
    lines = gzip.decompress(nd.read_bytes()).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [made[0].ref]


def test_keyrack_export_refuses_an_unknown_org_or_resource(
    runner: CliRunner,
) -> None:
    unknown = runner.invoke(cli, ["export", "clients", "--org", "nope"])
    assert isinstance(unknown.exception, NotFound) and unknown.exception.exit_code == 1
    assert runner.invoke(cli, ["export", "keys", "--org", "acme"]).exit_code == 2


def test_keyrack_import_applies_a_file_and_lists_the_failed_rows(
    runner: CliRunner, seeded: Seeded, ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keyrack.cli.imports.context", lambda: seeded.ctx)
    source = tmp_path / "clients.csv"
    source.write_text("name,health,external_ids.legacy\r\nA,1,a\r\nB,999,b\r\n", encoding="utf-8")
    args = ["import", "clients", str(source), "--org", seeded.org_slug]
    first = runner.invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    body = json.loads(first.stdout)
    assert (body["created"], body["failed"]) == (1, 1)
    assert body["failed_rows"] == [{"line": 3, "error": "health must be a score between 0 and 100"}]
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "0 created, 0 updated, 1 unchanged, 1 failed" in again.stdout
    assert "line 3: health must be a score" in again.stdout
