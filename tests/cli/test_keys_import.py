"""``keyrack keys import FILE --org SLUG``: JSON lines of keys by digest, on both databases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.cli.common import console
from tests.conftest import Seeded
from tests.verifier import Verifier


@pytest.fixture
def runner(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("keyrack.cli.keys.context", lambda: seeded.ctx)
    monkeypatch.setattr(console, "width", 120)
    return CliRunner()


def line(secret: str, **fields: object) -> str:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return json.dumps({"digest": digest, "name": "Legacy", "last4": secret[-4:]} | fields)


def test_a_file_imports_its_keys_reports_bad_lines_and_a_rerun_changes_nothing(
    runner: CliRunner, seeded: Seeded, tmp_path: Path
) -> None:
    secrets = [f"old-system-secret-{i:04d}-abcdefgh" for i in range(3)]
    file = tmp_path / "keys.jsonl"
    file.write_text(
        "\n".join(
            [
                line(secrets[0], permissions=["clients:read"]),
                "{not json",
                line(secrets[1]),
                "",
                line(secrets[2], permissions=["no:such"]),
            ]
        )
        + "\n"
    )
    first = runner.invoke(cli, ["keys", "import", str(file), "--org", seeded.org_slug, "--json"])
    assert first.exit_code == 1, first.output
    report = json.loads(first.output)
    assert (report["created"], report["unchanged"], report["refused"]) == (2, 0, 2)
    refused = {r["line"]: r["error"] for r in report["results"] if r["outcome"] == "refused"}
    assert set(refused) == {2, 5} and "no:such" in refused[5]
    check = Verifier(seeded.ctx, imports=True)
    assert check.verify(secrets[0]).valid and check.verify(secrets[1]).valid
    assert not Verifier(seeded.ctx, imports=True).verify(secrets[2]).valid

    again = runner.invoke(cli, ["keys", "import", str(file), "--org", seeded.org_slug])
    assert again.exit_code == 1
    assert "0 created, 2 unchanged, 2 refused" in again.output
    assert "line 2:" in again.output and "line 5:" in again.output
