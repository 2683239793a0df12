"""A connector's calls to its provider: counted, paced, authorized, refreshed, redacted.

``ProviderSession`` sends every request of one connector through the ``httpx.Client`` it
was given, and owns what is the same for every provider:

* each call is counted in ``stats.api_calls``;
* a rate-limited answer (the provider's ``Dialect`` says which, and how long to wait) is
  waited out and sent again, the wait added to ``stats.rate_limit_wait_seconds``, up to
  ``max_wait`` seconds a call; a longer wait, or a spent quota, raises
  ``ProviderRateLimited`` so the run can be taken up later;
* a ``Pacing`` (when the connector gives one) spaces the sends to the provider's limits
  before they are hit, and reads every answer (its rate-limit headers);
* the credential (``oauth.Keeper``) authorizes the request (``Authorization``, or the API
  key in ``api_key_header`` for a provider that takes it there); an OAuth2 access token is
  refreshed when due and, once per call, on a 401 (HubSpot's ``EXPIRED_AUTHENTICATION``,
  Salesforce's ``INVALID_SESSION_ID``); a refused refresh raises ``CredentialRejected``
  (``revoked`` for ``invalid_grant``);
* ``check`` turns an error answer into the exception ``probe`` reads (401/403 →
  ``CredentialRejected``, 5xx → ``ProviderUnavailable``, other 4xx → ``ConnectorError``),
  and a timeout or a failed connection is ``ProviderUnavailable``;
* failures and exchanges are built here, through ``redact`` with every secret the
  keeper has held.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import httpx
from authlib.oauth2.base import OAuth2Error

from keyrack.integrations.batching import Refused
from keyrack.integrations.connector import (
    ConnectorError,
    CredentialRejected,
    Exchange,
    Probe,
    ProbeStatus,
    ProviderFailure,
    ProviderRateLimited,
    ProviderUnavailable,
    Stats,
    TokenCallback,
)
from keyrack.integrations.oauth import Keeper
from keyrack.integrations.redaction import redact

log = logging.getLogger("keyrack.integrations")

MAX_ATTEMPTS = 6
"""Sends of one call at most (the first and the retries after rate-limit waits)."""

_AS_SENT = object()

_Call = tuple[str, str, dict[str, str], int | None, dict[str, str]]
"""Method, URL, request headers, status and response headers of one call, redacted."""


class Dialect(Protocol):
    """What differs between providers in reading an answer."""

    provider: str

    def failure(self, response: httpx.Response) -> ProviderFailure:
        """The provider's error code and exact message in an error answer."""

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """None if ``response`` is not rate-limited; else the seconds to wait before
        sending again (``attempt`` counts the sends so far, from 0), or ``math.inf`` for
        a quota not to be waited out."""

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        """For a 401/403: what it says of the credential, and the reason slug."""


class Pacing(Protocol):
    """Client-side pacing of one connector's sends (see ``connectors.keyrack``)."""

    def slot(self) -> AbstractContextManager[None]:
        """Held while one request is sent: waits for its turn first."""

    def answered(self, response: httpx.Response) -> None:
        """Learn from an answer (its rate-limit headers)."""


def probe_by(call: Callable[[], object]) -> Probe:
    """Run a cheap authorized call and tell the credential's state from how it went."""
    try:
        call()
    except CredentialRejected as error:
        return Probe(error.status, error.reason, error.failure, error.exchange)
    except ConnectorError as error:
        return Probe(ProbeStatus.UNREACHABLE, error.reason, error.failure, error.exchange)
    return Probe(ProbeStatus.ACTIVE, "ok")


def retry_after(response: httpx.Response) -> float | None:
    """The seconds of a ``Retry-After`` header (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())


def answer_json(response: httpx.Response) -> Any:
    """The answer's JSON body, or None when it has none."""
    try:
        return response.json()
    except ValueError:
        return None


def _text(body: bytes | str | None) -> str | None:
    if body is None or body == b"" or body == "":
        return None
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= Exchange.MAX_BODY:
        return text
    return text[: Exchange.MAX_BODY] + "…[truncated]"


