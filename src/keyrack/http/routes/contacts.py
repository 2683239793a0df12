"""Contacts (``contacts:read`` / ``contacts:write``) of the caller's clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import link_header
from keyrack.http.router import Router
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import PROBLEM_RESPONSES, ContactCreate, ContactOut, ContactUpdate
from keyrack.services.crm import contacts

router = Router(prefix="/api/v2/contacts", tags=["contacts"], responses=PROBLEM_RESPONSES)
READ = [Depends(require("contacts:read"))]
WRITE = [Depends(require("contacts:write"))]


@router.get("", dependencies=READ)
def list_contacts(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    client_id: Annotated[str | None, Query(max_length=40, description="only this client's")] = None,
) -> ListPage[ContactOut]:
    page = contacts.list_contacts(ctx, scope, client_ref=client_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[ContactOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201, dependencies=WRITE)
def create_contact(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: ContactCreate
) -> ContactOut:
    fields = body.model_dump(exclude={"client_id"})
    return ContactOut.of(
        contacts.create_contact(ctx, actor, scope, client_ref=body.client_id, **fields)
    )


@router.get("/{contact_id}", dependencies=READ)
def get_contact(ctx: ContextDep, scope: ScopeDep, contact_id: str) -> ContactOut:
    return ContactOut.of(contacts.get_contact(ctx, scope, contact_id))


@router.patch("/{contact_id}", dependencies=WRITE)
def update_contact(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, contact_id: str, body: ContactUpdate
) -> ContactOut:
    changes = body.model_dump(exclude_unset=True)
    return ContactOut.of(contacts.update_contact(ctx, actor, scope, contact_id, **changes))


@router.delete("/{contact_id}", dependencies=WRITE)
def delete_contact(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, contact_id: str
) -> ContactOut:
    return ContactOut.of(contacts.delete_contact(ctx, actor, scope, contact_id))
