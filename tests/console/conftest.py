"""Console fixtures: an organization with people of every role, and a signed-in browser-like client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from keyrack.domain.tenancy import Role
from keyrack.services import tenancy
from keyrack.services.context import Context
from tests.conftest import OPERATOR

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class People:
    org_id: int
    org_slug: str
    location_id: int
    owner_id: int
    member_id: int
    owner: str = "owner@acme.test"
    admin: str = "admin@acme.test"
    member: str = "member@acme.test"
    staff: str = "staff@keyrack.test"


def seed_people(ctx: Context, slug: str = "acme") -> People:
    org = tenancy.create_org(ctx, OPERATOR, name=slug.title(), slug=slug)
    location = tenancy.create_location(ctx, OPERATOR, org_slug=slug, name="Main St", slug="main")
    ids = {}
    for role in Role:
        ids[role] = tenancy.create_user(
            ctx,
            OPERATOR,
            org_slug=slug,
            email=f"{role.value}@{slug}.test",
            role=role,
            name=f"{role.value.title()} Person",
            password=PASSWORD,
        ).user.id
    tenancy.create_user(
        ctx, OPERATOR, org_slug=None, email="staff@keyrack.test", staff=True, password=PASSWORD
    )
    return People(org.id, slug, location.id, ids[Role.OWNER], ids[Role.MEMBER])


@pytest.fixture
def people(ctx: Context) -> People:
    return seed_people(ctx)


class Browser:
    """An httpx client that behaves like a browser on the console: cookies, forms, CSRF."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.csrf = ""

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        response = self.client.get(url, **kwargs)  # type: ignore[arg-type]
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, url: str, data: dict[str, object], *, csrf: bool = True) -> httpx.Response:
        form = {**data, "csrf_token": self.csrf} if csrf else data
        response = self.client.post(url, data=form)  # type: ignore[arg-type]
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/console/login")
        response = self.post("/console/login", {"email": email, "password": password})
        if response.status_code == 303:
            self.get("/console", follow_redirects=True)
        return response


@pytest.fixture
def browser(live_url: str) -> Iterator[Browser]:
    with httpx.Client(base_url=live_url, timeout=10) as client:
        yield Browser(client)
