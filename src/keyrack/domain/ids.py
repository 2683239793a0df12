"""Public ids: a short type prefix and a ULID (time-sortable, 26 Crockford base32 chars)."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_ref(kind: str) -> str:
    """E.g. ``new_ref("key") == "key_01HX…"``."""
    return f"{kind}_{ulid()}"
