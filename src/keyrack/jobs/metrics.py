"""Prometheus metrics of the queue, on the default registry (every worker of a process adds up).

Labels stay low-cardinality: a state, a job kind, whether the failure was the last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from keyrack.domain.jobs import State

QUEUE_DEPTH = Gauge("keyrack_jobs", "Jobs in the queue, by state.", ("state",))
PICKUP_LATENCY = Histogram(
    "keyrack_job_pickup_latency_seconds",
    "From a job being due to a worker starting it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
FAILURES = Counter(
    "keyrack_job_failures",
    "Failed job attempts, by kind; final is true when the job ended failed.",
    ("kind", "final"),
)

COLLECTORS = (QUEUE_DEPTH, PICKUP_LATENCY, FAILURES)
"""Every series of the queue (the server's ``/metrics`` serves them with its own)."""


def record_depth(counts: Mapping[str, int], states: Iterable[State] = tuple(State)) -> None:
    """Set the depth of ``states`` from ``counts`` (zero for a state with no job)."""
    for state in states:
        QUEUE_DEPTH.labels(state.value).set(counts.get(state.value, 0))
