"""Stripe's list order in front of localstripe, and injected faults.

localstripe lists oldest first and knows no ``ending_before``; Stripe lists newest first
(its documented order) and pages both ways: ``starting_after`` towards older objects,
``ending_before`` towards newer ones, a page always in newest-first order. This ASGI
proxy answers ``GET /v1/customers`` and ``GET /v1/subscriptions`` that way over the
whole of localstripe's list (a test-sized list), so the connector is tested on the
order production sees; everything else is forwarded unchanged. ``fail_next(status)``
answers the next request with a Stripe-shaped error of that status. A list read from
localstripe is kept until a write passes through (``forget()`` after writing around it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import serve

LISTS = ("/v1/customers", "/v1/subscriptions")


@dataclass
class StripeOrder:
    upstream: str
    base_url: str = ""
    faults: list[int] = field(default_factory=list)
    _lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def fail_next(self, status: int = 503) -> None:
        self.faults.append(status)

    def forget(self) -> None:
        self._lists.clear()

    def app(self) -> Starlette:
        methods = ["GET", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        if self.faults:
            status = self.faults.pop(0)
            error = {"message": "An unexpected error occurred.", "type": "api_error"}
            return JSONResponse({"error": error}, status_code=status)
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            if request.method == "GET" and request.url.path in LISTS:
                return await self._list(client, request)
            if request.method != "GET":
                self.forget()
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length")
            }
            upstream = await client.request(
                request.method,
                request.url.path,
                params=request.query_params.multi_items(),
                content=await request.body(),
                headers=headers,
            )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )

    async def _list(self, client: httpx.AsyncClient, request: Request) -> Response:
        query = dict(request.query_params)
        limit = int(query.pop("limit", "10"))
        starting_after = query.pop("starting_after", None)
        ending_before = query.pop("ending_before", None)
        key = f"{request.url.path}?{sorted(query.items())}"
        if key not in self._lists:
            answer = await client.get(
                request.url.path,
                params={**query, "limit": "1000000"},
                headers={"authorization": request.headers.get("authorization", "")},
            )
            if answer.status_code != 200:
                return Response(answer.content, status_code=answer.status_code)
            self._lists[key] = list(reversed(answer.json()["data"]))
        newest_first = self._lists[key]
        ids = [item["id"] for item in newest_first]
        if starting_after is not None:
            start = ids.index(starting_after) + 1
            page = newest_first[start : start + limit]
            has_more = start + limit < len(ids)
        elif ending_before is not None:
            end = ids.index(ending_before)
            page = newest_first[max(0, end - limit) : end]
            has_more = end - limit > 0
        else:
            page = newest_first[:limit]
            has_more = limit < len(ids)
        return JSONResponse(
            {"object": "list", "url": request.url.path, "has_more": has_more, "data": page}
        )


@contextmanager
def stripe_order(upstream: str) -> Iterator[StripeOrder]:
    proxy = StripeOrder(upstream)
    with serve(proxy.app()) as url:
        proxy.base_url = url
        yield proxy
