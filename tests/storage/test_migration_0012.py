"""Migration 0012 (engagements, external ids, the change clock) over a database holding CRM
records, on SQLite and PostgreSQL: the records keep their ``updated_at``, list by change,
take external ids and engagements, and no stamp given afterwards sorts before theirs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from keyrack.domain.crm import EngagementKind
from keyrack.domain.tenancy import Scope
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, contacts, engagements
from keyrack.storage.database import Database, normalize_url
from keyrack.storage.migrate import alembic_config
from keyrack.storage.tables.base import UTCDateTime
from tests.conftest import PG_SKIP, PG_URL, MutableClock, make_settings

BEFORE = "0007_usage_scope"
ACTOR = Actor(label="test")
CREATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOUCHED = datetime(2031, 6, 1, 8, 30, 15, 123456, tzinfo=UTC)  # ahead of the clock below
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, migrated by nothing yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keyrack.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    schema = f"kr_mig_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _table(
    name: str, *columns: str, moments: tuple[str, ...] = (), json: str | None = None
) -> sa.TableClause:
    typed = [sa.column(m, UTCDateTime()) for m in moments]
    if json is not None:
        typed.append(sa.column(json, sa.JSON()))
    return sa.table(name, *(sa.column(c) for c in columns), *typed)


def _seed_before(url: str) -> int:
    """An organization with a client, a contact and a contract, written as 0007 knew them."""
    engine = sa.create_engine(normalize_url(url))
    stamps = ("created_at", "updated_at")
    with engine.begin() as conn:
        org_id = conn.execute(
            sa.insert(
                _table(
                    "organizations",
                    "slug",
                    "name",
                    "kind",
                    "api_enabled",
                    "plan",
                    "plan_rate_per_second",
                    "plan_concurrency",
                    moments=("created_at",),
                    json="allowed_origins",
                )
            )
            .values(
                slug="acme",
                name="Acme",
                kind="customer",
                api_enabled=True,
                plan="standard",
                plan_rate_per_second=5,
                plan_concurrency=1,
                allowed_origins=[],
                created_at=CREATED,
            )
            .returning(sa.column("id"))
        ).scalar_one()
        client_table = _table(
            "crm_clients",
            "ref",
            "org_id",
            "name",
            "status",
            "arr_cents",
            moments=stamps,
            json="custom_fields",
        )
        client_id = conn.execute(
            sa.insert(client_table)
            .values(
                ref="cli_01HX3Z8Q9R6T0V2W4Y6A8C0E2G",
                org_id=org_id,
                name="Globex",
                status="active",
                arr_cents=0,
                custom_fields={},
                created_at=CREATED,
                updated_at=TOUCHED,
            )
            .returning(sa.column("id"))
        ).scalar_one()
        conn.execute(
            sa.insert(_table("crm_contacts", "ref", "org_id", "client_id", "name", moments=stamps)),
            [
                {
                    "ref": "con_01HX3Z8Q9R6T0V2W4Y6A8C0E2G",
                    "org_id": org_id,
                    "client_id": client_id,
                    "name": "Hank",
                    "created_at": CREATED,
                    "updated_at": CREATED,
                }
            ],
        )
        conn.execute(
            sa.insert(
                _table(
                    "crm_contracts",
                    "ref",
                    "org_id",
                    "client_id",
                    "name",
                    "amount_cents",
                    "currency",
                    "start_date",
                    moments=stamps,
                )
            ),
            [
                {
                    "ref": "ctr_01HX3Z8Q9R6T0V2W4Y6A8C0E2G",
                    "org_id": org_id,
                    "client_id": client_id,
                    "name": "Plan",
                    "amount_cents": 100,
                    "currency": "USD",
                    "start_date": date(2025, 3, 1),
                    "created_at": CREATED,
                    "updated_at": CREATED,
                }
            ],
        )
    engine.dispose()
    return int(org_id)


def test_upgrading_a_database_with_records_keeps_them_and_their_order_of_change(
    blank_url: str,
) -> None:
    config = alembic_config(blank_url)
    command.upgrade(config, BEFORE)
    org_id = _seed_before(blank_url)
    command.upgrade(config, "heads")

    settings = make_settings(blank_url)
    ctx = Context(settings=settings, db=Database(settings.database_url), clock=MutableClock(NOW))
    scope = Scope(org_id)
    try:
        (client,) = clients.list_clients(ctx, scope, updated_since=CREATED).data
        assert (client.created_at, client.updated_at) == (CREATED, TOUCHED)
        assert client.external_ids == {}
        listed = contacts.list_contacts(ctx, scope, updated_since=CREATED).data
        assert [c.updated_at for c in listed] == [CREATED]

        # the clock started at the latest updated_at, though the wall clock is behind it
        hank = contacts.update_contact(
            ctx, ACTOR, scope, listed[0].ref, external_ids={"hubspot": "51"}
        )
        assert hank.external_ids == {"hubspot": "51"} and hank.updated_at > TOUCHED
        call = engagements.create_engagement(
            ctx, ACTOR, scope, client_ref=client.ref, contact_ref=hank.ref, kind=EngagementKind.CALL
        )
        assert call.updated_at > hank.updated_at
        changed = contacts.list_contacts(ctx, scope, updated_since=TOUCHED).data
        assert [c.ref for c in changed] == [hank.ref]
    finally:
        ctx.db.dispose()

    command.downgrade(config, BEFORE)
    engine = sa.create_engine(normalize_url(blank_url))
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert not tables & {"crm_engagements", "crm_external_ids", "crm_change_clocks"}
        assert {"jobs", "console_sessions"} <= tables  # the other branches stay as they were
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM crm_contacts")).scalars().all()
        assert names == ["Hank"]
    finally:
        engine.dispose()
