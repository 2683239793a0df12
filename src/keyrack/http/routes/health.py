"""Liveness, readiness, and credential validation."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from keyrack.errors import Unavailable
from keyrack.http.deps import ContextDep
from keyrack.routing import Router

router = Router(tags=["health"])


class Liveness(BaseModel):
    status: str


_ALIVE = b'{"status":"ok"}'


@router.get("/healthz", response_model=Liveness)
async def get_liveness(request: Request) -> Response:
    """Liveness: answers as long as the process serves requests."""
    return Response(_ALIVE, media_type="application/json")


@router.get("/readyz", responses={503: {"description": "database unreachable"}})
def get_readiness(ctx: ContextDep) -> JSONResponse:
    if not ctx.db.ping():
        raise Unavailable("the database is unreachable")
    return JSONResponse({"status": "ok"})
