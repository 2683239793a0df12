"""``Client``: a paced, retrying, typed wrapper over ``httpx.Client``."""

from __future__ import annotations

import enum
import json as jsonlib
from collections.abc import Callable, Generator, Mapping
from datetime import date, datetime
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from keyrack.client._errors import KeyrackError, TransportError, error_for
from keyrack.client._pacing import Pacer, policy_rate, retry_after_seconds
from keyrack.client._resources import Exports, Keys, Pulse, Records, Usage
from keyrack.domain.keys import PREFIX_LENGTH, looks_like_key, mask

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
MAX_RETRY_AFTER = 60.0
"""A 429 asking for a longer wait than this is raised at once instead of slept through."""

EventHook = Callable[..., Any]


def masked(api_key: str) -> str:
    """The key as it may be shown: ``kr_live_••••••••abcd`` (no tail for short junk)."""
    prefix = api_key[:PREFIX_LENGTH] if looks_like_key(api_key) else ""
    return mask(prefix, api_key[-4:] if len(api_key) >= 16 else "")


class _KeyAuth(httpx.Auth):
    """Puts the key in the ``X-API-Key`` header of each request, and nowhere else."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"<KeyAuth {masked(self._api_key)}>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._api_key in str(request.url):
            raise KeyrackError("refusing to send the API key in a URL")
        request.headers["X-API-Key"] = self._api_key
        yield request


def _plain(value: Any) -> Any:
    """JSON and query-string form of the values httpx does not encode itself."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot send a {type(value).__name__} to the API")


def _query(params: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        plain = [v if isinstance(v, str | int | float | bool) else _plain(v) for v in values]
        out[name] = plain if isinstance(value, list | tuple) else plain[0]
    return out


class Client:
    """The Keyrack API for one key.

    ``Client(api_key, base_url=…)`` paces itself to the key's limits: at most
    ``rate_per_second`` request starts per second (``None``: no pacing; slowed
    down further when the server's ``RateLimit-Policy`` shows a stricter key) and
    ``concurrency`` requests in flight (``None``: no limit), shared by every
    thread using this client. A 429 is retried after its ``Retry-After`` up to
    ``max_retries`` times, then raised as ``RateLimitedError``. Errors are the
    classes of ``keyrack.client``; each carries the server's problem document.

    The key travels only in the ``X-API-Key`` header; ``repr`` shows it masked.
    Redirects are not followed, so the key never goes to another host.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        rate_per_second: float | None = 5,
        concurrency: int | None = 1,
        max_retries: int = 3,
        timeout: float = 10.0,
        event_hooks: Mapping[str, list[EventHook]] | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        from keyrack import __version__

        api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._masked = masked(api_key)
        self._pacer = Pacer(rate_per_second, concurrency)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=_KeyAuth(api_key),
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": f"keyrack-python/{__version__}"},
            event_hooks=dict(event_hooks or {}),
        )
        self.keys = Keys(self)
        self.clients = Records(self, "/api/v2/clients")
        self.contacts = Records(self, "/api/v2/contacts")
        self.contracts = Records(self, "/api/v2/contracts")
        self.engagements = Records(self, "/api/v2/engagements")
        self.usage = Usage(self)
        self.pulse = Pulse(self)
        self.exports = Exports(self)

    def __repr__(self) -> str:
        return f"<keyrack.Client {self._masked} {self.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> dict[str, Any]:
        """Validate the key: its organization and ref (any valid key)."""
        found: dict[str, Any] = self.request("GET", "/api/v2/health")
        return found

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one paced request; return its decoded JSON body (``None`` when empty).

        Raises the ``APIError`` subclass matching an error status, or
        ``TransportError`` when no answer came.
        """
        content = None
        headers = {}
        if json is not None:
            content = jsonlib.dumps(json, default=_plain, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        response = self._send(method, path, _query(params), content, headers)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise KeyrackError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON"
            ) from None

    def download(self, path: str, sink: BinaryIO) -> int:
        """Stream ``GET path`` into ``sink`` (one paced request); returns the bytes written."""
        with self._pacer.slot():
            try:
                with self._http.stream("GET", path) as response:
                    if response.is_error:
                        response.read()
                        raise error_for(response)
                    written = 0
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                        written += len(chunk)
                    return written
            except httpx.RequestError as exc:
                raise TransportError(f"GET {path}: {exc}") from exc

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        content: bytes | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        retries = 0
        while True:
            with self._pacer.slot():
                try:
                    response = self._http.request(
                        method, path, params=params, content=content, headers=headers
                    )
                except httpx.RequestError as exc:
                    raise TransportError(f"{method} {path}: {exc}") from exc
            if (policy := response.headers.get("RateLimit-Policy")) and (
                rate := policy_rate(policy)
            ):
                self._pacer.tighten(rate)
            if response.status_code != 429:
                break
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            self._pacer.hold(wait)
            if retries >= self.max_retries or wait > MAX_RETRY_AFTER:
                raise error_for(response, retry_after=wait)
            retries += 1
        if response.is_error:
            raise error_for(response)
        return response
