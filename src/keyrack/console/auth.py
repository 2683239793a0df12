"""Sign-in, sign-out and the home page."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    COOKIE,
    HERE,
    LOGIN_COOKIE,
    PASSWORD_PAGE,
    PREFIX,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    SignedInDep,
    manages_settings,
    render,
    safe_next,
    see_other,
)
from keyrack.domain.limits import throttled_headers
from keyrack.errors import AccessDenied, AuthenticationFailed, Throttled
from keyrack.routing import Router, client_ip
from keyrack.services import sessions

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


def _login_page(
    request: Request, next_url: str, *, error: str | None = None, email: str = "", status: int = 200
) -> HTMLResponse:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status,
        login_csrf=token,
        next_url=next_url,
        error=error,
        email=email,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=f"{PREFIX}/login",
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_page(request, safe_next(next))


@router.post("/login")
def login(
    ctx: CtxDep,
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = PREFIX,
) -> Response:
    """Double-submit CSRF check (no session exists yet), then the credentials."""
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise AccessDenied("this form has expired or did not come from this site; reload the page")
    try:
        signed = sessions.sign_in(ctx, email, password, client_ip(request))
    except AuthenticationFailed as exc:
        return _login_page(request, safe_next(next), error=exc.detail, email=email, status=401)
    except Throttled as exc:
        refused = _login_page(request, safe_next(next), error=exc.detail, email=email, status=429)
        refused.headers.update(throttled_headers(exc.retry_after))
        return refused
    assert signed.token is not None
    response = see_other(PASSWORD_PAGE if signed.user.password_must_change else safe_next(next))
    response.set_cookie(
        COOKIE,
        signed.token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
        max_age=int(sessions.SESSION_LIFETIME.total_seconds()),
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post("/logout", dependencies=[CsrfDep])
def logout(ctx: CtxDep, request: Request, current: SignedInDep) -> Response:
    sessions.sign_out(ctx, current, client_ip(request))
    response = see_other(f"{PREFIX}/login")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("")
def home(request: Request, current: SignedInDep) -> Response:
    if manages_settings(current):
        return see_other(f"{PREFIX}/settings/api")
    return render(request, "home.html")


root = Router(include_in_schema=False)
FAVICON = (HERE / "static" / "favicon.svg").read_bytes()


@root.get("/")
def to_console() -> Response:
    return see_other(PREFIX)


@root.get("/favicon.ico")
def favicon() -> Response:
    """What browsers ask every site for (an SVG: Chromium and Firefox take it)."""
    return Response(
        FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )
