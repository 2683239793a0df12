"""What every console page shares: templates, the signed-in user, CSRF, errors as pages."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from keyrack.domain.limits import throttled_headers
from keyrack.domain.tenancy import Role, UserKind
from keyrack.errors import AccessDenied, InvalidInput, KeyrackError, NotFound, Throttled
from keyrack.logging import redact
from keyrack.problems import STATUS_BY_CODE
from keyrack.routing import client_ip
from keyrack.services import sessions
from keyrack.services.context import Actor, Context
from keyrack.services.sessions import SignedIn

HERE = Path(__file__).resolve().parent
COOKIE = "keyrack_session"
LOGIN_COOKIE = "keyrack_login_csrf"
PREFIX = "/console"
PASSWORD_PAGE = f"{PREFIX}/account"
_WHILE_PASSWORD_MUST_CHANGE = frozenset(
    {PASSWORD_PAGE, f"{PASSWORD_PAGE}/password", f"{PREFIX}/logout"}
)
"""All a person signed in with a password Keyrack issued may reach, until they change it."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = format_time


class Redirect(Exception):
    """Raised by a dependency to send the browser elsewhere (e.g. to sign in)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def context_of(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def render(request: Request, name: str, *, status_code: int = 200, **values: Any) -> HTMLResponse:
    current: SignedIn | None = getattr(request.state, "console_user", None)
    return templates.TemplateResponse(
        request,
        name,
        {"current": current, "nav": navigation(current), "path": request.url.path, **values},
        status_code=status_code,
    )


def navigation(current: SignedIn | None) -> list[tuple[str, str]]:
    """The links a user may follow: members get no Settings, non-staff no Staff pages; with
    an issued password, only the page that changes it."""
    if current is None:
        return []
    if current.user.password_must_change:
        return [("Account", PASSWORD_PAGE)]
    links = [("Home", f"{PREFIX}")]
    if current.user.org_id is not None:
        links.append(("Notifications", f"{PREFIX}/notifications"))
    if manages_settings(current):
        links += [
            ("Settings → API", f"{PREFIX}/settings/api"),
            ("Settings → Team", f"{PREFIX}/settings/team"),
            ("Settings → Integrations", f"{PREFIX}/settings/integrations"),
            ("Settings → Exports", f"{PREFIX}/settings/exports"),
            ("Settings → Imports", f"{PREFIX}/settings/imports"),
            ("Audit log", f"{PREFIX}/audit"),
        ]
    if current.user.is_staff:
        links += [
            ("Staff: organizations", f"{PREFIX}/staff/orgs"),
            ("Staff: key requests", f"{PREFIX}/staff/requests"),
            ("Staff: jobs", f"{PREFIX}/staff/jobs"),
        ]
    links.append(("Account", PASSWORD_PAGE))
    return links


def manages_settings(current: SignedIn) -> bool:
    user = current.user
    return (
        user.org_id is not None
        and user.kind == UserKind.HUMAN.value
        and Role(user.role).manages_settings
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only same-site console paths: never an open redirect."""
    if target and target.startswith(f"{PREFIX}") and not target.startswith("//"):
        return target
    return PREFIX


# --- dependencies -----------------------------------------------------------------


async def get_ctx(request: Request) -> Context:
    return context_of(request)


CtxDep = Annotated[Context, Depends(get_ctx)]


def signed_in(request: Request) -> SignedIn:
    """The session's user; one who signed in with a password Keyrack issued is sent to
    change it from every other page."""
    current = sessions.resolve(context_of(request), request.cookies.get(COOKIE))
    if current is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise Redirect(f"{PREFIX}/login?next={quote(target, safe='')}")
    request.state.console_user = current
    if current.user.password_must_change and request.url.path not in _WHILE_PASSWORD_MUST_CHANGE:
        raise Redirect(PASSWORD_PAGE)
    return current


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


async def settings_admin(current: SignedInDep) -> SignedIn:
    """Owners and admins of an organization; anyone else is told whom to ask (403)."""
    if not manages_settings(current):
        raise AccessDenied(
            "the settings of an organization are for its owners and admins: "
            "ask an owner or admin of your organization"
        )
    return current


AdminDep = Annotated[SignedIn, Depends(settings_admin)]


async def staff_only(current: SignedInDep) -> SignedIn:
    if not current.user.is_staff:
        raise NotFound("page not found")
    return current


StaffDep = Annotated[SignedIn, Depends(staff_only)]


async def actor_of(request: Request, current: SignedInDep) -> Actor:
    return current.actor(client_ip(request))


ActorDep = Annotated[Actor, Depends(actor_of)]


async def check_csrf(current: SignedInDep, csrf_token: Annotated[str, Form()] = "") -> None:
    """Every form post carries the session's CSRF token in a hidden field."""
    if not csrf_token or not hmac.compare_digest(csrf_token.encode(), current.csrf_token.encode()):
        raise AccessDenied("this form has expired or did not come from this site; reload the page")


CsrfDep = Depends(check_csrf)


# --- responses --------------------------------------------------------------------


def error_page(request: Request, exc: KeyrackError) -> HTMLResponse:
    status = STATUS_BY_CODE.get(exc.code, 400)
    response = render(
        request,
        "error.html",
        status_code=status,
        title=exc.title,
        detail=redact(exc.detail),
        status=status,
    )
    if isinstance(exc, Throttled):
        response.headers.update(throttled_headers(exc.retry_after))
    return response


class ConsoleRoute(APIRoute):
    """Turns errors into HTML pages (not problem JSON) and adds security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except Redirect as redirect:
                response = see_other(redirect.url)
            except KeyrackError as exc:
                response = error_page(request, exc)
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ("?",))[-1]) for e in exc.errors())
                response = error_page(request, InvalidInput(f"please check these fields: {fields}"))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded
