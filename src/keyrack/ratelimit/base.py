"""The limiter contract shared by every throttling backend.

``acquire`` admits a request only if the bucket has both a rate token and a free
in-flight slot, and then takes one of each:

* Rate: a token bucket holding at most ``rate_per_second`` tokens, refilled at
  ``rate_per_second`` tokens per second, so over any ``T`` seconds at most
  ``rate * T + rate`` requests are admitted. A bucket is full again at most one
  second after its last admission, which lets backends forget idle buckets.
* Concurrency: at most ``policy.concurrency`` leases outstanding per bucket. A lease
  not released within ``lease_seconds`` counts as dead (its holder crashed) and
  frees its slot.

Concurrency is checked first. A refusal consumes nothing: a CONCURRENCY_LIMITED
attempt burns no token and a RATE_LIMITED attempt takes no slot.

``Admission.remaining`` is the whole tokens left after the decision.
``Admission.reset_seconds`` is, when admitted, the time until the bucket is full
again; when RATE_LIMITED, the time until the next token; when CONCURRENCY_LIMITED,
``CONCURRENCY_RETRY_SECONDS`` (always enough for a token to have refilled, since the
refill period is at most one second).

Both backends count in integers: time in microseconds and tokens in millionths
(``MICRO`` per token), so a bucket gains exactly ``rate`` millionths per microsecond
and no float rounding can ever admit an extra request.
"""

from __future__ import annotations

from typing import Protocol

from keyrack.domain.limits import Admission, RateLimitPolicy

MICRO = 1_000_000
"""Microseconds per second, and millionth-tokens per token."""

CONCURRENCY_RETRY_SECONDS = 1.0

DEFAULT_LEASE_SECONDS = 30.0


class Limiter(Protocol):
    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        """Take a token and an in-flight slot from ``bucket``, or refuse and take nothing."""

    def release(self, bucket: str, lease: str) -> None:
        """Give back an in-flight slot without blocking the caller.

        Must be called on the event loop that serves requests. Releasing an unknown,
        expired or already released lease does nothing.
        """

    async def aclose(self) -> None:
        """Finish outstanding background work (pending releases)."""
