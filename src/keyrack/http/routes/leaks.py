"""``POST /api/v2/leaks``: anyone may report found tokens; no API key needed.

Accepts ``{"tokens": [{token, url, source}]}`` and the secret-scanning partner
format (a JSON array of ``{token, type, url, source}``). Every well-formed key is
handed to ``services.leaks.revoke_leaked``. The answer is the same 202 whatever the
tokens were, so the endpoint is no validity oracle; and a valid token reported here
is revoked anyway. Throttled per client IP.

Not done yet: checking the partner's ECDSA signature header when scanner public
keys are configured.
"""

from __future__ import annotations

import functools
from collections.abc import Container
from typing import Annotated

from anyio import to_thread
from fastapi import Body, Request
from pydantic import Field

from keyrack.domain.keys import digest, is_well_formed
from keyrack.domain.limits import RateLimitPolicy
from keyrack.errors import Throttled
from keyrack.http.deps import ContextDep
from keyrack.http.schemas.leaks import MAX_TOKENS, FoundToken, LeakReceipt, LeakReport
from keyrack.ratelimit.base import Limiter
from keyrack.routing import Router, client_ip, public
from keyrack.services import leaks

router = Router(tags=["leaks"])

POLICY = RateLimitPolicy(rate_per_second=2, concurrency=4)


@router.post(
    "/api/v2/leaks",
    status_code=202,
    responses={429: {"description": "Too many reports from this address: retry after Retry-After"}},
)
@public
async def report_leaks(
    ctx: ContextDep,
    request: Request,
    body: Annotated[
        LeakReport | Annotated[list[FoundToken], Field(min_length=1, max_length=MAX_TOKENS)],
        Body(),
    ],
) -> LeakReceipt:
    found = body.tokens if isinstance(body, LeakReport) else body
    limiter: Limiter = request.app.state.limiter
    bucket = f"leaks:{client_ip(request) or 'unknown'}"
    admission = await limiter.acquire(bucket, POLICY)
    if not admission.allowed:
        raise Throttled(
            "too many leak reports from this address; retry later",
            code=admission.decision.value,
            retry_after=admission.retry_after,
        )
    imported: Container[str] = request.app.state.imported
    try:
        for item in found:
            if is_well_formed(item.token) or (imported and digest(item.token) in imported):
                await to_thread.run_sync(
                    functools.partial(
                        leaks.revoke_leaked, ctx, item.token, item.where, imported=imported
                    )
                )
    finally:
        if admission.lease is not None:
            limiter.release(bucket, admission.lease)
    return LeakReceipt(received=len(found))
