"""Tenant scope in queries: every filter on what a ``Scope`` covers is ``within_scope``.

``keyrack.domain.tenancy.Scope.covers`` states the rule for one row in memory; this is
the same rule as SQL, so a query can never see past its caller's organization, nor a
location key past its location.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, select
from sqlalchemy.orm import Session

from keyrack.domain.tenancy import Scope
from keyrack.errors import NotFound
from keyrack.storage.tables.tenancy import Location, User


def within_scope(
    scope: Scope,
    org: Any,
    location: Any | None,
    *,
    via: tuple[Any, Any] | None = None,
) -> ColumnElement[bool]:
    """The condition selecting the rows ``scope`` covers: ``org`` (their organization
    column) is the scope's and, for a location scope, their location is its location.

    ``location`` is the rows' location column, or None for rows that never belong to a
    location (a location scope covers none of them). Rows that take their location
    from another row (a contact from its client, a hand-off from its key) name that
    row's location column, and ``via`` = (their reference to it, its id column).
    """
    in_org: ColumnElement[bool] = org == scope.org_id
    if scope.location_id is None:
        return in_org
    if location is None:
        return false()
    in_location: ColumnElement[bool] = location == scope.location_id
    if via is not None:
        reference, target = via
        in_location = reference.in_(select(target).where(in_location))
    return and_(in_org, in_location)


def location_in_scope(session: Session, scope: Scope, wanted: int | None) -> int | None:
    """The location a new row of ``scope`` belongs to: a location scope's own (which
    ``wanted`` may only repeat), or ``wanted`` when it is a location the scope covers
    (None: the agency's own). ``NotFound`` otherwise."""
    if scope.location_id is not None:
        if wanted not in (None, scope.location_id):
            raise NotFound("no such location")
        return scope.location_id
    if wanted is None:
        return None
    location = session.get(Location, wanted)
    if location is None or not scope.covers(location.org_id, location.id):
        raise NotFound("no such location")
    return location.id


def user_in_org(session: Session, scope: Scope, user_id: int | None) -> int | None:
    """``user_id`` when it names a user of the scope's organization (users belong to no
    location), None for None; ``NotFound`` otherwise."""
    if user_id is None:
        return None
    user = session.get(User, user_id)
    if user is None or user.org_id != scope.org_id:
        raise NotFound("no such owner user")
    return user.id
