"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL.

PostgreSQL runs when ``KEYRACK_TEST_DATABASE_URL`` is set (CI sets it); otherwise
those runs are skipped with that reason. Each backend is migrated once per
session (the real Alembic migrations); each test starts from empty tables.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from keyrack.config import Settings
from keyrack.domain import passwords
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Role, Scope
from keyrack.http.protocol import http_protocol
from keyrack.server import create_app
from keyrack.services import keys, tenancy
from keyrack.services.context import Actor, Context
from keyrack.services.keys import KeyView
from keyrack.storage.database import Database, normalize_url
from keyrack.storage.migrate import upgrade
from keyrack.storage.tables import Base
from tests.live import serve_in_thread

# Still argon2id, at a cost that lets hundreds of test users be created quickly.
passwords.use_parameters(time_cost=1, memory_cost_kib=1024)

PG_URL = os.environ.get("KEYRACK_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("KEYRACK_TEST_REDIS_URL")
TEST_SECRET = "test-secret-key-0123456789abcdefghijklmnop"


def pytest_configure(config: pytest.Config) -> None:
    """In CI (KEYRACK_REQUIRE_BACKENDS=1) a missing backend is an error, not a skip."""
    if os.environ.get("KEYRACK_REQUIRE_BACKENDS") and not (PG_URL and REDIS_URL):
        raise pytest.UsageError(
            "KEYRACK_REQUIRE_BACKENDS is set: KEYRACK_TEST_DATABASE_URL and "
            "KEYRACK_TEST_REDIS_URL must both be set"
        )


class MutableClock:
    """An injectable clock that moves only when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "keyrack.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("KEYRACK_TEST_DATABASE_URL not set: PostgreSQL runs skipped")
    schema = f"kr_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    upgrade(url)
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        target = tmp_path / "keyrack.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("_postgres_schema")
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:  # DELETE is ~100x faster than TRUNCATE on small tables
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()
    return url


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        environment="test",
        redis_url=None,
        smtp_url=None,
        webhook_allow_private_targets=True,  # webhook receivers in tests listen on loopback
    )


@pytest.fixture
def ctx(settings: Settings, clock: MutableClock) -> Iterator[Context]:
    context = Context(settings=settings, db=Database(settings.database_url), clock=clock)
    yield context
    context.db.dispose()


@dataclass
class Seeded:
    """An organization with a location, an admin, and a key holding ``permissions``."""

    ctx: Context
    org_id: int
    org_slug: str
    location_id: int
    admin_id: int
    key: KeyView
    secret: str

    @property
    def scope(self) -> Scope:
        return Scope(self.org_id)

    def headers(self, secret: str | None = None) -> dict[str, str]:
        return {"X-API-Key": secret or self.secret}

    def new_key(self, **kwargs: object) -> tuple[KeyView, str]:
        kwargs.setdefault("name", "Another key")
        return keys.create_key(self.ctx, OPERATOR, self.scope, **kwargs)  # type: ignore[arg-type]


OPERATOR = Actor(label="test-operator", is_staff=True)


def seed_org(
    ctx: Context,
    slug: str = "acme",
    *,
    permissions: tuple[str, ...] = ("keys:manage",),
    environment: Environment = Environment.SANDBOX,
) -> Seeded:
    org = tenancy.create_org(ctx, OPERATOR, name=slug.title(), slug=slug)
    location = tenancy.create_location(ctx, OPERATOR, org_slug=slug, name="Main", slug="main")
    admin = tenancy.create_user(
        ctx, OPERATOR, org_slug=slug, email=f"admin@{slug}.test", role=Role.ADMIN
    ).user
    view, secret = keys.create_key(
        ctx,
        OPERATOR,
        Scope(org.id),
        name="Seed key",
        environment=environment,
        permissions=permissions,
    )
    return Seeded(ctx, org.id, slug, location.id, admin.id, view, secret)


@pytest.fixture
def seeded(ctx: Context) -> Seeded:
    return seed_org(ctx)


@pytest.fixture
def live_url(ctx: Context) -> Iterator[str]:
    """The real app served by uvicorn on a loopback socket, with ``keyrack serve``'s limits."""
    with serve_in_thread(create_app(ctx=ctx), http=http_protocol(ctx.settings)) as url:
        yield url


@pytest.fixture
def api(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=10) as client:
        yield client
