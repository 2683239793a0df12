"""Routers rule out paths outside their prefix before FastAPI's per-route matching;
the request-reading dependencies run on the event loop, not in worker threads."""

from __future__ import annotations

import inspect

import pytest
from starlette.routing import Match

from keyrack.console import web
from keyrack.http import deps
from keyrack.routing import Router, public, public_paths, takes_key


def scope(path: str, root_path: str = "") -> dict[str, object]:
    return {"type": "http", "method": "GET", "path": path, "root_path": root_path}


def test_a_path_outside_the_prefix_is_ruled_out() -> None:  # inside: every API test
    router = Router(prefix="/api/v2/clients")

    @router.get("/{client_id}")
    async def one(client_id: int) -> dict[str, int]:
        return {"id": client_id}

    assert router.matches(scope("/api/v2/contacts/1")) == (Match.NONE, {})
    assert router.matches(scope("/apps/api/v2/contacts/1", root_path="/apps"))[0] is Match.NONE


@pytest.mark.parametrize(
    "dependency",
    [
        deps.get_context,
        deps.get_principal,
        deps.get_actor,
        deps.get_scope,
        deps.require("clients:read"),
        web.get_ctx,
        web.settings_admin,
        web.staff_only,
        web.actor_of,
        web.check_csrf,
    ],
)
def test_dependencies_that_only_read_the_request_are_async(dependency: object) -> None:
    assert inspect.iscoroutinefunction(dependency)


def test_the_routes_declared_public_are_the_public_paths() -> None:
    router = Router(prefix="/api/v2")

    @router.post("/reports")
    @public
    async def report() -> None: ...

    @router.get("/things")
    async def things() -> None: ...

    assert public_paths([router]) == {"/api/v2/reports"}

    @router.get("/things/{thing_id}/look")
    @public
    async def thing(thing_id: int) -> None: ...

    found = public_paths([router])
    assert found == {"/api/v2/reports", "/api/v2/things/{thing_id}/look"}
    assert not takes_key("/api/v2/things/th_1/look", found)
    assert not takes_key("/api/v2/reports", found)
    for keyed in ("/api/v2/things", "/api/v2/things//look", "/api/v2/things/a/b/look"):
        assert takes_key(keyed, found), keyed

    @router.get("/parts/x{part_id}")
    @public
    async def part(part_id: int) -> None: ...

    with pytest.raises(ValueError, match="whole segments"):
        public_paths([router])
