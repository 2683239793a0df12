"""What the ``keyrack`` command prints, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.cli.common import console
from tests.conftest import Seeded


@pytest.fixture
def runner(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on the test database, printing into a narrow (80-column) terminal."""
    monkeypatch.setattr("keyrack.cli.keys.context", lambda: seeded.ctx)
    monkeypatch.setattr(console, "width", 80)
    return CliRunner()


def test_keys_list_prints_whole_refs_in_a_narrow_terminal(
    runner: CliRunner, seeded: Seeded
) -> None:
    other, _ = seeded.new_key(name="A rather long integration name that must give way")
    listed = runner.invoke(cli, ["keys", "list", "--org", seeded.org_slug])
    assert listed.exit_code == 0, listed.output
    assert seeded.key.ref in listed.output
    assert other.ref in listed.output
    # the ref printed can be fed straight back to the next command
    revoked = runner.invoke(cli, ["keys", "revoke", other.ref, "--reason", "copied from list"])
    assert revoked.exit_code == 0, revoked.output


def test_json_output_writes_times_in_iso_8601_like_the_api(
    runner: CliRunner, seeded: Seeded
) -> None:
    created = runner.invoke(
        cli, ["keys", "create", "--org", seeded.org_slug, "--name", "J", "--json"]
    )
    assert created.exit_code == 0, created.output
    body = json.loads(created.output)
    created_at = body["created_at"]
    assert created_at[10] == "T"  # not str(datetime), which has a space there
    assert datetime.fromisoformat(created_at).utcoffset() is not None
    assert body["last_used_at"] is None


def test_every_command_says_what_it_does_in_help() -> None:
    missing: list[str] = []

    def walk(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            if not (command.help or "").strip():
                missing.append(path)
            return
        for name, sub in subcommands.items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli), "keyrack")
    assert missing == []
