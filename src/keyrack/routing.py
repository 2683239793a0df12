"""What the HTTP API and the console share to route a request: ``Router``, ``public``
routes, and the client's address.

``Router`` is FastAPI's ``APIRouter``, made to rule out paths outside its prefix first.
``public`` declares a route that takes no API key, so the gateway lets it through;
``takes_key`` is that rule for a path.
``client_ip`` is the caller's address as the gateway determined it.

FastAPI matches an included router by trying each of its routes in turn, with some
bookkeeping per route; a request to the last router of the app paid that for every
route before it (~250 µs for an unknown path). A router with a prefix now answers
"not mine" with one string comparison for any path outside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.routing import Match, Route
from starlette.types import Scope

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_PUBLIC = "_keyrack_public"
API_PREFIX = "/api/v2/"
"""The paths the gateway guards: each wants a key unless its route is public."""


class Router(APIRouter):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.prefix:
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if not path.startswith(self.prefix):
                return Match.NONE, {}
        return super().matches(scope)


def public(endpoint: Endpoint) -> Endpoint:
    """Declare that the route of ``endpoint`` takes no API key, below its route decorator:
    the gateway lets its path through (``public_paths``)."""
    setattr(endpoint, _PUBLIC, True)
    return endpoint


def public_paths(routers: Iterable[APIRouter]) -> frozenset[str]:
    """The paths of the routers' routes declared ``public``; a path parameter must be a
    whole segment (``/api/v2/integrations/{integration_id}/inbound``)."""
    paths = {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, Route) and getattr(route.endpoint, _PUBLIC, False)
    }
    for path in paths:
        for part in path.split("/"):
            if ("{" in part or "}" in part) and not _parameter(part):
                raise ValueError(f"a public route's parameters must be whole segments: {path}")
    return frozenset(paths)


def _parameter(part: str) -> bool:
    return part.startswith("{") and part.endswith("}") and part.count("{") == 1


def _matches(path: str, template: str) -> bool:
    """Whether ``path`` is ``template``, a parameter segment matching any one non-empty
    segment."""
    if "{" not in template:
        return path == template
    parts, wanted = path.split("/"), template.split("/")
    return len(parts) == len(wanted) and all(
        (bool(part) if _parameter(want) else part == want)
        for part, want in zip(parts, wanted, strict=True)
    )


def takes_key(path: str, public_paths: frozenset[str]) -> bool:
    """Whether a request to ``path`` must present an API key to reach its route."""
    if not path.startswith(API_PREFIX) or path in public_paths:
        return False
    return not any(_matches(path, template) for template in public_paths if "{" in template)


def client_ip(request: Request) -> str | None:
    """The caller's address as the gateway determined it (X-Forwarded-For when trusted)."""
    ip: str | None = request.scope.get("state", {}).get("client_ip")
    if ip is None and request.client:
        ip = request.client.host
    return ip
