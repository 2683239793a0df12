"""Settings → Integrations: connections and their status, reauthorize, syncs per record
type and direction, change history, runs over time, a run's records, retry; the open
issues, test with one record, and diagnose with its support bundle (shown and downloadable).

Thin over ``services.integrations`` (the same calls as ``/api/v2/integrations``), so
every save lands in the connection's change history. A credential typed into a form is
never shown again, not even when the form is refused (it must be typed again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from keyrack.console.charts import RunBar, runs_chart
from keyrack.console.web import (
    PREFIX,
    ActorDep,
    AdminDep,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    format_time,
    render,
    see_other,
)
from keyrack.domain import diagnosis as rules
from keyrack.domain.sync_rules import OPS, TRANSFORMS
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput, NotFound
from keyrack.integrations.connector import Direction
from keyrack.integrations.connectors import CONNECTORS
from keyrack.routing import Router
from keyrack.services.context import Actor, Context
from keyrack.services.integrations import connections, diagnosis, issues, runs, syncs
from keyrack.services.integrations.connections import OAUTH_KEYS, ConnectionView
from keyrack.services.integrations.runs import RunView
from keyrack.services.integrations.syncs import SyncView
from keyrack.services.sessions import SignedIn

PAGE = f"{PREFIX}/settings/integrations"
router = Router(prefix=PAGE, route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
Ref = Annotated[str, Path(min_length=1, max_length=40)]
RecordTypePath = Annotated[str, Path(pattern="^(clients|contacts|contracts|engagements)$")]
DirectionPath = Annotated[str, Path(pattern="^(inbound|outbound)$")]
Secret = Annotated[str, Form(max_length=4000)]
NOTICES = {
    "created": "Connection added.",
    "reauthorized": "New credential stored and checked just now: the status below is its answer.",
    "saved": "Saved. The change is in the history beside.",
    "enabled": "Sync turned on: the schedule takes it up at once.",
    "disabled": "Sync turned off. The other direction is as it was.",
    "queued": "Run queued: it starts in a moment. Reload to follow it.",
    "retried": "A new run retries the failed records only.",
}
PENDING = "no credential yet: reauthorize to connect"


def problem_of(view: ConnectionView, latest: RunView | None) -> str:
    """What is wrong with a connection, in one line ("" when nothing is): its credential,
    else its last error since it last worked, else its newest run's failures (a failed
    run only if it ended after the credential was last checked: a reauthorization since
    answers for it until the next run)."""
    if view.status_reason == connections.PENDING_REASON:
        return PENDING
    if view.status != "active":
        said = view.last_error_message or view.status_reason or view.status
        return f"{view.status}: {said}"
    if view.last_error_at is not None and (
        view.last_success_at is None or view.last_error_at > view.last_success_at
    ):
        return f"last error {format_time(view.last_error_at)}: {view.last_error_message}"
    if (
        latest is not None
        and latest.status == "failed"
        and latest.finished_at is not None
        and (view.last_probed_at is None or latest.finished_at > view.last_probed_at)
    ):
        return f"last run failed: {latest.error or 'see the run'}"
    if latest is not None and latest.status == "partial":
        total = RunBar.of(latest.id, "", latest.status, latest.counts)
        touched = total.synced + total.skipped + total.failed
        return f"last run: {total.failed} of {touched} records failed"
    return ""


@dataclass(frozen=True, slots=True)
class CredentialFields:
    """A form's credential members: an API key, or the OAuth2 ones."""

    api_key: str
    oauth: dict[str, str]

    def credential(self) -> dict[str, Any] | None:
        """An ``{api_key}`` or the OAuth2 members; None if nothing was typed."""
        if self.api_key.strip():
            if any(v.strip() for v in self.oauth.values()):
                raise InvalidInput("give an API key or the OAuth2 fields, not both")
            return {"api_key": self.api_key}
        if not any(v.strip() for v in self.oauth.values()):
            return None
        found: dict[str, Any] = {k: v.strip() for k, v in self.oauth.items() if k != "expires_at"}
        expires = self.oauth.get("expires_at", "").strip()
        try:
            found["expires_at"] = int(expires) if expires else None
        except ValueError:
            raise InvalidInput("expires_at must be epoch seconds") from None
        return found


