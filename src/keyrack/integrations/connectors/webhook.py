"""Webhooks: records out as signed JSON POSTs, records in as signed JSON POSTed to Keyrack.

A record travels as one JSON object, the same shape both ways::

    {"record_type": "contacts", "id": "con_01…", "fields": {"name": "Peter", …},
     "links": {"clients": "cli_01…"}, "external_ids": {"keyrack": "con_01…"},
     "kind": null}

signed as Keyrack's webhooks are (``keyrack.domain.webhooks``): ``Keyrack-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`` under the connection's signing
secret, the credential ``{"signing_secret": "whsec_…"}`` that Keyrack generates
(``new_signing_secret``) and shows once.

Outbound, each record is one POST to the connection's ``base_url`` (so each has its own
answer), with ``Keyrack-Event-Type: sync.record`` and a ``Keyrack-Event-Id`` that is a
digest of the record's content: the same record sent twice carries the same id, for a
receiver to drop the repeat (nothing here can read back what a receiver holds, so no
write is ever ``unchanged``). A 201 is ``created``, another 2xx ``updated`` (the id in a
JSON answer's ``id`` is the remote id); a 3xx or 4xx fails that record with the
receiver's body as it said it; a 429 waits its ``Retry-After``; a 5xx, a timeout or a
failed connection raises ``ProviderUnavailable``. There is nothing to probe: ``active``.

Inbound, records are pushed, not listed: ``changed_since`` yields nothing and ``get``
finds nothing; ``receive`` checks a POSTed body's signature (constant time, within 5
minutes) and reads it, one record or a list (each may add a ``name`` to show), into
``Received`` records, or refuses it
with ``InvalidSignature`` (401) or ``InvalidInput`` (400) naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from keyrack.domain import webhooks
from keyrack.errors import AuthenticationFailed, InvalidInput, PayloadTooLarge
from keyrack.integrations.connector import (
    Direction,
    EngagementKind,
    Mappings,
    OutboundRecord,
    Probe,
    ProbeStatus,
    ProviderFailure,
    RecordType,
    RemoteRecord,
    TokenCallback,
    WriteOutcome,
    WriteResult,
    require,
)
from keyrack.integrations.connectors.keyrack import MAPPINGS as KEYRACK_MAPPINGS
from keyrack.integrations.session import ProviderSession, answer_json, retry_after

EVENT_TYPE = "sync.record"
BATCH_SIZE = 100
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_RECORDS = 1000
MAX_ID = 255
MAX_FAILURE = 2000
"""Characters of a receiver's refusal kept as the failure's message."""
TOLERANCE = webhooks.DEFAULT_TOLERANCE
MAPPINGS: Mappings = KEYRACK_MAPPINGS
"""Records go out and come in with Keyrack's own field names by default."""


def new_signing_secret() -> str:
    """A new connection's signing secret (``whsec_…``), shown once."""
    return webhooks.generate_secret()


class InvalidSignature(AuthenticationFailed):
    code = "invalid-signature"
    title = "Invalid signature"


@dataclass(frozen=True, slots=True)
class Received:
    """One record of an inbound POST."""

    record_type: RecordType
    record: RemoteRecord


class WebhookDialect:
    provider = "webhook"

    def failure(self, response: httpx.Response) -> ProviderFailure:
        text = response.text
        body = answer_json(response)
        code = None
        if isinstance(body, dict):
            found = body.get("code") or body.get("error") or body.get("type")
            code = str(found) if isinstance(found, str | int) else None
        message = text[:MAX_FAILURE] if text else response.reason_phrase
        return ProviderFailure(message, code, response.status_code)

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code != 429:
            return None
        waited = retry_after(response)
        return waited if waited is not None else float(2**attempt)

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        return ProbeStatus.UNAUTHORIZED, "credential-refused"


def envelope(record_type: RecordType, item: OutboundRecord) -> dict[str, Any]:
    """The JSON object one record travels as."""
    return {
        "record_type": record_type.value,
        "id": item.keyrack_id,
        "fields": dict(item.fields),
        "links": {str(t): v for t, v in item.links.items()},
        "external_ids": {"keyrack": item.keyrack_id},
        "kind": item.kind.value if item.kind else None,
    }


