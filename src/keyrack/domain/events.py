"""What other parts react to after a service's commit: a key's verdict, or an
organization's keys, may have changed (``keyrack.services.events`` publishes them;
the key cache and the relay across instances consume them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """A key's verdict may have changed: drop cached identities for these digests."""

    key_id: int
    digests: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrgChanged:
    """An organization's API switch or allow-lists changed: drop all its cached keys."""

    org_id: int


Event = KeyChanged | OrgChanged
