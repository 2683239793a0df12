"""Your account: change your password (every other session of yours ends); the one page
of someone who signed in with a password Keyrack issued."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    COOKIE,
    PREFIX,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    SignedInDep,
    render,
)
from keyrack.errors import AuthenticationFailed, InvalidInput
from keyrack.routing import Router, client_ip
from keyrack.services import sessions

router = Router(prefix=f"{PREFIX}/account", route_class=ConsoleRoute, include_in_schema=False)
Password = Annotated[str, Form(max_length=1024)]


@router.get("")
def account(request: Request, current: SignedInDep) -> HTMLResponse:
    return render(request, "account.html")


@router.post("/password", dependencies=[CsrfDep])
def change_password(
    ctx: CtxDep,
    request: Request,
    current: SignedInDep,
    current_password: Password = "",
    new_password: Password = "",
    confirm_password: Password = "",
) -> HTMLResponse:
    """Passwords are never sent back into the form, so an error leaves it empty."""
    try:
        if new_password != confirm_password:
            raise InvalidInput("the new password and its confirmation differ")
        sessions.change_password(ctx, current, current_password, new_password, client_ip(request))
    except (AuthenticationFailed, InvalidInput) as exc:
        return render(request, "account.html", status_code=400, error=exc.detail)
    request.state.console_user = sessions.resolve(ctx, request.cookies.get(COOKIE))
    return render(request, "account.html", changed=True)
