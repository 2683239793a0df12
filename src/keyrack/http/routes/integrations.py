"""Integrations (``integrations:manage``): connections, their credential (write-only),
syncs per record type and direction, change history, runs and their records."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.integrations import (
    ChangeOut,
    CredentialPut,
    InboundOut,
    IntegrationCreate,
    IntegrationOut,
    IntegrationUpdate,
    RunOut,
    RunRecordOut,
    SyncOut,
    SyncPut,
)
from keyrack.routing import Router, public
from keyrack.services.integrations import connections, inbound, runs, syncs

router = Router(
    prefix="/api/v2/integrations",
    tags=["integrations"],
    dependencies=[Depends(require("integrations:manage"))],
)
inbound_router = Router(prefix="/api/v2/integrations", tags=["integrations"])
"""The one public route: a webhook connection's inbound POSTs carry a signature, no key."""
Ref = Annotated[str, Path(min_length=1, max_length=40)]
RecordTypePath = Annotated[str, Path(pattern="^(clients|contacts|contracts|engagements)$")]
DirectionPath = Annotated[str, Path(pattern="^(inbound|outbound)$")]
IN_PROGRESS: dict[int | str, dict[str, Any]] = {
    409: {"description": "A run of this integration is already queued or running (run_id)"}
}


@router.get("", operation_id="listIntegrations")
def list_integrations(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[IntegrationOut]:
    page = connections.list_connections(ctx, scope, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[IntegrationOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201, operation_id="createIntegration")
def create_integration(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: IntegrationCreate
) -> IntegrationOut:
    return IntegrationOut.of(connections.create(ctx, actor, scope, **body.model_dump()))


@router.get("/{integration_id}", operation_id="getIntegration")
def get_integration(ctx: ContextDep, scope: ScopeDep, integration_id: Ref) -> IntegrationOut:
    return IntegrationOut.of(connections.get(ctx, scope, integration_id))


@router.patch("/{integration_id}", operation_id="updateIntegration")
def update_integration(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref, body: IntegrationUpdate
) -> IntegrationOut:
    changes = body.model_dump(exclude_unset=True)
    return IntegrationOut.of(connections.update(ctx, actor, scope, integration_id, **changes))


@router.delete("/{integration_id}", operation_id="deleteIntegration")
def delete_integration(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref
) -> IntegrationOut:
    return IntegrationOut.of(connections.delete(ctx, actor, scope, integration_id))


@router.put("/{integration_id}/credential", operation_id="putIntegrationCredential")
def put_integration_credential(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref, body: CredentialPut
) -> IntegrationOut:
    """Reauthorize: store the credential, probe it at once, and set the status."""
    view = connections.put_credential(ctx, actor, scope, integration_id, body.credential)
    return IntegrationOut.of(view)


@router.get("/{integration_id}/syncs/{record_type}/{direction}", operation_id="getIntegrationSync")
def get_integration_sync(
    ctx: ContextDep,
    scope: ScopeDep,
    integration_id: Ref,
    record_type: RecordTypePath,
    direction: DirectionPath,
) -> SyncOut:
    return SyncOut.of(syncs.get_sync(ctx, scope, integration_id, record_type, direction))


@router.put("/{integration_id}/syncs/{record_type}/{direction}", operation_id="putIntegrationSync")
def put_integration_sync(
    ctx: ContextDep,
    scope: ScopeDep,
    actor: ActorDep,
    integration_id: Ref,
    record_type: RecordTypePath,
    direction: DirectionPath,
    body: SyncPut,
) -> SyncOut:
    """Set the given settings of one sync; the others, and the other direction, stay."""
    changes = body.model_dump(exclude_unset=True)
    view = syncs.put_sync(ctx, actor, scope, integration_id, record_type, direction, **changes)
    return SyncOut.of(view)


@router.get("/{integration_id}/changes", operation_id="listIntegrationChanges")
def list_integration_changes(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    integration_id: Ref,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[ChangeOut]:
    page = connections.list_changes(ctx, scope, integration_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[ChangeOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post(
    "/{integration_id}/runs",
    status_code=202,
    operation_id="createIntegrationRun",
    responses=IN_PROGRESS,
)
def create_integration_run(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref
) -> RunOut:
    return RunOut.of(runs.request_run(ctx, actor, scope, integration_id))


@router.get("/{integration_id}/runs", operation_id="listIntegrationRuns")
def list_integration_runs(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    integration_id: Ref,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[RunOut]:
    page = runs.list_runs(ctx, scope, integration_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[RunOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.get("/{integration_id}/runs/{run_id}", operation_id="getIntegrationRun")
def get_integration_run(
    ctx: ContextDep, scope: ScopeDep, integration_id: Ref, run_id: Ref
) -> RunOut:
    return RunOut.of(runs.get_run(ctx, scope, integration_id, run_id))


@router.get("/{integration_id}/runs/{run_id}/records", operation_id="listIntegrationRunRecords")
def list_integration_run_records(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    integration_id: Ref,
    run_id: Ref,
    outcome: Annotated[str | None, Query(pattern="^(synced|skipped|failed)$")] = None,
    record_type: Annotated[
        str | None, Query(pattern="^(clients|contacts|contracts|engagements)$")
    ] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[RunRecordOut]:
    page = runs.list_records(
        ctx,
        scope,
        integration_id,
        run_id,
        outcome=outcome,
        record_type=record_type,
        q=q,
        limit=limit,
        cursor=cursor,
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[RunRecordOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post(
    "/{integration_id}/runs/{run_id}/retry",
    status_code=202,
    operation_id="retryIntegrationRun",
    responses=IN_PROGRESS,
)
def retry_integration_run(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref, run_id: Ref
) -> RunOut:
    """A new run that retries the failed records of this one, and only them."""
    return RunOut.of(runs.retry_run(ctx, actor, scope, integration_id, run_id))


INBOUND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every record synced or skipped"},
    202: {"description": "Taken, but some records failed: each says why"},
    400: {"description": "The body is not one record or a list of records"},
    401: {"description": "No Keyrack-Signature, or one that does not sign the body"},
    404: {"description": "No webhook connection with this id takes inbound records"},
    413: {"description": "The body is too large"},
}
INBOUND_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "description": "One record {record_type, id, fields, links, external_ids, "
                    "kind, name} or a list of at most 1000",
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
                }
            }
        },
    }
}


@inbound_router.post(
    "/{integration_id}/inbound",
    operation_id="receiveIntegrationInbound",
    responses=INBOUND_RESPONSES,
    openapi_extra=INBOUND_BODY,
)
@public
async def receive_integration_inbound(
    ctx: ContextDep,
    request: Request,
    response: Response,
    integration_id: Ref,
    keyrack_signature: Annotated[str | None, Header(max_length=2000)] = None,
) -> InboundOut:
    """Records POSTed to a ``webhook`` connection, signed with its signing secret (no API
    key): each goes through the record type's inbound sync and is recorded in a run with
    trigger ``inbound``; the answer is that run and every record's outcome."""
    body = await request.body()
    run, records = await run_in_threadpool(
        inbound.receive, ctx, integration_id, body, keyrack_signature
    )
    if run.status != "succeeded":
        response.status_code = 202
    return InboundOut(run=RunOut.of(run), records=[RunRecordOut.of(r) for r in records])
