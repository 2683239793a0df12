"""Liveness, readiness, and credential validation."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from keyrack.http.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable"}})
def readyz(ctx: ContextDep) -> JSONResponse:
    if ctx.db.ping():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