class WebhookConnector:
    provider = "webhook"
    directions: ClassVar[Mapping[RecordType, frozenset[Direction]]] = MappingProxyType(
        {t: frozenset(Direction) for t in RecordType}
    )
    mappings: ClassVar[Mappings] = MAPPINGS
    batch_size = BATCH_SIZE

    def __init__(
        self,
        *,
        credential: Mapping[str, Any],
        http: httpx.Client,
        base_url: str | None = None,
        on_token: TokenCallback | None = None,
        read_fields: Mapping[RecordType, Sequence[str]] | None = None,
        max_wait: float = 60.0,
    ) -> None:
        secret = credential.get("signing_secret")
        if not isinstance(secret, str) or not secret:
            raise ValueError("credential: needs the signing_secret Keyrack generated for it")
        if not base_url:
            raise ValueError("a webhook connection needs the receiver's base_url")
        self._url = base_url
        self._secret = secret
        # the session knows the secret only to redact it: no request is "authorized"
        self._session = ProviderSession(
            http, WebhookDialect(), credential={"api_key": secret}, max_wait=max_wait
        )
        self.stats = self._session.stats

    def __repr__(self) -> str:
        return f"WebhookConnector(base_url={self._url!r})"

    def probe(self) -> Probe:
        """A receiver has nothing to probe: the secret is ours."""
        return Probe(ProbeStatus.ACTIVE, "ok")

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        require(self, record_type, Direction.INBOUND)
        return iter(())  # inbound records are POSTed to Keyrack: see ``receive``

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        return None

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        require(self, record_type, Direction.OUTBOUND)
        return [self._post(record_type, item) for item in items]

    def _post(self, record_type: RecordType, item: OutboundRecord) -> WriteOutcome:
        if record_type is RecordType.ENGAGEMENTS and item.kind is None:
            raise ValueError(f"engagement {item.keyrack_id} has no kind")
        body = json.dumps(
            envelope(record_type, item), ensure_ascii=False, default=str, separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json",
            webhooks.EVENT_TYPE_HEADER: EVENT_TYPE,
            webhooks.EVENT_ID_HEADER: hashlib.sha256(body).hexdigest()[:32],
            webhooks.SIGNATURE_HEADER: webhooks.sign(self._secret, body, int(time.time())),
        }
        response = self._session.request(
            "POST", self._url, content=body, headers=headers, authorized=False
        )
        if response.status_code >= 500:
            self._session.check(response)  # raises ProviderUnavailable
        exchange = self._session.exchange(response)  # the signature header is redacted
        if not response.is_success:
            failure = self._session.failure(response)
            return WriteOutcome(item.keyrack_id, WriteResult.FAILED, None, failure, exchange)
        answer = answer_json(response)
        remote = answer.get("id") if isinstance(answer, dict) else None
        result = WriteResult.CREATED if response.status_code == 201 else WriteResult.UPDATED
        remote_id = str(remote) if isinstance(remote, str | int) and remote != "" else None
        return WriteOutcome(item.keyrack_id, result, remote_id, exchange=exchange)


# ---- inbound ----------------------------------------------------------------------------


def receive(
    secret: str,
    body: bytes,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> list[Received]:
    """The records of a POSTed ``body`` signed with ``signature`` (the ``Keyrack-Signature``
    header) under ``secret``; ``InvalidSignature``, ``PayloadTooLarge`` or ``InvalidInput``
    saying what is wrong."""
    check_signature(secret, body, signature, now=now, tolerance=tolerance)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        parsed = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8 text") from None
    except ValueError as error:
        raise InvalidInput(f"the body is not JSON: {error}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise InvalidInput("the body holds no record: send one record or a list of them")
    if len(items) > MAX_RECORDS:
        raise InvalidInput(f"at most {MAX_RECORDS} records a POST (this one holds {len(items)})")
    where = "records[{}]" if isinstance(parsed, list) else "record"
    timestamp = webhooks.parse_header(signature or "")[0]
    return [
        _received(item, where.format(n), f"inbound:{timestamp}:{n}") for n, item in enumerate(items)
    ]


def check_signature(
    secret: str,
    body: bytes,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE,
) -> None:
    """Refuse ``body`` unless ``signature`` signs it under ``secret`` within ``tolerance``."""
    header = webhooks.SIGNATURE_HEADER
    if not signature:
        raise InvalidSignature(f"the request carries no {header} header")
    timestamp, signatures = webhooks.parse_header(signature)
    if timestamp is None or not signatures:
        raise InvalidSignature(f"{header} is not t=<unix seconds>,v1=<hex signature>")
    moment = time.time() if now is None else now
    if not math.isfinite(moment) or abs(moment - timestamp) > tolerance:
        raise InvalidSignature(
            f"{header} was made {abs(int(moment) - timestamp)} s from now: more than the "
            f"{tolerance} s allowed (a replay, or a clock that is off)"
        )
    if not webhooks.verify(secret, body, signature, now=int(moment), tolerance=tolerance):
        raise InvalidSignature(
            f"{header} does not match the body under this connection's signing secret"
        )


def _received(item: Any, where: str, watermark: str) -> Received:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: must be a JSON object")
    kinds = ", ".join(t.value for t in RecordType)
    try:
        record_type = RecordType(str(item.get("record_type")))
    except ValueError:
        raise InvalidInput(f"{where}.record_type: must be one of {kinds}") from None
    remote_id = item.get("id")
    if isinstance(remote_id, int) and not isinstance(remote_id, bool):
        remote_id = str(remote_id)
    if not isinstance(remote_id, str) or not 1 <= len(remote_id) <= MAX_ID:
        raise InvalidInput(f"{where}.id: must be the sender's id, 1-{MAX_ID} characters")
    fields = _object(item, "fields", where)
    external_ids = _strings(item, "external_ids", where)
    links: dict[RecordType, str] = {}
    for link, value in _strings(item, "links", where).items():
        try:
            links[RecordType(link)] = value
        except ValueError:
            raise InvalidInput(f"{where}.links.{link}: must be one of {kinds}") from None
    kind = None
    if record_type is RecordType.ENGAGEMENTS or item.get("kind") is not None:
        try:
            kind = EngagementKind(str(item.get("kind")))
        except ValueError:
            choices = ", ".join(k.value for k in EngagementKind)
            raise InvalidInput(f"{where}.kind: an engagement's kind is one of {choices}") from None
    name: Any = item.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput(f"{where}.name: must be text")
    shown = name or fields.get("name") or fields.get("subject") or remote_id
    record = RemoteRecord(
        remote_id=remote_id,
        watermark=watermark,
        name=str(shown),
        fields=fields,
        external_ids=external_ids,
        links=links,
        kind=kind,
    )
    return Received(record_type, record)


def _object(item: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}.{key}: must be a JSON object")
    return dict(value)


def _strings(item: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = _object(item, key, where)
    for name, entry in value.items():
        if not isinstance(entry, str) or not 1 <= len(entry) <= MAX_ID:
            raise InvalidInput(f"{where}.{key}.{name}: must be an id, 1-{MAX_ID} characters")
    return value
