"""A HubSpot fake in a process of its own, so that a memory measurement of the
connector's process counts the connector and not the fake's 100,000 stored records."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection

from tests.fakes.base import serve
from tests.fakes.hubspot import HubSpotFake

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def _serve(channel: Connection, companies: int) -> None:
    fake = HubSpotFake(rate_limit=(10**9, 10.0), search_rate_limit=(10**9, 1.0), daily_limit=10**9)
    fake.add_property("companies", "keyrack_id", unique=True)
    fake.seed(
        "companies",
        ({"name": f"Company {n}", "domain": f"c{n}.example"} for n in range(companies)),
        modified_at=START,
        step=dt.timedelta(milliseconds=1),
    )
    with serve(fake.app) as url:
        channel.send((url, fake.private_app_token()))
        channel.recv()  # until told to stop (or the test process is gone)


@contextmanager
def remote_hubspot(companies: int = 0) -> Iterator[tuple[str, str]]:
    """``(base_url, private-app token)`` of a fake holding ``companies`` companies."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, companies), daemon=True)
    process.start()
    try:
        if not ours.poll(120):
            raise RuntimeError("the HubSpot fake did not start")
        url, token = ours.recv()
        yield url, token
    finally:
        ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
