"""Staff page "Jobs": the queue at a glance, its jobs by state, retry and cancel (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    PREFIX,
    ActorDep,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    StaffDep,
    render,
    see_other,
)
from keyrack.domain.jobs import ACTIVE, FINISHED, State
from keyrack.errors import Conflict
from keyrack.jobs import admin
from keyrack.routing import Router
from keyrack.services import queue
from keyrack.services.context import Context

PAGE = f"{PREFIX}/staff/jobs"

router = Router(prefix=PAGE, route_class=ConsoleRoute, include_in_schema=False)


def _page(
    ctx: Context,
    request: Request,
    state: str,
    cursor: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    shown = admin.parse_state(state)
    return render(
        request,
        "staff_jobs.html",
        status_code=200 if error is None else 409,
        stats=admin.stats(ctx.db, ctx.clock()),
        state=shown,
        states=[*ACTIVE, *FINISHED],
        page=admin.list_jobs(ctx.db, state=shown, cursor=cursor),
        retryable=admin.RETRYABLE,
        cancelable=admin.CANCELABLE,
        error=error,
    )


@router.get("")
def jobs(
    ctx: CtxDep,
    request: Request,
    current: StaffDep,
    state: str = State.FAILED.value,
    cursor: str | None = None,
) -> HTMLResponse:
    """Counts per state, the oldest waiting job, and the jobs of one state (failures first)."""
    return _page(ctx, request, state, cursor)


def _back(state: str) -> str:
    return f"{PAGE}?state={admin.parse_state(state).value}"


@router.post("/{job_id}/retry", dependencies=[CsrfDep])
def retry(
    ctx: CtxDep,
    request: Request,
    job_id: int,
    current: StaffDep,
    actor: ActorDep,
    state: Annotated[str, Form()] = State.FAILED.value,
) -> Response:
    try:
        queue.retry(ctx, actor, job_id)
    except Conflict as exc:
        return _page(ctx, request, state, error=exc.detail)
    return see_other(_back(state))


@router.post("/{job_id}/cancel", dependencies=[CsrfDep])
def cancel(
    ctx: CtxDep,
    request: Request,
    job_id: int,
    current: StaffDep,
    actor: ActorDep,
    state: Annotated[str, Form()] = State.FAILED.value,
) -> Response:
    try:
        queue.cancel(ctx, actor, job_id)
    except Conflict as exc:
        return _page(ctx, request, state, error=exc.detail)
    return see_other(_back(state))