def credential_fields(
    api_key: Secret = "",
    access_token: Secret = "",
    refresh_token: Secret = "",
    token_url: Annotated[str, Form(max_length=2000)] = "",
    client_id: Secret = "",
    client_secret: Secret = "",
    expires_at: Annotated[str, Form(max_length=20)] = "",
) -> CredentialFields:
    oauth = {
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_url": token_url,
        "client_id": client_id,
        "client_secret": client_secret,
        "expires_at": expires_at,
    }
    return CredentialFields(api_key, oauth)


CredentialDep = Annotated[CredentialFields, Depends(credential_fields)]


def _scope(current: SignedIn) -> Scope:
    assert current.user.org_id is not None
    return Scope(current.user.org_id)


def _list_page(
    ctx: Context,
    request: Request,
    scope: Scope,
    *,
    cursor: str | None = None,
    status: int = 200,
    error: str | None = None,
    typed: dict[str, str] | None = None,
) -> HTMLResponse:
    page = connections.list_connections(ctx, scope, limit=PAGE_SIZE, cursor=cursor)
    latest = runs.latest_runs(ctx, scope, [v.id for v in page.data])
    return render(
        request,
        "integrations.html",
        status_code=status,
        page=page,
        problems={v.id: problem_of(v, latest.get(v.id)) for v in page.data},
        providers=sorted(CONNECTORS),
        oauth_keys=OAUTH_KEYS,
        error=error,
        typed=typed or {"provider": "hubspot"},
    )


@router.get("")
def list_page(
    ctx: CtxDep, request: Request, current: AdminDep, cursor: str | None = None
) -> HTMLResponse:
    return _list_page(ctx, request, _scope(current), cursor=cursor)


