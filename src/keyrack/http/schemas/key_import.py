"""Bodies of ``POST /api/v2/keys/import``."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from keyrack.domain.keys import Environment
from keyrack.http.schemas.common import Strict
from keyrack.services.key_import import MAX_IMPORT, Outcome


class KeyImportItem(Strict):
    digest: str = Field(
        pattern="^[0-9a-fA-F]{64}$",
        description="SHA-256 (hex) of the exact secret, as your system hands it out",
    )
    name: str = Field(min_length=1, max_length=200)
    last4: str = Field(min_length=1, max_length=4, description="The secret's last characters")
    environment: Environment = Environment.SANDBOX
    location_id: int | None = None
    owner_id: int | None = None
    permissions: list[str] = Field(default_factory=list, max_length=50)
    rate_per_second: int | None = Field(default=None, ge=1, le=100_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    allowed_cidrs: list[str] = Field(default_factory=list, max_length=100)
    created_at: AwareDatetime | None = Field(default=None, description="default: now")
    last_used_at: AwareDatetime | None = Field(
        default=None, description="its last use in your system: where its inactivity clock starts"
    )
    expires_at: AwareDatetime | None = None
    inactivity_days: int = Field(default=90, ge=1, le=3650)


class KeyImport(Strict):
    keys: list[KeyImportItem] = Field(min_length=1, max_length=MAX_IMPORT)


class KeyImportResult(BaseModel):
    index: int = Field(description="The key's position in the request")
    digest: str
    outcome: Outcome = Field(
        description="created; unchanged (already a key here: importing again is harmless);"
        " refused (see error)"
    )
    ref: str | None = Field(description="The key's ref, when created or unchanged")
    error: str | None = None


class KeyImportOut(BaseModel):
    created: int
    unchanged: int
    refused: int
    results: list[KeyImportResult]
