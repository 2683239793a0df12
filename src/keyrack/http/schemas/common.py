"""Shapes shared by every resource."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Strict(BaseModel):
    """A request body: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ListPage(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


class ProblemField(BaseModel):
    field: str = Field(description="where the invalid value is, e.g. body.name or query.limit")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error is answered (``application/problem+json``)."""

    type: str = Field(examples=["https://keyrack.dev/problems/not-found"])
    title: str
    status: int
    detail: str
    request_id: str | None = Field(description="quote it to support")
    errors: list[ProblemField] | None = Field(
        default=None, description="for validation-error: each invalid field"
    )
