"""Sync diagnostics (``integrations:manage``): test with one record, diagnose (the four
checks and the support bundle), and the connection's issues."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Response

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.diagnosis import (
    DiagnoseIn,
    DiagnosisOut,
    IssueOut,
    TestRecordIn,
    TestRecordOut,
)
from keyrack.routing import Router
from keyrack.services.integrations import diagnosis, issues

router = Router(
    prefix="/api/v2/integrations",
    tags=["integrations"],
    dependencies=[Depends(require("integrations:manage"))],
)
Ref = Annotated[str, Path(min_length=1, max_length=40)]


@router.post("/{integration_id}/test-record", operation_id="testIntegrationRecord")
def test_integration_record(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, integration_id: Ref, body: TestRecordIn
) -> TestRecordOut:
    """Run the sync's pipeline for one record and answer every step; a dry run (the
    default) stops before the write."""
    view = diagnosis.test_record(ctx, actor, scope, integration_id, **body.model_dump())
    return TestRecordOut.model_validate(view.as_dict())


@router.post("/{integration_id}/diagnose", operation_id="diagnoseIntegration")
def diagnose_integration(
    ctx: ContextDep,
    scope: ScopeDep,
    actor: ActorDep,
    integration_id: Ref,
    body: DiagnoseIn | None = None,
) -> DiagnosisOut:
    """The four checks in order, a verdict each, and the support bundle (JSON and Markdown)."""
    asked = body or DiagnoseIn()
    view = diagnosis.diagnose(ctx, actor, scope, integration_id, **asked.model_dump())
    return DiagnosisOut.model_validate(view.as_dict())


@router.get("/{integration_id}/issues", operation_id="listIntegrationIssues")
def list_integration_issues(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    integration_id: Ref,
    status: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[IssueOut]:
    page = issues.list_issues(ctx, scope, integration_id, status=status, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(
        data=[IssueOut.model_validate(v) for v in page.data], next_cursor=page.next_cursor
    )