@router.post("", dependencies=[CsrfDep])
def add(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    fields: CredentialDep,
    provider: Annotated[str, Form(max_length=32)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    base_url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    scope = _scope(current)
    typed = {
        "provider": provider,
        "name": name,
        "base_url": base_url,
        "token_url": fields.oauth["token_url"],
    }
    try:
        view = connections.create(
            ctx,
            actor,
            scope,
            provider=provider,
            name=name,
            base_url=base_url or None,
            credential=fields.credential(),
        )
    except InvalidInput as exc:
        return _list_page(ctx, request, scope, status=400, error=exc.detail, typed=typed)
    return see_other(f"{PAGE}/{view.id}?notice=created")


def served_syncs(ctx: Context, scope: Scope, view: ConnectionView) -> list[SyncView]:
    """Every record type and direction this provider and the engine both sync."""
    found = []
    for record_type in sorted(syncs.SYNCED_TYPES):
        for direction in Direction:
            try:
                syncs.parse_kind(view.provider, record_type, direction)
            except InvalidInput:
                continue
            found.append(syncs.get_sync(ctx, scope, view.id, record_type, direction))
    return found


def _connection_page(
    ctx: Context,
    request: Request,
    scope: Scope,
    ref: str,
    *,
    runs_cursor: str | None = None,
    changes_cursor: str | None = None,
    notice: str | None = None,
    reauth_error: str | None = None,
    test_error: str | None = None,
    test_typed: dict[str, Any] | None = None,
    diagnose_error: str | None = None,
    diagnose_typed: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    view = connections.get(ctx, scope, ref)
    newest = runs.list_runs(ctx, scope, ref, limit=PAGE_SIZE)  # the chart's, and page 1
    recent = newest.data
    shown = (
        runs.list_runs(ctx, scope, ref, limit=PAGE_SIZE, cursor=runs_cursor)
        if runs_cursor
        else newest
    )
    bars = [
        RunBar.of(r.id, format_time(r.created_at), r.status, r.counts) for r in reversed(recent)
    ]
    return render(
        request,
        "integration.html",
        status_code=status,
        connection=view,
        problem=problem_of(view, recent[0] if recent else None),
        syncs=served_syncs(ctx, scope, view),
        chart=runs_chart(bars, title=f"The last {len(bars)} runs of {view.name}"),
        runs=shown,
        changes=connections.list_changes(ctx, scope, ref, limit=PAGE_SIZE, cursor=changes_cursor),
        totals={r.id: RunBar.of(r.id, "", r.status, r.counts) for r in shown.data},
        oauth_keys=OAUTH_KEYS,
        notice=NOTICES.get(notice or ""),
        reauth_error=reauth_error,
        issues=issues.list_issues(ctx, scope, ref, status="open", limit=PAGE_SIZE).data,
        record_types=sorted(syncs.SYNCED_TYPES),
        test_error=test_error,
        test_typed=test_typed or {"dry_run": True},
        diagnose_error=diagnose_error,
        diagnose_typed=diagnose_typed or {},
    )


@router.get("/{ref}")
def connection_page(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    current: AdminDep,
    runs_cursor: str | None = None,
    changes_cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    return _connection_page(
        ctx,
        request,
        _scope(current),
        ref,
        runs_cursor=runs_cursor,
        changes_cursor=changes_cursor,
        notice=notice,
    )


@router.post("/{ref}/credential", dependencies=[CsrfDep])
def reauthorize(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    current: AdminDep,
    actor: ActorDep,
    fields: CredentialDep,
) -> Response:
    """Store the new credential and probe it at once (``connections.put_credential``)."""
    scope = _scope(current)
    try:
        credential = fields.credential()
        if credential is None:
            raise InvalidInput("type the new API key, or the OAuth2 fields")
        connections.put_credential(ctx, actor, scope, ref, credential)
    except InvalidInput as exc:
        return _connection_page(ctx, request, scope, ref, reauth_error=exc.detail, status=400)
    return see_other(f"{PAGE}/{ref}?notice=reauthorized")


@router.post("/{ref}/runs", dependencies=[CsrfDep])
def run_now(ctx: CtxDep, ref: Ref, current: AdminDep, actor: ActorDep) -> Response:
    run = runs.request_run(ctx, actor, _scope(current), ref)
    return see_other(f"{PAGE}/{ref}/runs/{run.id}?notice=queued")


@router.post("/{ref}/syncs/{record_type}/{direction}/enabled", dependencies=[CsrfDep])
def switch(
    ctx: CtxDep,
    ref: Ref,
    record_type: RecordTypePath,
    direction: DirectionPath,
    current: AdminDep,
    actor: ActorDep,
    enabled: Annotated[str, Form(pattern="^(on|off)$")] = "off",
) -> Response:
    on = enabled == "on"
    syncs.put_sync(ctx, actor, _scope(current), ref, record_type, direction, enabled=on)
    return see_other(f"{PAGE}/{ref}?notice={'enabled' if on else 'disabled'}")


def _sync_page(
    ctx: Context,
    request: Request,
    scope: Scope,
    ref: str,
    record_type: str,
    direction: str,
    *,
    changes_cursor: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    typed: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    sync = syncs.get_sync(ctx, scope, ref, record_type, direction)
    if typed is None:
        typed = {
            "enabled": sync.enabled,
            "schedule_seconds": str(sync.schedule_seconds),
            "filters": _pretty([f.as_dict() for f in sync.filters]),
            "field_mappings": _pretty([m.as_dict() for m in sync.field_mappings]),
        }
    return render(
        request,
        "integration_sync.html",
        status_code=status,
        connection=connections.get(ctx, scope, ref),
        sync=sync,
        changes=connections.list_changes(ctx, scope, ref, limit=PAGE_SIZE, cursor=changes_cursor),
        this_sync=f"sync:{syncs.key(record_type, direction)}",
        ops=OPS,
        transforms=sorted(TRANSFORMS),
        notice=NOTICES.get(notice or ""),
        error=error,
        typed=typed,
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _json_list(text: str, what: str) -> Any:
    if not text.strip():
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON (line {exc.lineno}): {exc.msg}") from None


@router.get("/{ref}/syncs/{record_type}/{direction}")
def sync_page(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    record_type: RecordTypePath,
    direction: DirectionPath,
    current: AdminDep,
    changes_cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    return _sync_page(
        ctx,
        request,
        _scope(current),
        ref,
        record_type,
        direction,
        changes_cursor=changes_cursor,
        notice=notice,
    )


@router.post("/{ref}/syncs/{record_type}/{direction}", dependencies=[CsrfDep])
def save_sync(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    record_type: RecordTypePath,
    direction: DirectionPath,
    current: AdminDep,
    actor: ActorDep,
    enabled: Annotated[str, Form(max_length=3)] = "",
    schedule_seconds: Annotated[str, Form(max_length=12)] = "",
    filters: Annotated[str, Form(max_length=100_000)] = "",
    field_mappings: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    """Save a sync's settings in one ``put_sync``: one change row names what changed."""
    scope = _scope(current)
    typed = {
        "enabled": enabled == "yes",
        "schedule_seconds": schedule_seconds,
        "filters": filters,
        "field_mappings": field_mappings,
    }
    try:
        try:
            seconds = int(schedule_seconds)
        except ValueError:
            raise InvalidInput("schedule_seconds must be a whole number of seconds") from None
        syncs.put_sync(
            ctx,
            actor,
            scope,
            ref,
            record_type,
            direction,
            enabled=enabled == "yes",
            schedule_seconds=seconds,
            filters=_json_list(filters, "filters"),
            field_mappings=_json_list(field_mappings, "field_mappings"),
        )
    except InvalidInput as exc:
        return _sync_page(
            ctx,
            request,
            scope,
            ref,
            record_type,
            direction,
            error=exc.detail,
            typed=typed,
            status=400,
        )
    return see_other(f"{PAGE}/{ref}/syncs/{record_type}/{direction}?notice=saved")


@router.get("/{ref}/runs/{run_ref}")
def run_page(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    run_ref: Ref,
    current: AdminDep,
    outcome: Annotated[str, Query(pattern="^(|synced|skipped|failed)$")] = "",
    record_type: Annotated[str, Query(pattern="^(|clients|contacts|contracts|engagements)$")] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """A run's facts and counts, and its records (50 a page) by outcome, type or search."""
    scope = _scope(current)
    run = runs.get_run(ctx, scope, ref, run_ref)
    if notice in ("queued", "retried") and run.status not in runs.ACTIVE:
        notice = None  # it has run since: its status says the rest
    records = runs.list_records(
        ctx,
        scope,
        ref,
        run_ref,
        outcome=outcome or None,
        record_type=record_type or None,
        q=q.strip() or None,
        limit=PAGE_SIZE,
        cursor=cursor,
    )
    query = urlencode(
        {k: v for k, v in (("outcome", outcome), ("record_type", record_type), ("q", q)) if v}
    )
    return render(
        request,
        "integration_run.html",
        connection=connections.get(ctx, scope, ref),
        run=run,
        total=RunBar.of(run.id, "", run.status, run.counts),
        records=records,
        outcome=outcome,
        record_type=record_type,
        q=q,
        query=query,
        outcomes=runs.OUTCOMES,
        record_types=sorted(syncs.SYNCED_TYPES),
        notice=NOTICES.get(notice or ""),
    )


@router.post("/{ref}/runs/{run_ref}/retry", dependencies=[CsrfDep])
def retry(ctx: CtxDep, ref: Ref, run_ref: Ref, current: AdminDep, actor: ActorDep) -> Response:
    run = runs.retry_run(ctx, actor, _scope(current), ref, run_ref)
    return see_other(f"{PAGE}/{ref}/runs/{run.id}?notice=retried")


RecordTypeForm = Annotated[str, Form(max_length=32)]
DirectionForm = Annotated[str, Form(max_length=16)]


@router.post("/{ref}/test-record", dependencies=[CsrfDep])
def test_one_record(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    current: AdminDep,
    actor: ActorDep,
    record_type: RecordTypeForm = "",
    direction: DirectionForm = "",
    record_id: Annotated[str, Form(max_length=200)] = "",
    dry_run: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    """Every step of the pipeline for one record (``diagnosis.test_record``); a dry run
    unless the box is unticked."""
    scope = _scope(current)
    typed = {
        "record_type": record_type,
        "direction": direction,
        "record_id": record_id,
        "dry_run": dry_run == "yes",
    }
    try:
        if not record_id.strip():
            raise InvalidInput("record_id: give the id of the record to test")
        view = diagnosis.test_record(
            ctx,
            actor,
            scope,
            ref,
            record_type=record_type,
            direction=direction,
            record_id=record_id.strip(),
            dry_run=dry_run == "yes",
        )
    except InvalidInput as exc:
        return _connection_page(
            ctx, request, scope, ref, test_error=exc.detail, test_typed=typed, status=400
        )
    return render(
        request,
        "integration_test.html",
        connection=connections.get(ctx, scope, ref),
        test=view,
        steps=[(s, _pretty(s.data) if s.data else "") for s in view.steps],
    )


def _diagnosis(
    ctx: Context, actor: Actor, scope: Scope, ref: str, record_type: str, direction: str
) -> diagnosis.DiagnosisView:
    return diagnosis.diagnose(
        ctx, actor, scope, ref, record_type=record_type or None, direction=direction or None
    )


@router.post("/{ref}/diagnose", dependencies=[CsrfDep])
def diagnose(
    ctx: CtxDep,
    request: Request,
    ref: Ref,
    current: AdminDep,
    actor: ActorDep,
    record_type: RecordTypeForm = "",
    direction: DirectionForm = "",
) -> Response:
    """The four checks with their verdicts, then the support bundle (JSON and Markdown)."""
    scope = _scope(current)
    typed = {"record_type": record_type, "direction": direction}
    try:
        view = _diagnosis(ctx, actor, scope, ref, record_type, direction)
    except InvalidInput as exc:
        return _connection_page(
            ctx, request, scope, ref, diagnose_error=exc.detail, diagnose_typed=typed, status=400
        )
    query = urlencode({k: v for k, v in typed.items() if v})
    return render(
        request,
        "integration_diagnosis.html",
        connection=connections.get(ctx, scope, ref),
        diagnosis=view,
        checks=[(c, _pretty(c.data) if c.data else "") for c in view.checks],
        bundle_json=_pretty(view.bundle),
        query=f"?{query}" if query else "",
    )


def _attachment(body: str, filename: str, media_type: str) -> Response:
    return PlainTextResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


BundleFormat = Annotated[str, Path(pattern="^(json|md)$")]
RecordTypeQuery = Annotated[str, Query(pattern="^(|clients|contacts|contracts|engagements)$")]
DirectionQuery = Annotated[str, Query(pattern="^(|inbound|outbound)$")]


@router.get("/{ref}/diagnose/bundle.{fmt}")
def diagnosis_bundle(
    ctx: CtxDep,
    ref: Ref,
    fmt: BundleFormat,
    current: AdminDep,
    actor: ActorDep,
    record_type: RecordTypeQuery = "",
    direction: DirectionQuery = "",
) -> Response:
    """The support bundle, diagnosed afresh, as a file to attach to the email to support."""
    view = _diagnosis(ctx, actor, _scope(current), ref, record_type, direction)
    name = f"keyrack-diagnosis-{view.integration_id}"
    if fmt == "json":
        return _attachment(_pretty(view.bundle), f"{name}.json", "application/json")
    return _attachment(view.markdown, f"{name}.md", "text/markdown; charset=utf-8")


@router.get("/{ref}/issues/{issue_ref}/bundle.{fmt}")
def issue_bundle(
    ctx: CtxDep, ref: Ref, issue_ref: Ref, fmt: BundleFormat, current: AdminDep
) -> Response:
    """The bundle taken when the issue opened (scrubbed then, like every bundle)."""
    issue = issues.get_issue(ctx, _scope(current), ref, issue_ref)
    if issue.bundle is None:
        raise NotFound(f"issue {issue.id} has no bundle")
    bundle = issue.bundle
    name = f"keyrack-issue-{issue.id}"
    if fmt == "json":
        return _attachment(_pretty(bundle), f"{name}.json", "application/json")
    return _attachment(rules.markdown(bundle), f"{name}.md", "text/markdown; charset=utf-8")
