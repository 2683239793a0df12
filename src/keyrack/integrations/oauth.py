"""A connection's credential, and its OAuth2 refresh through authlib.

``Keeper`` is the one object holding a connector's secret. It parses the credential
(``{"api_key": …}`` or OAuth2 ``access_token``, ``refresh_token``, ``expires_at``,
``token_url``, ``client_id``, ``client_secret``), gives the ``Authorization`` header,
and refreshes an OAuth2 access token with authlib's client (the refresh-token grant,
client credentials posted in the form as HubSpot and Salesforce take them). The token
request goes through ``post``, which the connector's session supplies, so it is counted
and travels over the connection's own ``httpx.Client`` like every other call.

A refreshed credential (the old one with the new access token, expiry, and refresh token
when the provider rotates it) goes to ``on_token``. Salesforce answers no ``expires_in``:
its tokens have no known expiry and are refreshed on a 401 only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Generator, Mapping
from types import SimpleNamespace
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.client import OAuth2Client

from keyrack.integrations.connector import TokenCallback

OAUTH_FIELDS = ("access_token", "refresh_token", "token_url", "client_id", "client_secret")
LEEWAY_SECONDS = 60
"""An access token this close to its expiry is refreshed before use."""

Post = Callable[..., httpx.Response]


class _ClientAuth(httpx.Auth):
    """authlib's client authentication (here ``client_secret_post``) as an httpx auth.

    authlib's own httpx integration is not used: from 1.9.10 it warns that plain httpx
    is deprecated in favour of its ``httpx2``; its protocol core needs only this."""

    requires_request_body = True

    def __init__(self, client_id: str, client_secret: str, auth_method: str) -> None:
        self._auth = ClientAuth(client_id, client_secret, auth_method)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url, headers, body = self._auth.prepare(
            request.method, str(request.url), request.headers, request.content
        )
        headers["Content-Length"] = str(len(body))
        yield httpx.Request(request.method, url, headers=headers, content=body)


class _AuthlibClient(OAuth2Client):  # type: ignore[misc]
    """authlib's protocol client on a plain ``session`` object (ours posts through httpx)."""

    client_auth_class = _ClientAuth
    oauth_error_class = OAuth2Error


def _epoch(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


class Keeper:
    def __init__(
        self,
        credential: Mapping[str, Any],
        *,
        post: Post,
        on_token: TokenCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(credential.get("api_key"), str) and credential["api_key"]:
            self.kind = "api_key"
        elif isinstance(credential.get("access_token"), str) and credential["access_token"]:
            self.kind = "oauth2"
        else:
            raise ValueError(
                "credential: needs an api_key, or an OAuth2 access_token (with refresh_token, "
                "token_url, client_id and client_secret to refresh it)"
            )
        self._credential = dict(credential)
        self._on_token = on_token
        self._clock = clock
        self.last_refresh_answer: httpx.Response | None = None
        try:
            self._credential["expires_at"] = _epoch(credential.get("expires_at"))
        except ValueError:
            raise ValueError("credential: expires_at is not epoch seconds or ISO 8601") from None
        self._seen: set[str] = set()
        self._remember()
        self._client: _AuthlibClient | None = None
        if self.can_refresh:
            self._client = _AuthlibClient(
                SimpleNamespace(post=post),
                client_id=self._credential["client_id"],
                client_secret=self._credential["client_secret"],
                token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
                token=self._token(),
                update_token=self._updated,
                leeway=LEEWAY_SECONDS,
                token_endpoint=self._credential["token_url"],
            )
            self._client.register_compliance_hook("refresh_token_response", self._answered)

    def __repr__(self) -> str:
        return f"<Keeper {self.kind}>"

    @property
    def secrets(self) -> frozenset[str]:
        """Every secret value this keeper holds or has held."""
        return frozenset(self._seen)

    def _remember(self) -> None:
        names = ("api_key", "access_token", "refresh_token", "client_secret")
        self._seen.update(str(self._credential[n]) for n in names if self._credential.get(n))

    @property
    def can_refresh(self) -> bool:
        return self.kind == "oauth2" and all(self._credential.get(n) for n in OAUTH_FIELDS)

    @property
    def expired(self) -> bool:
        expires_at = self._credential.get("expires_at")
        return expires_at is not None and expires_at <= self._clock()

    @property
    def due(self) -> bool:
        """The access token expires within the leeway and can be refreshed."""
        expires_at = self._credential.get("expires_at")
        return (
            self.can_refresh
            and expires_at is not None
            and expires_at - LEEWAY_SECONDS <= self._clock()
        )

    def authorization(self) -> str:
        secret = self._credential["api_key" if self.kind == "api_key" else "access_token"]
        return f"Bearer {secret}"

    def refresh(self) -> None:
        """Refresh the access token; raises authlib's ``OAuth2Error`` when the provider
        refuses (``error`` is its OAuth2 error code), ``httpx.HTTPStatusError`` for a 5xx
        and ``ValueError`` for an answer that is not a token."""
        assert self._client is not None
        self.last_refresh_answer = None
        self._client.refresh_token(
            self._credential["token_url"], refresh_token=self._credential["refresh_token"]
        )

    def _token(self) -> dict[str, Any]:
        token = {
            "access_token": self._credential["access_token"],
            "refresh_token": self._credential["refresh_token"],
            "token_type": "Bearer",
        }
        if self._credential.get("expires_at") is not None:
            token["expires_at"] = self._credential["expires_at"]
        return token

    def _answered(self, response: httpx.Response) -> httpx.Response:
        self.last_refresh_answer = response
        return response

    def _updated(self, token: Mapping[str, Any], refresh_token: str | None = None) -> None:
        self._credential["access_token"] = token["access_token"]
        self._credential["refresh_token"] = token.get("refresh_token") or refresh_token
        expires_at = token.get("expires_at")
        self._credential["expires_at"] = int(expires_at) if expires_at is not None else None
        self._remember()
        if self._on_token is not None:
            self._on_token(dict(self._credential))
