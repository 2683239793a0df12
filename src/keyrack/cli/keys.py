"""``keyrack keys``: create, list, roll, revoke, import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from keyrack.cli.common import (
    OPERATOR,
    JsonOption,
    console,
    context,
    emit_json,
    emit_table,
    parse_duration,
)
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Scope
from keyrack.errors import NotFound
from keyrack.http.schemas.key_import import KeyImportItem
from keyrack.services import key_import, keys, tenancy
from keyrack.services.key_import import KeyToImport, Outcome
from keyrack.services.keys import KeyView
from keyrack.storage.tables.keys import ApiKey

app = typer.Typer(help="API keys.", no_args_is_help=True)


def _as_dict(view: KeyView) -> dict[str, Any]:
    return {
        "ref": view.ref,
        "name": view.name,
        "environment": view.environment.value,
        "masked": view.masked,
        "status": view.status.value,
        "permissions": list(view.permissions),
        "location_id": view.location_id,
        "rate_per_second": view.rate_per_second,
        "concurrency": view.concurrency,
        "created_at": view.created_at,
        "last_used_at": view.last_used_at,
        "inactivity_deadline": view.inactivity_deadline,
    }


def _scope_of(ref: str) -> Scope:
    """The operator acts on any key: find the organization that owns ``ref``."""
    with context().db.session() as session:
        org_id = session.query(ApiKey.org_id).filter(ApiKey.ref == ref).scalar()
    if org_id is None:
        raise NotFound(f"no key {ref!r}")
    return Scope(org_id)


def _print_secret(view: KeyView, secret: str, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json({**_as_dict(view), "key": secret})
        return
    console.print(f"{verb} key [bold]{view.ref}[/bold] ({view.name}, {view.environment.value})")
    console.print("Secret (shown once, store it now):")
    console.print(secret, markup=False, highlight=False)


@app.command("create")
def create(
    org: str = typer.Option(..., help="Organization slug."),
    name: str = typer.Option(..., help="What the key is for, e.g. 'Nexla Integration'."),
    location: str | None = typer.Option(None, help="Location slug for a location key."),
    owner: str | None = typer.Option(
        None, help="Email of the user the key acts as, e.g. the organization's service user."
    ),
    env: Environment = typer.Option(Environment.SANDBOX, "--env"),
    permissions: str = typer.Option("", help="Comma-separated, e.g. clients:read,usage:write."),
    rps: int | None = typer.Option(None, "--rps", min=1, help="Requests per second."),
    concurrency: int | None = typer.Option(None, min=1, help="Requests in flight."),
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print its secret once; --owner names who it acts as."""
    ctx = context()
    with ctx.db.session() as session:
        organization = tenancy.org_by_slug(session, org)
        location_id = (
            tenancy.location_by_slug(session, organization.id, location).id if location else None
        )
        owner_id = tenancy.user_by_email(session, organization.id, owner).id if owner else None
    view, secret = keys.create_key(
        ctx,
        OPERATOR,
        Scope(organization.id),
        name=name,
        environment=env,
        location_id=location_id,
        owner_id=owner_id,
        permissions=[p for p in permissions.split(",") if p.strip()],
        rate_per_second=rps,
        concurrency=concurrency,
    )
    _print_secret(view, secret, as_json, "created")


@app.command("list")
def list_keys(
    org: str = typer.Option(..., help="Organization slug."),
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """An organization's keys, newest first (secrets masked)."""
    ctx = context()
    organization = tenancy.get_org(ctx, org)
    page = keys.list_keys(ctx, Scope(organization.id), limit=limit, cursor=cursor)
    if as_json:
        emit_json({"data": [_as_dict(v) for v in page.data], "next_cursor": page.next_cursor})
        return
    emit_table(
        f"Keys of {org}",
        ["ref", "name", "key", "env", "status", "generated", "last used"],
        [
            (
                v.ref,
                v.name,
                v.masked,
                v.environment.value,
                v.status.value,
                f"{v.created_at:%Y-%m-%d}",
                f"{v.last_used_at:%Y-%m-%d %H:%M}" if v.last_used_at else "never",
            )
            for v in page.data
        ],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("roll")
def roll(
    ref: str,
    grace: str | None = typer.Option(None, help="Keep the old secret working this long (max 7d)."),
    as_json: bool = JsonOption,
) -> None:
    """Issue a new secret; the old one stops now or after --grace."""
    delta = parse_duration(grace) if grace else parse_duration("0s")
    view, secret = keys.roll_key(context(), OPERATOR, _scope_of(ref), ref, grace=delta)
    _print_secret(view, secret, as_json, "rolled")


@app.command("revoke")
def revoke(ref: str, reason: str = typer.Option(..., help="Why, for the audit trail.")) -> None:
    """Stop a key at once, on every instance."""
    view = keys.revoke_key(context(), OPERATOR, _scope_of(ref), ref, reason=reason)
    console.print(f"revoked key [bold]{view.ref}[/bold]")


@app.command("import")
def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON lines file."),
    org: str = typer.Option(..., help="Organization slug."),
    as_json: bool = JsonOption,
) -> None:
    """Import keys of another system by the SHA-256 of their secret, one JSON object a line
    (the fields of POST /api/v2/keys/import); idempotent, so a re-run changes nothing."""
    ctx = context()
    scope = Scope(tenancy.get_org(ctx, org).id)
    rows: list[dict[str, Any]] = []
    batch: list[tuple[int, KeyToImport]] = []

    def flush() -> None:
        if not batch:
            return
        results = key_import.import_keys(ctx, OPERATOR, scope, [item for _, item in batch])
        for (line, _), result in zip(batch, results, strict=True):
            rows.append(
                {"line": line, "outcome": result.outcome.value, "ref": result.ref}
                | ({"error": result.error} if result.error else {})
            )
        batch.clear()

    with file.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                parsed = KeyImportItem.model_validate_json(text)
            except ValidationError as exc:
                error = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                rows.append({"line": number, "outcome": Outcome.REFUSED.value, "error": error})
                continue
            batch.append((number, KeyToImport(**parsed.model_dump())))
            if len(batch) == key_import.MAX_IMPORT:
                flush()
    flush()
    rows.sort(key=lambda row: int(row["line"]))
    counts = {o.value: sum(1 for row in rows if row["outcome"] == o.value) for o in Outcome}
    if as_json:
        emit_json({**counts, "results": rows})
    else:
        console.print(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
        for row in rows:
            if row["outcome"] == Outcome.REFUSED.value:
                console.print(f"line {row['line']}: {row['error']}", markup=False)
    if counts[Outcome.REFUSED.value]:
        raise typer.Exit(1)
