"""Engagements (``engagements:read`` / ``engagements:write``) logged against the caller's clients."""

from __future__ import annotations

from keyrack.http.routes.client_records import Service, client_records
from keyrack.http.schemas.crm import (
    EngagementCreate,
    EngagementFilters,
    EngagementOut,
    EngagementUpdate,
)
from keyrack.services.crm import engagements

router = client_records(
    "engagement",
    "engagements",
    Service(
        engagements.list_engagements,
        engagements.create_engagement,
        engagements.get_engagement,
        engagements.update_engagement,
        engagements.delete_engagement,
    ),
    create_body=EngagementCreate,
    update_body=EngagementUpdate,
    out=EngagementOut,
    filters=EngagementFilters,
)
