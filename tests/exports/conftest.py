"""Export test seeds: the CRM seeds, with keys that may export, and a worker that runs jobs."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from keyrack.services import jobs
from keyrack.services.context import Context
from tests.crm.conftest import CRM, Crm, seed

EXPORTING = (*CRM, "exports:create", "imports:create")


@pytest.fixture
def crm(ctx: Context) -> Crm:
    return seed(ctx, permissions=EXPORTING)


def drain(ctx: Context) -> None:
    """Run every due job (exports among them) here, once."""
    jobs.worker(ctx).drain()


@pytest.fixture
def export(api: httpx.Client, ctx: Context) -> Callable[..., dict[str, object]]:
    """Start an export, run it, and return the finished job as the API shows it."""

    def run(headers: dict[str, str], **body: object) -> dict[str, object]:
        created = api.post("/api/v2/exports", json=body, headers=headers)
        assert created.status_code == 202, created.text
        drain(ctx)
        shown = api.get(f"/api/v2/exports/{created.json()['id']}", headers=headers)
        assert shown.status_code == 200, shown.text
        result: dict[str, object] = shown.json()
        return result

    return run
