"""The ``Link: <…>; rel="next"`` header for cursor-paged lists."""

from __future__ import annotations

from fastapi import Request, Response


def link_header(request: Request, response: Response, next_cursor: str | None) -> None:
    if next_cursor:
        url = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
