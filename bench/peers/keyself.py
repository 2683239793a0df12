"""What the peers answer: a body shaped as Keyrack's ``GET /api/v2/keys/self`` (~570 bytes).

The peers run under uvicorn in their own venv (``bench/peers/setup.sh``), with the key
``bench/gateway.py`` sends in ``PEER_API_KEY``.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

SECRET = os.environ.get("PEER_API_KEY", "")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_self(
    *,
    ref: str,
    name: str,
    last4: str,
    org_id: int,
    org_slug: str,
    org_name: str,
    rate_per_second: int,
    concurrency: int,
    created_at: datetime,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "ref": ref,
        "name": name,
        "masked": f"kr_test_••••••••{last4}",
        "last4": last4,
        "environment": "sandbox",
        "status": "active",
        "scope": {
            "organization": {"id": org_id, "slug": org_slug, "name": org_name},
            "location_id": None,
        },
        "owner_id": None,
        "permissions": [],
        "rate_limit": {"rate_per_second": rate_per_second, "concurrency": concurrency},
        "allowed_cidrs": [],
        "created_at": created_at.isoformat(),
        "created_by": "bench",
        "expires_at": None,
        "inactivity_days": 90,
        "last_used_at": now.isoformat(),
        "last_used_ip": "127.0.0.1",
        "inactivity_deadline": (now + timedelta(days=90)).isoformat(),
    }


def sample() -> dict[str, Any]:
    """The body of the one key the bench uses."""
    return key_self(
        ref="key_01M8S6K7PC1ERTKT9PPEZ88C9C",
        name="Bench key",
        last4=SECRET[-4:],
        org_id=1,
        org_slug="bench",
        org_name="Bench",
        rate_per_second=100_000,
        concurrency=10_000,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
