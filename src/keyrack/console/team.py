"""Settings → Team: users and roles, service users, seats; and the audit log."""

from __future__ import annotations

from datetime import MAXYEAR, UTC, datetime, timedelta
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    PREFIX,
    ActorDep,
    AdminDep,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    render,
    see_other,
)
from keyrack.domain.tenancy import Role
from keyrack.errors import Conflict, InvalidInput
from keyrack.routing import Router
from keyrack.services import audit, tenancy
from keyrack.services.audit import AuditFilter
from keyrack.services.context import Context

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

NOTICES = {
    "deactivated": "User deactivated: they can no longer sign in.",
    "activated": "User reactivated.",
}


def _team_page(
    ctx: Context,
    request: Request,
    org_id: int,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    created: tenancy.NewUser | None = None,
    typed: dict[str, object] | None = None,
) -> HTMLResponse:
    """``typed``: what the add-user form held when it was refused, to show it again."""
    return render(
        request,
        "team.html",
        status_code=status,
        users=tenancy.list_users(ctx, org_id),
        seats=tenancy.seat_count(ctx, org_id),
        roles=list(Role),
        notice=notice,
        error=error,
        created=created,
        typed=typed or {"role": Role.MEMBER.value},
    )


@router.get("/settings/team")
def team(
    ctx: CtxDep, request: Request, current: AdminDep, notice: str | None = None
) -> HTMLResponse:
    assert current.user.org_id is not None
    return _team_page(ctx, request, current.user.org_id, notice=NOTICES.get(notice or ""))


@router.post("/settings/team/users", dependencies=[CsrfDep])
def create_user(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[Role, Form()] = Role.MEMBER,
    service: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    """The issued password is shown once, in this response only."""
    org_id = current.user.org_id
    assert org_id is not None
    org = tenancy.get_org_by_id(ctx, org_id)
    typed: dict[str, object] = {
        "email": email,
        "name": name,
        "role": role.value,
        "service": service,
    }
    if role is Role.OWNER and current.user.role != Role.OWNER.value:
        return _team_page(
            ctx,
            request,
            org_id,
            status=403,
            error="only an owner can make another owner",
            typed=typed,
        )
    try:
        created = tenancy.create_user(
            ctx,
            actor,
            org_slug=org.slug,
            email=email,
            role=role,
            name=name or None,
            service=service,
        )
    except (InvalidInput, Conflict) as exc:
        return _team_page(ctx, request, org_id, status=400, error=exc.detail, typed=typed)
    return _team_page(ctx, request, org_id, status=201, created=created)


@router.post("/settings/team/users/{user_id}/active", dependencies=[CsrfDep])
def set_active(
    ctx: CtxDep,
    user_id: int,
    current: AdminDep,
    actor: ActorDep,
    active: Annotated[bool, Form()] = False,
) -> Response:
    if user_id == current.user.id and not active:
        raise Conflict("you cannot deactivate yourself")
    tenancy.set_user_active(ctx, actor, user_id, active)
    return see_other(f"{PREFIX}/settings/team?notice={'activated' if active else 'deactivated'}")


def _day(value: str, what: str) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{what} must be a date like 2026-01-31") from None
    if day.year == MAXYEAR:  # ``until`` takes the whole day: the next one must exist
        raise InvalidInput(f"{what} must be a date before the year {MAXYEAR}")
    return day


@router.get("/audit")
def audit_log(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: str = "",
    key: str = "",
    action: str = "",
    since: str = "",
    until: str = "",
    cursor: str | None = None,
) -> HTMLResponse:
    """Newest first, 50 a page; ``until`` includes the whole day given."""
    end = _day(until, "until")
    filters = AuditFilter(
        actor=actor.strip() or None,
        target_ref=key.strip() or None,
        action=action.strip() or None,
        since=_day(since, "since"),
        until=end + timedelta(days=1) if end else None,
    )
    page = audit.list_events(ctx, current.user.org_id, filters, limit=50, cursor=cursor)
    query = {"actor": actor, "key": key, "action": action, "since": since, "until": until}
    return render(request, "audit.html", page=page, query=query)
