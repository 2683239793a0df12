"""The connector contract: all the sync engine knows of a provider.

A connector is one provider's client for one connection. It is built from the
connection's credential, its ``base_url`` (the real service's by default) and an
``httpx.Client`` that carries every call it makes (the engine hands it one that pins each
request to a vetted address; tests hand it a plain one pointed at a fake). It serves one
run at a time.

Record types are Keyrack's (``clients``, ``contacts``, ``contracts``, ``engagements``);
each connector maps them to its own objects and says in ``directions`` which way each
one goes. ``mappings`` holds its default field mappings, as data: the engine applies
mappings, the connector only reads and writes provider fields.

``probe()`` tells the credential's state as a value and never raises: ``active``;
``expired``, ``revoked`` or ``unauthorized`` when the provider refuses it (with the
provider's exact words); ``unreachable`` when the provider could not answer (a 5xx, a
timeout, a quota that is spent), which must leave a connection's status alone.

``changed_since(record_type, watermark)`` streams the records changed since
``watermark`` (``None``: all of them), page by page, so memory stays flat however many
there are. Each record carries the watermark *after* it: resuming from any watermark it
returned yields exactly the records after that one, none skipped and none repeated (a
record changed again later comes again, later). Watermarks are opaque strings.

``get(record_type, remote_id)`` reads one record, or ``None`` when the provider has no
such record.

``upsert(record_type, items)`` writes records keyed by their Keyrack id (a unique
property or external-id field on the provider's side), batched as the provider wants,
and answers one ``WriteOutcome`` per item, in order: ``created``, ``updated``,
``unchanged`` (the provider already holds these values: nothing is written, so writing
the same batch twice changes nothing) or ``failed`` with the provider's exact error. One
bad record never fails the others: a request the provider refuses as a whole is split
until each refusal is one record's. A failure of the call itself (the credential
refused, the provider down) raises instead; no outcome is claimed for a record that was
not answered for.

``stats`` counts the provider API calls made and the seconds spent waiting on the
provider's rate limits (429 with ``Retry-After`` or the provider's own headers), for the
run to report.

Credentials are ``{"api_key": …}`` or OAuth2 ``{"access_token", "refresh_token",
"expires_at", "token_url", "client_id", "client_secret"}`` (``expires_at`` in epoch
seconds). An OAuth2 access token is refreshed before it expires and when the provider
answers 401; each refreshed credential is handed to ``on_token`` so the engine can seal
and store it. A secret never appears in an exception, a log line, a ``repr``, a failure
or an exchange (``keyrack.integrations.redaction``).

Errors raised by connectors (what ``probe`` turns into its statuses)::

    ConnectorError              provider-error: the provider refused a call (not a record)
    ├── CredentialRejected      the credential is refused: ``status`` expired|revoked|unauthorized
    ├── ProviderUnavailable     a 5xx, a timeout, a connection that failed: try again later
    └── ProviderRateLimited     a limit not worth waiting out within a run (a daily quota,
                                a long ``Retry-After``): ``retry_after`` seconds, if known
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import httpx

from keyrack.domain import sync_rules
from keyrack.errors import KeyrackError


class RecordType(enum.StrEnum):
    CLIENTS = "clients"
    CONTACTS = "contacts"
    CONTRACTS = "contracts"
    ENGAGEMENTS = "engagements"


class Direction(enum.StrEnum):
    INBOUND = "inbound"  # into Keyrack
    OUTBOUND = "outbound"  # out of Keyrack


class EngagementKind(enum.StrEnum):
    EMAIL = "email"
    CALL = "call"
    MEETING = "meeting"
    NOTE = "note"


class ProbeStatus(enum.StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNAUTHORIZED = "unauthorized"
    UNREACHABLE = "unreachable"  # no verdict: leave the connection's status as it is


class WriteResult(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


TRANSFORMS = sync_rules.TRANSFORMS
"""SPEC §7's transform vocabulary, the only names a mapping may use."""

KEYRACK = "keyrack"
"""The key of a record's Keyrack id in ``RemoteRecord.external_ids``."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP request and its answer, secrets redacted, bodies cut at ``MAX_BODY``.

    For a record of a batch, the bodies are that record's part of the request and of
    the answer, the method, URL and headers those of the batch call.
    """

    MAX_BODY: ClassVar[int] = 8192

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None
    status: int | None
    response_headers: dict[str, str]
    response_body: str | None


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """What the provider said when it refused: ``message`` exactly as it said it (only a
    secret it echoed is redacted), its error ``code`` (``INVALID_SESSION_ID``,
    ``PROPERTY_DOESNT_EXIST``, ``invalid_grant``…) and the HTTP status of the answer that
    carried it (a record refused inside a batch carries the batch answer's 200 or 207).
    Without an answer (a timeout), ``code`` names what happened and ``http_status`` is None.
    """

    message: str
    code: str | None
    http_status: int | None


