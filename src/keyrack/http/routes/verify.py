"""``POST /api/v2/keys/verify``: other services of the CRM check a key presented to them.

The answer is always 200 with a code (SPEC §6). A valid key's limits are consumed:
one token from its rate, and its concurrency checked at that instant (the in-flight
slot is handed back at once, since the caller's own request is not ours to follow).
Callers see only keys in their own scope (their organization, or their location for a
location key); platform staff keys see every key.
"""

from __future__ import annotations

from fastapi import Depends, Request

from keyrack.cache.keycache import CachedVerifier
from keyrack.domain import permissions as perms
from keyrack.domain.admission import why_refused
from keyrack.domain.limits import policy_for
from keyrack.domain.verification import KeyIdentity, RemoteCode, remote_code
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.schemas.verify import VerifiedKey, VerifyIn, VerifyOut
from keyrack.ratelimit.base import Limiter
from keyrack.routing import Router
from keyrack.services.last_used import LastUsedBuffer

router = Router(prefix="/api/v2/keys", tags=["keys"])


@router.post("/verify", dependencies=[Depends(require("keys:verify"))])
async def verify_key(
    body: VerifyIn, request: Request, ctx: ContextDep, actor: ActorDep, scope: ScopeDep
) -> VerifyOut:
    required = frozenset(perms.normalize(body.permissions))
    verifier: CachedVerifier = request.app.state.verifier
    verdict = await verifier.verify(body.key)
    found: KeyIdentity | None = verdict.key
    if (
        found is not None
        and not actor.is_staff
        and not scope.covers(found.org_id, found.location_id)
    ):
        return VerifyOut(valid=False, code=RemoteCode.NOT_FOUND, key=None)
    code = remote_code(verdict, required)
    shown = VerifiedKey.of(found) if found is not None else None
    if code is not RemoteCode.VALID or found is None:
        why = why_refused(verdict.status, found) if found is not None else None
        return VerifyOut(valid=False, code=code, key=shown, detail=why)
    limiter: Limiter = request.app.state.limiter
    policy = policy_for(found.rate_per_second, found.concurrency)
    admission = await limiter.acquire(found.ref, policy)
    if not admission.allowed:
        return VerifyOut(
            valid=False, code=RemoteCode.RATE_LIMITED, key=shown, retry_after=admission.retry_after
        )
    if admission.lease is not None:
        limiter.release(found.ref, admission.lease)
    last_used: LastUsedBuffer = request.app.state.last_used
    last_used.note(found.key_id, ctx.clock(), None)
    return VerifyOut(valid=True, code=RemoteCode.VALID, key=shown)
