"""Fixtures for the connector contract: every contract test runs against every provider's
peer (``peer``), or every peer Keyrack writes to (``writable``). HubSpot and Salesforce
fakes are fresh for each test on a server shared by the process (``peers.Stage``);
localstripe and the proxies in front of it are shared too, and emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest

from tests.fakes.stripe import StripeAuthGate
from tests.integrations.peers import (
    PROVIDERS,
    WRITABLE,
    Peer,
    Stage,
    WritablePeer,
    hubspot_peer,
    salesforce_peer,
    stage,
    stripe_peer,
    stripe_servers,
)
from tests.integrations.stripe_order import StripeOrder


@pytest.fixture(scope="session")
def stripe_proxies() -> Iterator[tuple[StripeOrder, StripeAuthGate]]:
    with stripe_servers() as servers:
        yield servers


@pytest.fixture(scope="session")
def hubspot_stage() -> Iterator[Stage]:
    with stage() as server:
        yield server


@pytest.fixture(scope="session")
def salesforce_stage() -> Iterator[Stage]:
    with stage(tls=True) as server:
        yield server


def open_peer(name: str, request: pytest.FixtureRequest) -> AbstractContextManager[Peer]:
    if name == "stripe":
        return stripe_peer(request.getfixturevalue("stripe_proxies"))
    if name == "hubspot":
        return hubspot_peer(request.getfixturevalue("hubspot_stage"))
    return salesforce_peer(request.getfixturevalue("salesforce_stage"))


@pytest.fixture(params=PROVIDERS)
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    with open_peer(request.param, request) as found:
        yield found


@pytest.fixture(params=WRITABLE)
def writable(request: pytest.FixtureRequest) -> Iterator[WritablePeer]:
    with open_peer(request.param, request) as found:
        assert isinstance(found, WritablePeer)
        yield found
