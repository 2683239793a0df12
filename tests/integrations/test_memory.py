"""A sync's memory stays flat: 100,000 HubSpot companies streamed through
``changed_since``, and 100,000 written through ``upsert`` in batches, with the fake in a
process of its own so that only the connector's allocations are traced.

The bound: a search page is 200 records, a few hundred bytes each on the wire and
about 2 KB each parsed (a dict of properties and the record around it), so a page costs
under 1 MB while it is handled; a write batch is 100 records with their outcomes and
per-record exchanges (each keeps its record's part of the request and answer, under
1 KB). Anything that kept records across pages or batches would grow with the count
(100,000 records ≈ 200 MB), so 8 MB for everything at once is a bound that separates
"per page" from "per run" by two orders of magnitude. Flat is also checked directly:
ten times the records may cost at most ``SLACK`` more at the peak.

httpx and httpcore leave every request in a reference cycle (the pool request, its
stream, the response), its body with it, until Python's cycle collector runs, and when
it runs depends on the size of the whole heap, not on the connector. So the work runs
with a collection every ``COLLECT_EVERY`` records: what is traced is what the connector
keeps reachable (a leak would still show) plus at most that many records' garbage.
Without it the peak measured about 1.7 MB instead of 0.8 MB for the writes.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from itertools import islice

import httpx
import pytest

from keyrack.integrations.connector import OutboundRecord, RecordType, WriteResult
from keyrack.integrations.connectors.hubspot import HubSpotConnector
from tests.integrations.remote_hubspot import remote_hubspot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # ~30 s each on an idle machine

COUNT = 100_000
BOUND = 8 * 1024 * 1024
SLACK = 1024 * 1024
COLLECT_EVERY = 5_000


def peak_of(work: Callable[[], object]) -> tuple[int, object]:
    """Bytes allocated at the peak of ``work`` beyond what was held before it."""
    gc.collect()
    tracemalloc.start()
    held = tracemalloc.get_traced_memory()[0]
    try:
        result = work()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - held, result


def test_streaming_100000_companies_holds_memory_flat(record_property) -> None:
    with remote_hubspot(COUNT) as (url, token), httpx.Client(timeout=30) as http:
        connector = HubSpotConnector(credential={"api_key": token}, http=http, base_url=url)

        def records(limit: int) -> int:
            count = 0
            for _ in islice(connector.changed_since(RecordType.CLIENTS, None), limit):
                count += 1
                if count % COLLECT_EVERY == 0:
                    gc.collect()
            return count

        small, ten_thousand = peak_of(lambda: records(10_000))
        large, everything = peak_of(lambda: records(COUNT))
    assert (ten_thousand, everything) == (10_000, COUNT)
    record_property("peak_bytes_10k", small)
    record_property("peak_bytes_100k", large)
    print(f"changed_since peak: 10k {small / 1e6:.2f} MB, 100k {large / 1e6:.2f} MB")  # noqa: T201
    assert large < BOUND
    assert large < small + SLACK  # flat: ten times the records, not the memory


def test_upserting_100000_companies_in_batches_holds_memory_flat(record_property) -> None:
    with remote_hubspot() as (url, token), httpx.Client(timeout=30) as http:
        connector = HubSpotConnector(credential={"api_key": token}, http=http, base_url=url)

        def write(count: int, offset: int) -> int:
            created = 0
            for start in range(offset, offset + count, connector.batch_size):
                batch = [
                    OutboundRecord(f"cli_{n:06d}", {"name": f"Client {n}", "annualrevenue": n})
                    for n in range(start, start + connector.batch_size)
                ]
                created += sum(
                    o.result is WriteResult.CREATED
                    for o in connector.upsert(RecordType.CLIENTS, batch)
                )
                if (start + connector.batch_size) % COLLECT_EVERY == 0:
                    gc.collect()
            return created

        small, first = peak_of(lambda: write(10_000, 0))
        large, rest = peak_of(lambda: write(COUNT - 10_000, 10_000))
        calls = connector.stats.api_calls
    assert (first, rest) == (10_000, COUNT - 10_000)
    assert calls == 2 * COUNT // 100  # per batch of 100: the read-back and the upsert
    record_property("peak_bytes_10k", small)
    record_property("peak_bytes_90k", large)
    print(f"upsert peak: 10k {small / 1e6:.2f} MB, 90k more {large / 1e6:.2f} MB")  # noqa: T201
    assert large < BOUND
    assert large < small + SLACK
