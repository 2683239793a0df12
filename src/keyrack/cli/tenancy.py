"""``keyrack orgs``, ``keyrack locations``, ``keyrack users``."""

from __future__ import annotations

import typer

from keyrack.cli.common import OPERATOR, JsonOption, console, context, emit_json, emit_table
from keyrack.domain.tenancy import OrgKind, Role
from keyrack.services import sessions, tenancy

orgs = typer.Typer(help="Organizations.", no_args_is_help=True)
locations = typer.Typer(help="Locations (sub-accounts) of an organization.", no_args_is_help=True)
users = typer.Typer(help="Users of an organization.", no_args_is_help=True)


@orgs.command("create")
def create_org(
    name: str = typer.Option(..., help="Display name."),
    slug: str = typer.Option(..., help="Unique slug, also the instance host name."),
    kind: OrgKind = typer.Option(OrgKind.CUSTOMER),
    no_api: bool = typer.Option(False, "--no-api", help="Create with API access disabled."),
    as_json: bool = JsonOption,
) -> None:
    """Create an organization (a customer or a vendor)."""
    org = tenancy.create_org(
        context(), OPERATOR, name=name, slug=slug, kind=kind, api_enabled=False if no_api else None
    )
    if as_json:
        emit_json(
            {
                "id": org.id,
                "slug": org.slug,
                "name": org.name,
                "kind": org.kind,
                "api_enabled": org.api_enabled,
            }
        )
    else:
        console.print(
            f"created organization [bold]{org.slug}[/bold] (api_enabled={org.api_enabled})"
        )


@orgs.command("list")
def list_orgs(as_json: bool = JsonOption) -> None:
    """Every organization and whether its API access is on."""
    rows = tenancy.list_orgs(context())
    if as_json:
        emit_json(
            [
                {"slug": o.slug, "name": o.name, "kind": o.kind, "api_enabled": o.api_enabled}
                for o in rows
            ]
        )
    else:
        emit_table(
            "Organizations",
            ["slug", "name", "kind", "api"],
            [(o.slug, o.name, o.kind, "enabled" if o.api_enabled else "disabled") for o in rows],
        )


@orgs.command("api")
def set_api_access(
    slug: str,
    enable: bool = typer.Option(..., "--enable/--disable", help="Turn API access on or off."),
) -> None:
    """Enable or disable API access for an organization (staff)."""
    org = tenancy.update_org(context(), OPERATOR, slug, api_enabled=enable)
    console.print(f"API access for {org.slug}: {'enabled' if org.api_enabled else 'disabled'}")


@locations.command("create")
def create_location(
    org: str = typer.Option(..., help="Organization slug."),
    name: str = typer.Option(...),
    slug: str = typer.Option(...),
    as_json: bool = JsonOption,
) -> None:
    """Create a location (sub-account) in an organization."""
    location = tenancy.create_location(context(), OPERATOR, org_slug=org, name=name, slug=slug)
    if as_json:
        emit_json({"id": location.id, "slug": location.slug, "name": location.name})
    else:
        console.print(f"created location [bold]{location.slug}[/bold] in {org}")


@users.command("create")
def create_user(
    org: str = typer.Option(..., help="Organization slug."),
    email: str = typer.Option(...),
    role: Role = typer.Option(Role.MEMBER),
    service: bool = typer.Option(False, "--service", help="A service user (API Access)."),
    as_json: bool = JsonOption,
) -> None:
    """Create a person (prints a password to change at the first sign-in) or a service user."""
    created = tenancy.create_user(
        context(), OPERATOR, org_slug=org, email=email, role=role, service=service
    )
    user = created.user
    if as_json:
        emit_json(
            {
                "id": user.id,
                "email": user.email,
                "role": user.role,
                "kind": user.kind,
                "password": created.password,
            }
        )
        return
    console.print(f"created {user.kind} user [bold]{user.email}[/bold] ({user.role})")
    if created.password:
        _print_password(created.password)


@users.command("reset-password")
def reset_password(
    email: str = typer.Argument(..., help="The person's email."), as_json: bool = JsonOption
) -> None:
    """Issue a new password to a person, to change at the next sign-in; signs them out."""
    password = sessions.reset_password(context(), OPERATOR, email)
    if as_json:
        emit_json({"email": email.strip().lower(), "password": password})
        return
    console.print(f"issued a new password to [bold]{email}[/bold]; their sessions ended")
    _print_password(password)


def _print_password(password: str) -> None:
    console.print("password, to be changed at the first sign-in (shown once):")
    console.print(password, markup=False, highlight=False)
