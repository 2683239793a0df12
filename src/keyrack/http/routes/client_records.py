"""The routes of a record kept per client (contacts, contracts, engagements): one shape,
each resource.

``client_records(...)`` builds a resource's router: list (by the resource's ``filters``,
at least its client, ``external_id`` and ``updated_since``), create, get, update and
delete, guarded by ``<plural>:read`` / ``<plural>:write``, with operation ids
``list<Plural>``, ``create<Singular>``, ``get…``, ``update…``, ``delete…``. Annotations
are evaluated here (no ``from __future__ import annotations``), so FastAPI sees each
resource's own filters, body and answer models.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from pydantic import BaseModel

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import RECORD_RESPONSES, ClientRecordFilters
from keyrack.routing import Router


@dataclass(frozen=True)
class Service:
    """A resource's service functions (``keyrack.services.crm.<plural>``)."""

    list: Callable[..., Any]
    create: Callable[..., Any]
    get: Callable[..., Any]
    update: Callable[..., Any]
    delete: Callable[..., Any]


def client_records(
    singular: str,
    plural: str,
    service: Service,
    *,
    create_body: type[BaseModel],
    update_body: type[BaseModel],
    out: Any,
    filters: type[ClientRecordFilters] = ClientRecordFilters,
) -> Router:
    router = Router(prefix=f"/api/v2/{plural}", tags=[plural], responses=RECORD_RESPONSES)
    read = [Depends(require(f"{plural}:read"))]
    write = [Depends(require(f"{plural}:write"))]
    one = f"/{{{singular}_id}}"
    RecordId = Annotated[str, Path(alias=f"{singular}_id")]
    Plural, Singular = plural.capitalize(), singular.capitalize()

    @router.get(
        "",
        dependencies=read,
        response_model=ListPage[out],
        name=f"list_{plural}",
        operation_id=f"list{Plural}",
    )
    def list_records(
        ctx: ContextDep,
        scope: ScopeDep,
        request: Request,
        response: Response,
        narrowed: Annotated[filters, Query()],  # type: ignore[valid-type]
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Any:
        wanted: Any = narrowed  # the resource's own model: mypy cannot follow a variable type
        page = service.list(ctx, scope, limit=limit, cursor=cursor, **wanted.model_dump())
        link_header(request, response, page.next_cursor)
        return ListPage[out](data=[out.of(v) for v in page.data], next_cursor=page.next_cursor)

    @router.post(
        "",
        status_code=201,
        dependencies=write,
        response_model=out,
        name=f"create_{singular}",
        operation_id=f"create{Singular}",
    )
    def create_record(
        ctx: ContextDep,
        scope: ScopeDep,
        actor: ActorDep,
        body: create_body,  # type: ignore[valid-type]
    ) -> Any:
        record: Any = body  # the resource's own model: mypy cannot follow a variable type
        return out.of(service.create(ctx, actor, scope, **record.model_dump()))

    @router.get(
        one,
        dependencies=read,
        response_model=out,
        name=f"get_{singular}",
        operation_id=f"get{Singular}",
    )
    def get_record(ctx: ContextDep, scope: ScopeDep, record_id: RecordId) -> Any:
        return out.of(service.get(ctx, scope, record_id))

    @router.patch(
        one,
        dependencies=write,
        response_model=out,
        name=f"update_{singular}",
        operation_id=f"update{Singular}",
    )
    def update_record(
        ctx: ContextDep,
        scope: ScopeDep,
        actor: ActorDep,
        record_id: RecordId,
        body: update_body,  # type: ignore[valid-type]
    ) -> Any:
        record: Any = body  # the resource's own model: mypy cannot follow a variable type
        changes = record.model_dump(exclude_unset=True)
        return out.of(service.update(ctx, actor, scope, record_id, **changes))

    @router.delete(
        one,
        dependencies=write,
        response_model=out,
        name=f"delete_{singular}",
        operation_id=f"delete{Singular}",
    )
    def delete_record(
        ctx: ContextDep, scope: ScopeDep, actor: ActorDep, record_id: RecordId
    ) -> Any:
        return out.of(service.delete(ctx, actor, scope, record_id))

    return router