class Probe(NamedTuple):
    """The credential's state. ``reason`` is a stable slug: ``ok``, ``credential-refused``,
    ``missing-permission``, ``token-expired``, ``refresh-refused``, ``client-refused``,
    ``server-error``, ``timeout``, ``connection-failed``, ``rate-limited``, ``provider-error``.
    """

    status: ProbeStatus
    reason: str
    failure: ProviderFailure | None = None
    exchange: Exchange | None = None


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One provider record as read.

    ``fields`` are the provider's own (remote field → value, as the provider gives them;
    a connector adds only derived figures it documents, such as Stripe's recurring
    revenue). ``external_ids`` are the ids of other systems the record carries (its
    Keyrack id under ``KEYRACK``). ``links`` are the remote ids of the records it belongs
    to (``{"clients": "<company id>"}``). ``kind`` is set for engagements.
    """

    remote_id: str
    watermark: str
    name: str
    fields: dict[str, Any]
    external_ids: dict[str, str] = field(default_factory=dict)
    links: dict[RecordType, str] = field(default_factory=dict)
    kind: EngagementKind | None = None


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One record to write: ``fields`` are remote fields (mappings already applied);
    ``links`` the remote ids of the records it belongs to; ``kind`` is required for
    engagements (it picks the provider's object: a HubSpot call, a Salesforce Event…)."""

    keyrack_id: str
    fields: Mapping[str, Any]
    links: Mapping[RecordType, str] = field(default_factory=dict)
    kind: EngagementKind | None = None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """The answer for one ``OutboundRecord``: ``exchange`` is this record's part of the
    write (None when nothing was written, as for ``unchanged``)."""

    keyrack_id: str
    result: WriteResult
    remote_id: str | None
    failure: ProviderFailure | None = None
    exchange: Exchange | None = None


class FieldMapping(NamedTuple):
    """A default mapping: Keyrack field ↔ remote field, with a transform from
    ``TRANSFORMS`` applied in the mapping's direction; ``kind`` limits it to engagements of
    that kind (HubSpot calls, meetings and emails name their subject differently)."""

    local: str
    remote: str
    transform: str | None = None
    kind: EngagementKind | None = None


Mappings = Mapping[tuple[RecordType, Direction], tuple[FieldMapping, ...]]

_INVERSE = {"cents_to_units": "units_to_cents", "units_to_cents": "cents_to_units"}


def both_ways(outbound: Mapping[RecordType, Sequence[FieldMapping]]) -> Mappings:
    """Both directions' mappings from the outbound ones: inbound, money converts back."""
    table: dict[tuple[RecordType, Direction], tuple[FieldMapping, ...]] = {}
    for record_type, entries in outbound.items():
        table[(record_type, Direction.OUTBOUND)] = tuple(entries)
        table[(record_type, Direction.INBOUND)] = tuple(
            m._replace(transform=_INVERSE.get(m.transform or "", m.transform)) for m in entries
        )
    return table


@dataclass(slots=True)
class Stats:
    api_calls: int = 0
    rate_limit_wait_seconds: float = 0.0


TokenCallback = Callable[[dict[str, Any]], None]


@runtime_checkable
class Connector(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def directions(self) -> Mapping[RecordType, frozenset[Direction]]: ...

    @property
    def mappings(self) -> Mappings: ...

    @property
    def batch_size(self) -> int:
        """Records per write call: the engine may hand ``upsert`` this many at a time."""

    @property
    def stats(self) -> Stats: ...

    def probe(self) -> Probe:
        """The credential's state; never raises."""

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        """Records changed since ``watermark``, each with the watermark after it."""

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        """One record, or None when the provider has none with that id."""

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        """Write by Keyrack id; one outcome per item, in order."""


class ConnectorFactory(Protocol):
    def __call__(
        self,
        *,
        credential: Mapping[str, Any],
        http: httpx.Client,
        base_url: str | None = None,
        on_token: TokenCallback | None = None,
        read_fields: Mapping[RecordType, Sequence[str]] | None = None,
    ) -> Connector:
        """``read_fields``: remote fields to read beyond those of the default mappings."""


class ConnectorError(KeyrackError):
    """The provider refused a call; ``failure`` is what it said, ``exchange`` the call."""

    code = "provider-error"
    title = "The provider refused the call"
    reason: str = "provider-error"

    def __init__(
        self,
        detail: str,
        *,
        failure: ProviderFailure,
        exchange: Exchange | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.failure = failure
        self.exchange = exchange
        if reason is not None:
            self.reason = reason


class CredentialRejected(ConnectorError):
    code = "provider-credential-rejected"
    title = "The provider refused the credential"
    reason = "credential-refused"

    def __init__(
        self,
        detail: str,
        *,
        status: ProbeStatus,
        failure: ProviderFailure,
        exchange: Exchange | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail, failure=failure, exchange=exchange, reason=reason)
        self.status = status


class ProviderUnavailable(ConnectorError):
    code = "provider-unavailable"
    title = "The provider could not answer"
    reason = "server-error"


class ProviderRateLimited(ConnectorError):
    code = "provider-rate-limited"
    title = "The provider's rate limit is spent"
    reason = "rate-limited"

    def __init__(
        self,
        detail: str,
        *,
        failure: ProviderFailure,
        exchange: Exchange | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, failure=failure, exchange=exchange)
        self.retry_after = retry_after


def require(connector: Connector, record_type: RecordType, direction: Direction) -> None:
    """Refuse a record type or direction the connector does not serve (a caller's bug)."""
    if direction not in connector.directions.get(record_type, frozenset()):
        raise ValueError(f"{connector.provider} does not sync {record_type} {direction}")
