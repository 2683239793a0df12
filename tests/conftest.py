"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL.

PostgreSQL and Redis are ``KEYRACK_TEST_DATABASE_URL`` and ``KEYRACK_TEST_REDIS_URL``
when set, else the local servers at their default addresses when they answer (a
connect probe, a fraction of a second when nothing listens); pytest's header says
which backends run and why any is skipped. Without one, its tests are skipped with
that reason; with ``KEYRACK_REQUIRE_BACKENDS=1`` (CI) a missing one is an error. Each
backend is migrated once per session (the real Alembic migrations); each test starts
from empty tables.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
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

LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_SECRET = "test-secret-key-0123456789abcdefghijklmnop"
_PROBE_SECONDS = 0.25


@dataclass(frozen=True)
class Backend:
    """A test backend: its URL when tests run against it, else why they are skipped."""

    name: str
    variable: str
    url: str | None
    reason: str


def _answers(url: str) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port, quickly."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 0), timeout=_PROBE_SECONDS
        ):
            return True
    except OSError:
        return False


def _postgres_works(url: str) -> str | None:
    """None when ``url`` takes a connection, else what went wrong."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return None
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]


def _redis_works(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as error:
        return str(error)
    return None


def _backend(name: str, variable: str, default: str, works: Callable[[str], str | None]) -> Backend:
    if url := os.environ.get(variable):
        return Backend(name, variable, url, f"{variable}")
    if not _answers(default):
        return Backend(
            name, variable, None, f"nothing answers at {default} and {variable} is unset"
        )
    if (problem := works(default)) is not None:
        return Backend(name, variable, None, f"{default} refused ({problem}); set {variable}")
    return Backend(name, variable, default, "the local default address")


POSTGRES = _backend("PostgreSQL", "KEYRACK_TEST_DATABASE_URL", LOCAL_PG_URL, _postgres_works)
REDIS = _backend("Redis", "KEYRACK_TEST_REDIS_URL", LOCAL_REDIS_URL, _redis_works)
PG_URL = POSTGRES.url
REDIS_URL = REDIS.url
PG_SKIP = f"PostgreSQL runs skipped: {POSTGRES.reason}"
REDIS_SKIP = f"Redis runs skipped: {REDIS.reason}"


def pytest_configure(config: pytest.Config) -> None:
    """In CI (KEYRACK_REQUIRE_BACKENDS=1) a missing backend is an error, not a skip."""
    missing = [backend for backend in (POSTGRES, REDIS) if backend.url is None]
    if os.environ.get("KEYRACK_REQUIRE_BACKENDS") and missing:
        raise pytest.UsageError(
            "KEYRACK_REQUIRE_BACKENDS is set, but "
            + "; ".join(f"{backend.name}: {backend.reason}" for backend in missing)
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = ["backends: SQLite (always)"]
    for backend in (POSTGRES, REDIS):
        if backend.url is None:
            lines.append(f"  {backend.name}: skipped, {backend.reason}")
        else:
            lines.append(f"  {backend.name}: {_redacted(backend.url)} ({backend.reason})")
    return lines


def _redacted(url: str) -> str:
    """``url`` without a password, for the header."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def make_settings(database_url: str = "sqlite:///./keyrack.db", **changes: Any) -> Settings:
    """The one Settings builder of the tests: a test environment on ``database_url``, no
    Redis or SMTP unless a test says so, webhooks allowed to reach its loopback receivers."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "environment": "test",
        "redis_url": None,
        "smtp_url": None,
        "webhook_allow_private_targets": True,  # webhook receivers in tests listen on loopback
    }
    return Settings(**(values | changes))


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
        pytest.skip(PG_SKIP)
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
    return make_settings(database_url)


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
