"""Prometheus metrics, one registry per app, served at ``GET /metrics``.

Labels are low-cardinality on purpose: no path, no key, no organization. The job
queue's series (``keyrack.jobs.metrics``, shared by every worker of the process)
are served beside the app's own.
"""

from __future__ import annotations

import contextlib
import hmac

from anyio import to_thread
from fastapi import Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.responses import Response

from keyrack.domain.jobs import ACTIVE
from keyrack.errors import AuthenticationFailed, KeyrackError
from keyrack.jobs import metrics as job_metrics
from keyrack.jobs import queue
from keyrack.routing import Router
from keyrack.storage.database import Database

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "keyrack_http_requests",
            "HTTP requests served, by method and status.",
            ("method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "keyrack_http_request_duration_seconds",
            "Time from request start to the end of the response body.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "keyrack_auth_failures",
            "API requests refused before routing, by problem code.",
            ("code",),
            registry=self.registry,
        )
        self.throttled = Counter(
            "keyrack_throttled_requests",
            "API requests refused by the limiter, by problem code.",
            ("code",),
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "keyrack_key_cache_misses",
            "Verifications that had to read the database.",
            registry=self.registry,
        )
        self.db_statements = Counter(
            "keyrack_db_statements",
            "SQL statements this process sent to the database (requests, flushes, jobs).",
            registry=self.registry,
        )
        for collector in job_metrics.COLLECTORS:
            self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = Router(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    token = request.app.state.ctx.settings.metrics_token
    if token:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            raise AuthenticationFailed(
                "send the metrics token as a Bearer token", code="unauthenticated"
            )
    await to_thread.run_sync(_count_jobs, request.app.state.ctx.db)
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


def _count_jobs(db: Database) -> None:
    """The queue's depth as of this scrape, whichever process runs the workers."""
    with contextlib.suppress(KeyrackError):  # unreachable: the other series still count
        job_metrics.record_depth(queue.counts(db, ACTIVE), ACTIVE)
