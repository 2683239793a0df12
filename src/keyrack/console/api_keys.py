"""Settings → API: list, generate, reveal, regenerate and revoke keys."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.charts import usage_chart
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
from keyrack.domain.authority import Rank
from keyrack.domain.keys import Environment
from keyrack.domain.permissions import PERMISSIONS
from keyrack.domain.tenancy import Scope
from keyrack.domain.usage import Granularity
from keyrack.errors import AccessDenied, InvalidInput
from keyrack.routing import Router, client_ip
from keyrack.services import key_usage, keys, sessions, tenancy
from keyrack.services.context import Actor, Context
from keyrack.services.sessions import SignedIn

router = Router(prefix=f"{PREFIX}/settings/api", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
GRACE_CHOICES = {0: "No grace: stops now", 3600: "1 hour", 86400: "24 hours", 604800: "7 days"}
NOTICES = {
    "created": "Key generated. Copy it now: it is shown in full only for a few minutes.",
    "regenerated": "Key regenerated. Copy the new secret now.",
    "revoked": "Key revoked. Requests with it are refused from now on.",
    "claimed": "Your approved production key. Copy it now, or create a one-time hand-off link.",
}
ABOUT_THE_SECRET = frozenset({"created", "regenerated", "claimed"})
"""Notices that speak of the secret on show: gone with it when the reveal window ends."""


def _names(ctx: Context, org_id: int) -> tuple[dict[int, str], dict[int, str]]:
    locations = {loc.id: loc.name for loc in tenancy.list_locations(ctx, org_id)}
    users = {user.id: user.name for user in tenancy.list_users(ctx, org_id)}
    return locations, users


@router.get("")
def list_page(
    ctx: CtxDep, request: Request, current: AdminDep, cursor: str | None = None
) -> HTMLResponse:
    assert current.user.org_id is not None
    page = keys.list_keys(ctx, Scope(current.user.org_id), limit=PAGE_SIZE, cursor=cursor)
    locations, users = _names(ctx, current.user.org_id)
    return render(
        request,
        "api_keys.html",
        page=page,
        locations=locations,
        users=users,
        revealed=sessions.take_reveals(ctx, current, client_ip(request)),
        busiest=key_usage.busiest_keys(
            ctx, Scope(current.user.org_id), start=ctx.clock() - timedelta(days=1), end=ctx.clock()
        ),
        now=ctx.clock(),
    )


@router.get("/new")
def new_form(ctx: CtxDep, request: Request, current: AdminDep) -> HTMLResponse:
    return _form(ctx, request, current)


def _form(
    ctx: Context,
    request: Request,
    current: SignedIn,
    *,
    error: str | None = None,
    values: dict[str, object] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The form offers as owners ("Acts as") only people not above the signed-in one."""
    org_id = current.user.org_id
    assert org_id is not None
    mine = Rank.of(current.user.role, is_staff=current.user.is_staff)
    return render(
        request,
        "api_key_new.html",
        status_code=status,
        permissions=PERMISSIONS,
        locations=tenancy.list_locations(ctx, org_id),
        users=[
            u
            for u in tenancy.list_users(ctx, org_id)
            if u.active and Rank.of(u.role, is_staff=u.is_staff) <= mine
        ],
        error=error,
        values=values or {"environment": "sandbox", "scope": "agency", "permissions": []},
    )


def _end_of_day(day: str) -> datetime | None:
    if not day:
        return None
    try:
        return datetime.combine(datetime.fromisoformat(day).date(), time(23, 59, 59), UTC)
    except ValueError:
        raise InvalidInput("expiry must be a date like 2026-12-31") from None


