"""Throttling policy values, and the headers of a throttled answer.

A key may make ``rate_per_second`` requests per second with at most
``concurrency`` in flight. Headers follow draft-ietf-httpapi-ratelimit-headers:
``RateLimit-Policy: "key";q=5;w=1, "inflight";q=1`` and ``RateLimit: "key";r=4;t=1``
(or ``"inflight";r=0;t=1`` when no in-flight slot is free). A 429, from
the gateway, a route or the console's sign-in, gets its headers from
``throttled_headers``: ``Retry-After`` in whole seconds rounded up (a client that
waits that long finds the token there), and the RateLimit pair when a limiter
decided it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    rate_per_second: int = 5
    concurrency: int = 1

    def __post_init__(self) -> None:
        if self.rate_per_second < 1 or self.concurrency < 1:
            raise ValueError("rate_per_second and concurrency must be at least 1")

    @property
    def policy_header(self) -> str:
        return f'"key";q={self.rate_per_second};w=1, "inflight";q={self.concurrency}'


@lru_cache(maxsize=4096)
def policy_for(rate_per_second: int, concurrency: int) -> RateLimitPolicy:
    """The policy of a key with these limits: one shared instance per pair, so the
    limiters' per-bucket memos tell a policy unchanged by identity."""
    return RateLimitPolicy(rate_per_second, concurrency)


class Decision(enum.StrEnum):
    ALLOWED = "allowed"
    RATE_LIMITED = "rate-limited"
    CONCURRENCY_LIMITED = "concurrency-limited"


class Admission(NamedTuple):
    """A limiter's answer: whether to admit, what remains, and when to retry.

    A tuple, not a frozen dataclass: one is built per request, and a frozen
    dataclass pays an ``object.__setattr__`` per field to be built.
    """

    decision: Decision
    remaining: int
    reset_seconds: float
    policy: RateLimitPolicy
    lease: str | None = None
    """Id of the in-flight slot taken on admission; hand it back to ``release``."""

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOWED

    @property
    def retry_after(self) -> int:
        """Whole seconds for the ``Retry-After`` header (at least 1)."""
        return whole_seconds(self.reset_seconds)

    @property
    def header(self) -> str:
        """The ``RateLimit`` value: the quota that decided, as it stands. Refused for the
        in-flight limit, that is ``"inflight"`` with no slot left, whatever tokens the
        rate bucket still has."""
        reset = max(0, math.ceil(self.reset_seconds))
        if self.decision is Decision.CONCURRENCY_LIMITED:
            return f'"inflight";r=0;t={reset}'
        return f'"key";r={max(0, self.remaining)};t={reset}'


def whole_seconds(seconds: float) -> int:
    """A wait as ``Retry-After`` says it: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def throttled_headers(retry_after: float, admission: Admission | None = None) -> dict[str, str]:
    """The headers of a 429 that asks to wait ``retry_after`` seconds; with the limiter's
    ``admission``, also the policy and state of its bucket."""
    headers = {"Retry-After": str(whole_seconds(retry_after))}
    if admission is not None:
        headers["RateLimit-Policy"] = admission.policy.policy_header
        headers["RateLimit"] = admission.header
    return headers
