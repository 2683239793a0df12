"""What the Settings → Integrations tests share: the HubSpot fake on a real socket, a
connection made through the console's form, and running its queued jobs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from keyrack.services import jobs
from keyrack.services.context import Context
from tests.integrations.peers import HubSpotPeer, Stage, hubspot_peer, stage

PAGE = "/console/settings/integrations"
REF = re.compile(r"int_[0-9A-Za-z]{10,}")
RUN = re.compile(r"run_[0-9A-Za-z]{10,}")


@pytest.fixture(scope="session")
def hubspot_stage() -> Iterator[Stage]:
    with stage() as server:
        yield server


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


def drain(ctx: Context) -> None:
    """Perform every queued job (the run the console asked for) in this thread."""
    jobs.worker(ctx).drain()
