"""The gateway: authenticates every ``/api/v2`` request before routing.

A pure ASGI middleware (not a FastAPI dependency) so the hot path stays short.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from keyrack.domain.verification import KeyIdentity, Verdict
from keyrack.errors import KeyrackError
from keyrack.http.auth import KeyParser, principal_from
from keyrack.http.problems import problem

API_PREFIX = "/api/v2/"
PUBLIC_PATHS = frozenset({"/api/v2/openapi.json", "/api/v2/leaks"})

Verify = Callable[[str], Verdict]


class Gateway:
    def __init__(self, app: ASGIApp, verify: Verify) -> None:
        self.app = app
        self.verify = verify
        self.parser = KeyParser()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX) or path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            principal = await self._authenticate(scope)
        except KeyrackError as exc:
            response = problem(exc.code, exc.detail, request_id=state.get("request_id"))
            await response(scope, receive, send)
            return
        state["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> KeyIdentity:
        headers = Headers(scope=scope)
        if self.parser.from_query(QueryParams(scope.get("query_string", b""))):
            raise KeyrackError("API keys must not be sent in the URL", code="key-in-url")
        presented = self.parser.from_headers(headers)
        if presented is None:
            raise KeyrackError(
                "send your API key in the X-API-Key or Authorization header", code="missing-key"
            )
        verdict = await to_thread.run_sync(self.verify, presented)
        return principal_from(verdict)
