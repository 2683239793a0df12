"""``POST /api/v2/keys/import`` (``keys:manage``): keys of another system, by digest."""

from __future__ import annotations

from fastapi import Depends, Request

from keyrack.cache.imported import ImportedDigests
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.schemas.key_import import KeyImport, KeyImportOut, KeyImportResult
from keyrack.routing import Router
from keyrack.services import key_import
from keyrack.services.key_import import KeyToImport, Outcome

router = Router(
    prefix="/api/v2/keys", tags=["keys"], dependencies=[Depends(require("keys:manage"))]
)


@router.post("/import")
def import_keys(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: KeyImport, request: Request
) -> KeyImportOut:
    """Bring up to 1,000 keys over by the SHA-256 of their secret; idempotent by digest.

    Each key has its own outcome; a refused key (its error says why) never stops the
    others. An imported key authenticates like any other, on every instance.
    """
    items = [KeyToImport(**item.model_dump()) for item in body.keys]
    results = key_import.import_keys(ctx, actor, scope, items)
    imported: ImportedDigests = request.app.state.imported
    imported.add(r.digest for r in results if r.outcome is Outcome.CREATED)  # here: at once
    counts = {outcome: 0 for outcome in Outcome}
    for result in results:
        counts[result.outcome] += 1
    return KeyImportOut(
        created=counts[Outcome.CREATED],
        unchanged=counts[Outcome.UNCHANGED],
        refused=counts[Outcome.REFUSED],
        results=[KeyImportResult.model_validate(r, from_attributes=True) for r in results],
    )
