"""One-time hand-offs of a key's secret: what they are for, and where each stands."""

from __future__ import annotations

import enum


class HandoffPurpose(enum.StrEnum):
    CLAIM = "claim"
    """An approved production key's secret, for the customer's admins to open once."""
    LINK = "link"
    """A secret an admin passes to a vendor behind a one-time link."""


class HandoffStatus(enum.StrEnum):
    PENDING = "pending"
    """Sealed and not expired: it can be opened, once."""
    OPENED = "opened"
    EXPIRED = "expired"
    """Past its expiry (or its key gone) before anyone opened it: the secret is erased."""
