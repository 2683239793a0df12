"""One scope rule: ``Scope.covers`` in memory and ``within_scope`` in SQL agree on every row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, ForeignKey, Integer, MetaData, Table, create_engine, select

from keyrack.domain.tenancy import Scope
from keyrack.storage.scoping import within_scope

metadata = MetaData()
parents = Table(
    "parents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, nullable=False),
    Column("location_id", Integer),
)
children = Table(
    "children",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org_id", Integer, nullable=False),
    Column("parent_id", Integer, ForeignKey("parents.id"), nullable=False),
)
# organization 1 has locations 10 and 11, organization 2 has location 20
PLACES = [(1, None), (1, 10), (1, 11), (2, None), (2, 20)]
SCOPES = [Scope(1), Scope(1, 10), Scope(1, 11), Scope(2), Scope(2, 20)]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        for n, (org, location) in enumerate(PLACES, start=1):
            conn.execute(parents.insert().values(id=n, org_id=org, location_id=location))
            conn.execute(children.insert().values(id=n, org_id=org, parent_id=n))
    yield engine
    engine.dispose()


def test_a_scope_covers_its_organization_or_only_its_location() -> None:
    assert Scope(1).covers(1, None) and Scope(1).covers(1, 10)
    assert Scope(1, 10).covers(1, 10)
    assert not Scope(1, 10).covers(1, None)  # the agency's own is not the location's
    assert not Scope(1, 10).covers(1, 11)
    assert not Scope(1).covers(2, None) and not Scope(1, 10).covers(2, 10)


@pytest.mark.parametrize("scope", SCOPES, ids=str)
def test_the_query_filter_selects_exactly_the_rows_the_scope_covers(
    engine: Engine, scope: Scope
) -> None:
    covered = {n for n, place in enumerate(PLACES, start=1) if scope.covers(*place)}
    direct = select(parents.c.id).where(
        within_scope(scope, parents.c.org_id, parents.c.location_id)
    )
    through_parent = select(children.c.id).where(
        within_scope(
            scope,
            children.c.org_id,
            parents.c.location_id,
            via=(children.c.parent_id, parents.c.id),
        )
    )
    agency_only = select(parents.c.id).where(within_scope(scope, parents.c.org_id, None))
    with engine.connect() as conn:
        assert set(conn.scalars(direct)) == covered
        assert set(conn.scalars(through_parent)) == covered
        assert set(conn.scalars(agency_only)) == {
            n for n, (org, _) in enumerate(PLACES, start=1) if scope.covers(org, None)
        }
