"""Clients (``clients:read`` / ``clients:write``): the CRM's customer accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import (
    RECORD_RESPONSES,
    ClientCreate,
    ClientFilters,
    ClientOut,
    ClientUpdate,
)
from keyrack.routing import Router
from keyrack.services.crm import clients

router = Router(prefix="/api/v2/clients", tags=["clients"], responses=RECORD_RESPONSES)
READ = [Depends(require("clients:read"))]
WRITE = [Depends(require("clients:write"))]


@router.get("", dependencies=READ, operation_id="listClients")
def list_clients(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    narrowed: Annotated[ClientFilters, Query()],
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[ClientOut]:
    page = clients.list_clients(ctx, scope, limit=limit, cursor=cursor, **narrowed.model_dump())
    link_header(request, response, page.next_cursor)
    return ListPage(data=[ClientOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201, dependencies=WRITE, operation_id="createClient")
def create_client(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: ClientCreate
) -> ClientOut:
    return ClientOut.of(clients.create_client(ctx, actor, scope, **body.model_dump()))


@router.get("/{client_id}", dependencies=READ, operation_id="getClient")
def get_client(ctx: ContextDep, scope: ScopeDep, client_id: str) -> ClientOut:
    return ClientOut.of(clients.get_client(ctx, scope, client_id))


@router.patch("/{client_id}", dependencies=WRITE, operation_id="updateClient")
def update_client(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, client_id: str, body: ClientUpdate
) -> ClientOut:
    changes = body.model_dump(exclude_unset=True)
    return ClientOut.of(clients.update_client(ctx, actor, scope, client_id, **changes))


@router.delete("/{client_id}", dependencies=WRITE, operation_id="deleteClient")
def delete_client(ctx: ContextDep, scope: ScopeDep, actor: ActorDep, client_id: str) -> ClientOut:
    """Deletes the client with its contacts, contracts, usage and pulse responses."""
    return ClientOut.of(clients.delete_client(ctx, actor, scope, client_id))
