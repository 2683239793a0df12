"""``keyrack requests`` (staff decide production-key requests) and ``keyrack apps``."""

from __future__ import annotations

from typing import Any

import typer

from keyrack.cli.common import OPERATOR, JsonOption, console, context, emit_json, emit_table
from keyrack.domain.requests import RequestStatus
from keyrack.services import apps, requests
from keyrack.services.apps import AppView
from keyrack.services.requests import KeyRequestView

app = typer.Typer(help="Production-key requests (staff).", no_args_is_help=True)
apps_app = typer.Typer(help="The app catalog.", no_args_is_help=True)


def _as_dict(view: KeyRequestView) -> dict[str, Any]:
    return {
        "ref": view.ref,
        "organization": view.org_slug,
        "app": view.app_ref,
        "app_name": view.app_name,
        "message": view.message,
        "status": view.status.value,
        "requested_by": view.requested_by,
        "created_at": view.created_at,
        "decided_by": view.decided_by,
        "decided_at": view.decided_at,
        "reason": view.reason,
        "key_ref": view.key_ref,
        "claim_ref": view.claim_ref,
    }


@app.command("list")
def list_requests(
    status: RequestStatus | None = typer.Option(None, help="Only requests in this status."),
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """Every organization's requests, newest first."""
    page = requests.list_requests(context(), None, status=status, limit=limit, cursor=cursor)
    if as_json:
        emit_json({"data": [_as_dict(v) for v in page.data], "next_cursor": page.next_cursor})
        return
    emit_table(
        "Production-key requests",
        ["ref", "organization", "app / message", "status", "requested", "by"],
        [
            (
                v.ref,
                v.org_slug,
                v.app_name or v.message,
                v.status.value,
                f"{v.created_at:%Y-%m-%d %H:%M}",
                v.requested_by,
            )
            for v in page.data
        ],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("approve")
def approve(
    ref: str,
    permissions: str | None = typer.Option(
        None, help="Comma-separated; only for free-text requests (apps get their sandbox's)."
    ),
    name: str | None = typer.Option(None, help="Name of the production key."),
    as_json: bool = JsonOption,
) -> None:
    """Issue the production key. Its secret goes to the customer's admins, never here."""
    granted = [p for p in permissions.split(",") if p.strip()] if permissions is not None else None
    view = requests.approve_request(context(), OPERATOR, ref, permissions=granted, name=name)
    if as_json:
        emit_json(_as_dict(view))
        return
    console.print(
        f"approved [bold]{view.ref}[/bold]: production key {view.key_ref} issued to "
        f"{view.org_slug}; its admins reveal it once (claim {view.claim_ref})"
    )


@app.command("reject")
def reject(
    ref: str,
    reason: str = typer.Option(..., help="Why, shown to the customer."),
    as_json: bool = JsonOption,
) -> None:
    """Refuse a production-key request, with a reason for the customer."""
    view = requests.reject_request(context(), OPERATOR, ref, reason=reason)
    if as_json:
        emit_json(_as_dict(view))
        return
    console.print(f"rejected [bold]{view.ref}[/bold]")


def _app_dict(view: AppView) -> dict[str, Any]:
    return {
        "ref": view.ref,
        "name": view.name,
        "vendor": view.vendor_slug,
        "description": view.description,
        "permissions": list(view.permissions),
        "created_at": view.created_at,
    }


@apps_app.command("list")
def list_apps(
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """The apps vendors offer, with the permissions their keys get."""
    page = apps.list_apps(context(), limit=limit, cursor=cursor)
    if as_json:
        emit_json({"data": [_app_dict(v) for v in page.data], "next_cursor": page.next_cursor})
        return
    emit_table(
        "App catalog",
        ["ref", "name", "vendor", "permissions"],
        [(v.ref, v.name, v.vendor_slug, ", ".join(v.permissions)) for v in page.data],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")
