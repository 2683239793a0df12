"""CRM test seeds: an organization with an agency key and a location key, both unthrottled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from keyrack.domain.permissions import PERMISSIONS
from keyrack.services.context import Context
from tests.conftest import Seeded, seed_org

CRM = tuple(
    p
    for p in PERMISSIONS
    if p.split(":")[0] in {"clients", "contacts", "contracts", "engagements", "usage", "pulse"}
)
Headers = dict[str, str]


@dataclass
class Crm:
    """``agency`` sees the whole organization; ``located`` only ``org.location_id``."""

    org: Seeded
    agency: Headers
    located: Headers

    def key(self, *permissions: str, location_id: int | None = None) -> Headers:
        _, secret = self.org.new_key(
            permissions=permissions,
            location_id=location_id,
            rate_per_second=10_000,
            concurrency=100,
        )
        return {"X-API-Key": secret}


def seed(ctx: Context, slug: str = "acme", permissions: tuple[str, ...] = CRM) -> Crm:
    org = seed_org(ctx, slug)
    crm = Crm(org, {}, {})
    crm.agency = crm.key(*permissions)
    crm.located = crm.key(*permissions, location_id=org.location_id)
    return crm


@pytest.fixture
def crm(ctx: Context) -> Crm:
    return seed(ctx)


def later(changed: dict[str, Any], original: dict[str, Any]) -> bool:
    """Whether ``changed`` was updated after ``original`` (by their ``updated_at``)."""
    return datetime.fromisoformat(changed["updated_at"]) > datetime.fromisoformat(
        original["updated_at"]
    )
