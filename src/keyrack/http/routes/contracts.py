"""Contracts (``contracts:read`` / ``contracts:write``) of the caller's clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import link_header
from keyrack.http.router import Router
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import PROBLEM_RESPONSES, ContractCreate, ContractOut, ContractUpdate
from keyrack.services.crm import contracts

router = Router(prefix="/api/v2/contracts", tags=["contracts"], responses=PROBLEM_RESPONSES)
READ = [Depends(require("contracts:read"))]
WRITE = [Depends(require("contracts:write"))]


@router.get("", dependencies=READ)
def list_contracts(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    client_id: Annotated[str | None, Query(max_length=40, description="only this client's")] = None,
) -> ListPage[ContractOut]:
    page = contracts.list_contracts(ctx, scope, client_ref=client_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[ContractOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201, dependencies=WRITE)
def create_contract(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: ContractCreate
) -> ContractOut:
    fields = body.model_dump(exclude={"client_id"})
    return ContractOut.of(
        contracts.create_contract(ctx, actor, scope, client_ref=body.client_id, **fields)
    )


@router.get("/{contract_id}", dependencies=READ)
def get_contract(ctx: ContextDep, scope: ScopeDep, contract_id: str) -> ContractOut:
    return ContractOut.of(contracts.get_contract(ctx, scope, contract_id))


@router.patch("/{contract_id}", dependencies=WRITE)
def update_contract(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, contract_id: str, body: ContractUpdate
) -> ContractOut:
    changes = body.model_dump(exclude_unset=True)
    return ContractOut.of(contracts.update_contract(ctx, actor, scope, contract_id, **changes))


@router.delete("/{contract_id}", dependencies=WRITE)
def delete_contract(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, contract_id: str
) -> ContractOut:
    return ContractOut.of(contracts.delete_contract(ctx, actor, scope, contract_id))
