"""Production-key requests: a customer asks, platform staff decide.

A request waits (``pending``) until staff approve it (a production key is issued and
its secret sealed as a claim for the customer's admins) or reject it with a reason.
"""

from __future__ import annotations

import enum


class RequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
