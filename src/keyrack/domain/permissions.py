"""The permission vocabulary (SPEC §6) and checks."""

from __future__ import annotations

from collections.abc import Iterable

from keyrack.errors import InvalidInput

PERMISSIONS: tuple[str, ...] = (
    "clients:read",
    "clients:write",
    "contacts:read",
    "contacts:write",
    "contracts:read",
    "contracts:write",
    "engagements:read",
    "engagements:write",
    "exports:create",
    "imports:create",
    "integrations:manage",
    "keys:manage",
    "keys:verify",
    "pulse:read",
    "pulse:write",
    "usage:read",
    "usage:write",
)
_KNOWN = frozenset(PERMISSIONS)


def normalize(permissions: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated permissions; unknown names are refused."""
    wanted = {p.strip() for p in permissions if p.strip()}
    unknown = sorted(wanted - _KNOWN)
    if unknown:
        raise InvalidInput(
            f"unknown permission(s): {', '.join(unknown)}; known: {', '.join(PERMISSIONS)}"
        )
    return tuple(sorted(wanted))