@router.post("", dependencies=[CsrfDep])
def generate(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    name: Annotated[str, Form(max_length=200)] = "",
    environment: Annotated[Environment, Form()] = Environment.SANDBOX,
    scope: Annotated[str, Form(max_length=20)] = "agency",
    permissions: Annotated[list[str] | None, Form()] = None,
    owner: Annotated[str, Form(max_length=20)] = "",
    expires_on: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    org_id = current.user.org_id
    assert org_id is not None
    values: dict[str, object] = {
        "name": name,
        "environment": environment.value,
        "scope": scope,
        "permissions": permissions or [],
        "owner": owner,
        "expires_on": expires_on,
    }
    try:
        view, secret = keys.create_key(
            ctx,
            actor,
            Scope(org_id),
            name=name,
            environment=environment,
            location_id=None if scope == "agency" else _int(scope, "scope"),
            owner_id=_int(owner, "owner") if owner else None,
            permissions=permissions or [],
            expires_at=_end_of_day(expires_on),
        )
    except (InvalidInput, AccessDenied) as exc:
        status = 403 if isinstance(exc, AccessDenied) else 400
        return _form(ctx, request, current, error=exc.detail, values=values, status=status)
    sessions.keep_for_reveal(ctx, current, view.ref, secret)
    return see_other(f"{PREFIX}/settings/api/keys/{view.ref}?notice=created")


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"invalid {what}") from None


@router.get("/keys/{ref}")
def detail(
    ctx: CtxDep,
    request: Request,
    ref: str,
    current: AdminDep,
    actor: ActorDep,
    notice: str | None = None,
) -> HTMLResponse:
    return _key_page(ctx, request, current, actor, ref, notice=notice)


def _key_page(
    ctx: Context,
    request: Request,
    current: SignedIn,
    actor: Actor,
    ref: str,
    *,
    notice: str | None = None,
    revoke_error: str | None = None,
    reason: str = "",
    status: int = 200,
) -> HTMLResponse:
    """A key's facts; regenerate and revoke only where the signed-in person may (else why
    not); a refused revocation shows its error and reason on the revoke form. ``notice``
    names one of ``NOTICES``."""
    assert current.user.org_id is not None
    scope = Scope(current.user.org_id)
    view = keys.get_key(ctx, scope, ref)
    locations, users = _names(ctx, current.user.org_id)
    revealed = sessions.take_reveals(ctx, current, client_ip(request), only=view.ref)
    reveal = revealed.get(view.ref)
    if reveal is None and notice in ABOUT_THE_SECRET:
        notice = None
    return render(
        request,
        "api_key.html",
        status_code=status,
        key=view,
        locations=locations,
        users=users,
        reveal=reveal,
        notice=NOTICES.get(notice or ""),
        authority=keys.authority_over(ctx, actor, scope, ref),
        revoke_error=revoke_error,
        reason=reason,
        grace_choices=GRACE_CHOICES,
        usage=usage_chart(
            key_usage.series(
                ctx,
                scope,
                ref,
                start=ctx.clock() - timedelta(hours=23),
                granularity=Granularity.HOUR,
            )
        ),
        now=ctx.clock(),
    )


@router.post("/keys/{ref}/regenerate", dependencies=[CsrfDep])
def regenerate(
    ctx: CtxDep,
    ref: str,
    current: AdminDep,
    actor: ActorDep,
    confirm: Annotated[str, Form(max_length=10)] = "",
    grace_seconds: Annotated[int, Form(ge=0, le=604800)] = 0,
) -> Response:
    if confirm != "yes":
        raise InvalidInput("tick the box to confirm that the current secret stops working")
    assert current.user.org_id is not None
    view, secret = keys.roll_key(
        ctx, actor, Scope(current.user.org_id), ref, grace=timedelta(seconds=grace_seconds)
    )
    sessions.keep_for_reveal(ctx, current, view.ref, secret)
    return see_other(f"{PREFIX}/settings/api/keys/{view.ref}?notice=regenerated")


@router.post("/keys/{ref}/revoke", dependencies=[CsrfDep])
def revoke(
    ctx: CtxDep,
    request: Request,
    ref: str,
    current: AdminDep,
    actor: ActorDep,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    assert current.user.org_id is not None
    try:
        view = keys.revoke_key(ctx, actor, Scope(current.user.org_id), ref, reason=reason)
    except InvalidInput as exc:
        return _key_page(
            ctx, request, current, actor, ref, revoke_error=exc.detail, reason=reason, status=400
        )
    sessions.forget_reveal(ctx, current, view.ref)
    return see_other(f"{PREFIX}/settings/api/keys/{view.ref}?notice=revoked")
