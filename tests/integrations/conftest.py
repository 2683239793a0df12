"""Fixtures for the connector contract: every contract test runs against every provider's
peer (``peer``), every peer Keyrack writes to (``writable``), or those of them taking
OAuth2 (``oauth``). HubSpot and Salesforce
fakes are fresh for each test on a server shared by the process (``peers.Stage``);
localstripe and the proxies in front of it are shared too, and emptied before each test;
the far Keyrack is a real one, started for each test on a copy of the migrated SQLite
template (``tests.integrations.far_keyrack``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.fakes.stripe import StripeAuthGate
from tests.integrations.far_keyrack import far_keyrack, sqlite_copy
from tests.integrations.peers import (
    OAUTH,
    PROVIDERS,
    WRITABLE,
    Peer,
    Stage,
    WritablePeer,
    hubspot_peer,
    keyrack_peer,
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


@contextmanager
def _keyrack_peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    template: Path = request.getfixturevalue("_sqlite_template")
    folder: Path = request.getfixturevalue("tmp_path")
    with far_keyrack(sqlite_copy(template, folder)) as far, keyrack_peer(far) as found:
        yield found


def open_peer(name: str, request: pytest.FixtureRequest) -> AbstractContextManager[Peer]:
    if name == "keyrack":
        return _keyrack_peer(request)
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


@pytest.fixture(params=OAUTH)
def oauth(request: pytest.FixtureRequest) -> Iterator[WritablePeer]:
    with open_peer(request.param, request) as found:
        assert isinstance(found, WritablePeer) and found.oauth
        yield found