class ProviderSession:
    def __init__(
        self,
        http: httpx.Client,
        dialect: Dialect,
        *,
        credential: Mapping[str, Any],
        on_token: TokenCallback | None = None,
        max_wait: float = 60.0,
        pacing: Pacing | None = None,
        api_key_header: str | None = None,
    ) -> None:
        self.stats = Stats()
        self.pacing = pacing
        self._api_key_header = api_key_header
        self.dialect = dialect
        self.keeper = Keeper(credential, post=self._token_post, on_token=on_token)
        self._http = http
        self._max_wait = max_wait
        self._last_call: tuple[httpx.Request, _Call] | None = None

    def __repr__(self) -> str:
        return f"<ProviderSession {self.dialect.provider} {self.keeper!r}>"

    # ---- sending ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        authorized: bool = True,
    ) -> httpx.Response:
        """Send one call (waiting out rate limits, refreshing once on a 401) and return
        the provider's last answer, whatever its status: ``check`` it."""
        refreshed = False
        waited = 0.0
        attempt = 0
        while True:
            if authorized and self.keeper.due:
                self.refresh()
            request = self._http.build_request(
                method, url, params=params, json=json, content=content, headers=headers
            )
            if authorized:
                self._authorize(request)
            response = self._send(request)
            wait = self.dialect.rate_wait(response, attempt)
            attempt += 1
            if wait is not None:
                if math.isinf(wait) or waited + wait > self._max_wait or attempt >= MAX_ATTEMPTS:
                    failure = self.failure(response)
                    raise ProviderRateLimited(
                        self._detail(failure),
                        failure=failure,
                        exchange=self.exchange(response),
                        retry_after=None if math.isinf(wait) else wait,
                    )
                log.info(
                    "%s rate limit: waiting %.1f s before sending again",
                    self.dialect.provider,
                    wait,
                )
                time.sleep(wait)
                waited += wait
                self.stats.rate_limit_wait_seconds += wait
                continue
            if (
                response.status_code == 401
                and authorized
                and self.keeper.can_refresh
                and not refreshed
            ):
                self.refresh()
                refreshed = True
                continue
            return response

    def _authorize(self, request: httpx.Request) -> None:
        header = self.keeper.authorization()
        if self._api_key_header and self.keeper.kind == "api_key":
            request.headers[self._api_key_header] = header.removeprefix("Bearer ")
        else:
            request.headers["Authorization"] = header

    def _send(self, request: httpx.Request, auth: httpx.Auth | None = None) -> httpx.Response:
        self.stats.api_calls += 1
        try:
            if self.pacing is None:
                return self._http_send(request, auth)
            with self.pacing.slot():
                response = self._http_send(request, auth)
            self.pacing.answered(response)
            return response
        except httpx.TimeoutException as error:
            reason, code = "timeout", "timeout"
            cause: Exception = error
        except httpx.TransportError as error:
            reason, code = "connection-failed", "connection-failed"
            cause = error
        message = redact(f"{type(cause).__name__}: {cause}", self.keeper.secrets)
        failure = ProviderFailure(message, code, None)
        raise ProviderUnavailable(
            f"{self.dialect.provider}: {message}",
            failure=failure,
            exchange=self._exchange(request, None),
            reason=reason,
        ) from None

    def _http_send(self, request: httpx.Request, auth: httpx.Auth | None) -> httpx.Response:
        if auth is None:
            return self._http.send(request)
        return self._http.send(request, auth=auth)

    def _token_post(
        self,
        url: str,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        **_: Any,
    ) -> httpx.Response:
        """authlib's ``session.post``: the token request, through our client."""
        request = self._http.build_request("POST", url, data=data, headers=headers)
        return self._send(request, auth=auth)

    def refresh(self) -> None:
        """Refresh the OAuth2 access token, or raise what the provider's refusal means."""
        try:
            self.keeper.refresh()
        except OAuth2Error as error:
            answer = self.keeper.last_refresh_answer
            if answer is None:
                failure = ProviderFailure(
                    redact(str(error.description or error.error), self.keeper.secrets),
                    str(error.error),
                    None,
                )
            else:
                failure = self.failure(answer)
            exchange = self.exchange(answer) if answer is not None else None
            revoked = error.error == "invalid_grant"
            raise CredentialRejected(
                self._detail(failure),
                status=ProbeStatus.REVOKED if revoked else ProbeStatus.UNAUTHORIZED,
                failure=failure,
                exchange=exchange,
                reason="refresh-refused" if revoked else "client-refused",
            ) from None
        except httpx.HTTPStatusError as error:
            self.check(error.response)  # a 4xx or 5xx: raises
            raise
        except ValueError:
            answer = self.keeper.last_refresh_answer
            assert answer is not None
            failure = ProviderFailure(
                "the token endpoint answered something that is not a token",
                "invalid-token-answer",
                answer.status_code,
            )
            raise ConnectorError(
                self._detail(failure), failure=failure, exchange=self.exchange(answer)
            ) from None
        log.info("refreshed the %s access token", self.dialect.provider)

    # ---- reading answers ----------------------------------------------------------------

    def check(self, response: httpx.Response) -> httpx.Response:
        """``response`` if it is a success, else the exception its status means."""
        status = response.status_code
        if status < 400:
            return response
        failure = self.failure(response)
        exchange = self.exchange(response)
        detail = self._detail(failure)
        if status in (401, 403):
            verdict, reason = self.dialect.rejected(failure, status)
            if verdict is ProbeStatus.UNAUTHORIZED and self.keeper.expired:
                verdict, reason = ProbeStatus.EXPIRED, "token-expired"
            raise CredentialRejected(
                detail, status=verdict, failure=failure, exchange=exchange, reason=reason
            )
        if status >= 500:
            raise ProviderUnavailable(detail, failure=failure, exchange=exchange)
        raise ConnectorError(detail, failure=failure, exchange=exchange)

    def json(self, response: httpx.Response) -> Any:
        """The body of a successful answer, parsed."""
        self.check(response)
        try:
            return response.json()
        except ValueError:
            failure = ProviderFailure(
                "the answer is not JSON", "invalid-answer", response.status_code
            )
            raise ConnectorError(
                self._detail(failure), failure=failure, exchange=self.exchange(response)
            ) from None

    def check_refused(self, response: httpx.Response, refused: Collection[int]) -> httpx.Response:
        """``check``, but a status in ``refused`` raises ``Refused`` (a batch refused whole)."""
        if response.status_code in refused:
            raise Refused(self.failure(response), response)
        return self.check(response)

    def failure(self, response: httpx.Response) -> ProviderFailure:
        found = self.dialect.failure(response)
        return self.failure_of(found.message, found.code, found.http_status)

    def failure_of(
        self, message: str, code: str | None, http_status: int | None
    ) -> ProviderFailure:
        """A failure as the provider worded it, any secret it echoed redacted."""
        secrets = self.keeper.secrets
        return ProviderFailure(
            redact(message, secrets), redact(code, secrets) if code else None, http_status
        )

    def exchange(
        self,
        response: httpx.Response,
        *,
        request_body: Any = _AS_SENT,
        response_body: Any = _AS_SENT,
    ) -> Exchange:
        """The call that got ``response``, redacted; the bodies may be replaced by one
        record's part of them (JSON-encoded)."""
        return self._exchange(
            response.request,
            response,
            request_body=request_body,
            response_body=response_body,
        )

    def _exchange(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        *,
        request_body: Any = _AS_SENT,
        response_body: Any = _AS_SENT,
    ) -> Exchange:
        secrets = self.keeper.secrets
        sent = _text(request.content) if request_body is _AS_SENT else _dumps(request_body)
        answered: str | None = None
        if response is not None:
            answered = _text(response.text) if response_body is _AS_SENT else _dumps(response_body)
        method, url, request_headers, status, response_headers = self._call_of(request, response)
        return Exchange(
            method=method,
            url=url,
            request_headers=request_headers,
            request_body=_cut(redact(sent, secrets)),
            status=status,
            response_headers=response_headers,
            response_body=_cut(redact(answered, secrets)),
        )

    def _call_of(self, request: httpx.Request, response: httpx.Response | None) -> _Call:
        """The redacted method, URL, headers and status of a call; the last one is kept,
        as the records of one batch share it."""
        if self._last_call is not None and self._last_call[0] is request:
            return self._last_call[1]
        secrets = self.keeper.secrets
        call = (
            request.method,
            redact(str(request.url), secrets),
            redact(dict(request.headers.items()), secrets),
            response.status_code if response is not None else None,
            redact(dict(response.headers.items()), secrets) if response is not None else {},
        )
        self._last_call = (request, call)
        return call

    def _detail(self, failure: ProviderFailure) -> str:
        status = f" {failure.http_status}" if failure.http_status else ""
        code = f" {failure.code}" if failure.code else ""
        return f"{self.dialect.provider} answered{status}{code}: {failure.message}"


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
