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
from keyrack.services import keys, tenancy
from keyrack.services.context import Context
from tests.conftest import OPERATOR, Seeded, seed_org


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


@pytest.fixture
def everywhere(runner: CliRunner, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """``runner`` with every command module on the test database."""
    for module in ("tenancy", "server"):
        monkeypatch.setattr(f"keyrack.cli.{module}.context", lambda: seeded.ctx)
    return runner


def test_a_table_written_to_a_pipe_is_as_wide_as_its_content(
    runner: CliRunner, seeded: Seeded
) -> None:
    long_name = "A rather long integration name that must not be cut at eighty columns"
    other, _ = seeded.new_key(name=long_name)
    listed = runner.invoke(cli, ["keys", "list", "--org", seeded.org_slug])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if other.ref in line)
    assert long_name in row and other.masked in row
    assert len(row) > 80


def test_an_issued_password_is_printed_whole_on_a_line_of_its_own(
    everywhere: CliRunner, seeded: Seeded
) -> None:
    email = "someone.with.a.rather.long.address@a-long-subdomain.acme.test"
    created = everywhere.invoke(
        cli, ["users", "create", "--org", seeded.org_slug, "--email", email]
    )
    assert created.exit_code == 0, created.output
    assert email in created.output.splitlines()[0]  # not wrapped
    password = created.output.splitlines()[-1]
    user = tenancy.authenticate(seeded.ctx, email, password)
    assert user is not None and user.password_must_change


def test_the_first_run_line_is_one_line_with_the_whole_password(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keyrack.cli.server.Context.from_settings", lambda settings: ctx)
    monkeypatch.setattr("keyrack.cli.server.uvicorn.run", lambda *args, **kwargs: None)
    monkeypatch.setattr(console, "width", 80)
    served = CliRunner().invoke(cli, ["serve"])  # on an empty database
    assert served.exit_code == 0, served.output
    (line,) = [line for line in served.output.splitlines() if line.strip()]
    assert line.startswith("First run.") and len(line) > 80
    password = line.rsplit(" ", 1)[1]
    assert tenancy.authenticate(ctx, "owner@keyrack.local", password) is not None


def test_keys_create_owner_makes_the_key_act_as_that_user(
    everywhere: CliRunner, seeded: Seeded
) -> None:
    service = tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug=seeded.org_slug, email="api@acme.test", service=True
    ).user
    created = everywhere.invoke(
        cli,
        ["keys", "create", "--org", seeded.org_slug, "--name", "Sync", "--owner", "API@acme.test"],
    )
    assert created.exit_code == 0, created.output
    ref = created.output.split()[2]
    assert keys.get_key(seeded.ctx, seeded.scope, ref).owner_id == service.id

    seed_org(seeded.ctx, "other")
    elsewhere = everywhere.invoke(
        cli, ["keys", "create", "--org", "other", "--name", "X", "--owner", "api@acme.test"]
    )
    assert elsewhere.exit_code == 1
    assert "no user 'api@acme.test' in this organization" in str(elsewhere.exception)


def test_reset_password_prints_a_password_to_change_at_the_next_sign_in(
    everywhere: CliRunner, seeded: Seeded
) -> None:
    email = "admin@acme.test"
    reset = everywhere.invoke(cli, ["users", "reset-password", email, "--json"])
    assert reset.exit_code == 0, reset.output
    password = json.loads(reset.output)["password"]
    user = tenancy.authenticate(seeded.ctx, email, password)
    assert user is not None and user.password_must_change
    assert everywhere.invoke(cli, ["users", "reset-password", "nobody@acme.test"]).exit_code == 1
