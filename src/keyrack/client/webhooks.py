"""Verify Keyrack webhook deliveries in your receiver.

    from keyrack.client.webhooks import SIGNATURE_HEADER, verify_signature

    ok = verify_signature(secret, raw_body, request.headers[SIGNATURE_HEADER], now=int(time.time()))

Pass the raw request body (bytes, before JSON parsing). Deliveries older than
five minutes are refused, so a captured request cannot be replayed.
"""

from keyrack.domain.webhooks import (
    DEFAULT_TOLERANCE,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
)
from keyrack.domain.webhooks import sign as sign_payload
from keyrack.domain.webhooks import verify as verify_signature

__all__ = [
    "DEFAULT_TOLERANCE",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "sign_payload",
    "verify_signature",
]
