"""Leak report bodies: Keyrack's own shape and the secret-scanning partner format."""

from __future__ import annotations

from pydantic import BaseModel, Field

from keyrack.http.schemas.common import Strict

MAX_TOKENS = 1000


class FoundToken(BaseModel):
    """One token found somewhere public. Unknown fields (partner extensions) are ignored."""

    token: str = Field(min_length=1, max_length=500)
    type: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=2000)
    source: str | None = Field(default=None, max_length=200)

    @property
    def where(self) -> str:
        parts = [p for p in (self.url, f"({self.source})" if self.source else None) if p]
        return " ".join(parts) or "reported without a location"


class LeakReport(Strict):
    tokens: list[FoundToken] = Field(min_length=1, max_length=MAX_TOKENS)


class LeakReceipt(BaseModel):
    received: int = Field(description="Tokens received; says nothing about their validity")
