"""Dependencies declared once as ``Annotated`` aliases, so routes stay short.

They are ``async`` because they only read the request: FastAPI runs a plain ``def``
dependency in a worker thread, a round trip per dependency per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from keyrack.domain.tenancy import Scope
from keyrack.domain.verification import KeyIdentity
from keyrack.errors import AccessDenied, AuthenticationFailed
from keyrack.routing import client_ip
from keyrack.services.context import Actor, Context


async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


async def get_principal(request: Request) -> KeyIdentity:
    """The verified key of this request (set by the gateway before routing)."""
    principal: KeyIdentity | None = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise AuthenticationFailed("an API key is required", code="missing-key")
    return principal


PrincipalDep = Annotated[KeyIdentity, Depends(get_principal)]


async def get_actor(request: Request, principal: PrincipalDep) -> Actor:
    return Actor(
        label=f"key:{principal.ref}",
        user_id=principal.owner_id,
        org_id=principal.org_id,
        ip=client_ip(request),
        is_staff=principal.owner_is_staff,
        key=principal,
    )


ActorDep = Annotated[Actor, Depends(get_actor)]


async def get_scope(principal: PrincipalDep) -> Scope:
    return Scope(principal.org_id, principal.location_id)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def require(permission: str) -> Callable[[KeyIdentity], Awaitable[KeyIdentity]]:
    """A dependency that refuses keys lacking ``permission`` (403 insufficient-permission)."""

    async def check(principal: PrincipalDep) -> KeyIdentity:
        if permission not in principal.permissions:
            raise AccessDenied(
                f"this key lacks the {permission!r} permission", code="insufficient-permission"
            )
        return principal

    return check
