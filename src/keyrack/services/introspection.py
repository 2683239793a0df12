"""What introspection shows of a verified key (``keys/self`` and ``health`` in the API)."""

from __future__ import annotations

from dataclasses import dataclass

from keyrack.domain.tenancy import Scope
from keyrack.domain.verification import KeyIdentity
from keyrack.services import keys, tenancy
from keyrack.services.context import Context
from keyrack.services.keys import KeyView


@dataclass(frozen=True, slots=True)
class SelfView:
    """A verified key: its identity (effective limits, organization), its view (creation,
    last use, deadlines), and its organization's name."""

    identity: KeyIdentity
    key: KeyView
    organization: str


def load_self(ctx: Context, identity: KeyIdentity) -> SelfView:
    """Read what the cached identity lacks (creation, last use, org name): two queries."""
    view = keys.get_key(ctx, Scope(identity.org_id), identity.ref)
    organization = tenancy.get_org_by_id(ctx, identity.org_id).name
    return SelfView(identity, view, organization)
