"""Another Keyrack, through its REST API (``/api/v2``) with one of its API keys: clients,
contacts, contracts and engagements, both directions.

Changes are read from ``?updated_since=`` lists, which the far side orders by
``(updated_at, id)`` and pages with a cursor (a position in that order). Its
``updated_at`` is a stamp from its organization's change clock: strictly increasing in
commit order, shared by the records one transaction wrote, and moved only by a real
change. So a record's watermark is ``kr1;<since>;<cursor>;<stamp>;<refs>``: the cursor
of the page it came in, its stamp (µs), and the refs of that page's records at that
stamp up to it. Resuming reads that page again and drops every record below the stamp
and those refs at it: nothing new can sort below a stamp already seen, so none is
skipped and none repeated, and a record changed since has a later stamp and comes
again, later. The refs are bounded by a page (200). ``get``'s watermark resumes after
the record's stamp (records of the same transaction with a lower id may come again).

Writes go one record at a time (the far side has no batch upsert): the record that holds
``external_ids[system]`` = our id (``?external_id=keyrack:<id>``) is read, then left
``unchanged`` when it already holds the values, else PATCHed; without one a record is
POSTed carrying that external id. A refusal (a 400 validation error, a 409 conflict, a
404 client) fails that record alone with the far side's problem document. ``links``
give ``client_id`` (and an engagement's ``contact_id``) of a new record.

The key travels in ``X-API-Key``. Sends are paced to the far key's limits as the SDK
paces them (``keyrack.client._pacing``: one in flight, starts spaced to the rate its
``RateLimit-Policy`` announces, starting from the SDK's default); a 429 waits its
``Retry-After``. Paced and 429 waits both count in ``stats.rate_limit_wait_seconds``.
A 401 is ``revoked`` (``revoked-key``), ``expired`` (``expired-key``) or
``unauthorized``; a 403 ``unauthorized``; the failure is the problem document's
``title: detail``, its code the problem type (``revoked-key``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from keyrack.client._pacing import Pacer, policy_rate, retry_after_seconds
from keyrack.integrations.batching import unchanged
from keyrack.integrations.connector import (
    KEYRACK,
    ConnectorError,
    CredentialRejected,
    Direction,
    EngagementKind,
    FieldMapping,
    Mappings,
    OutboundRecord,
    Probe,
    ProbeStatus,
    ProviderFailure,
    ProviderRateLimited,
    ProviderUnavailable,
    RecordType,
    RemoteRecord,
    Stats,
    TokenCallback,
    WriteOutcome,
    WriteResult,
    both_ways,
    require,
)
from keyrack.integrations.session import ProviderSession, answer_json, probe_by
from keyrack.integrations.watermarks import malformed

PAGE_LIMIT = 200
BATCH_SIZE = 50
DEFAULT_RATE = 5.0
"""The SDK's starting rate (Keyrack's default key limit), until the far side says its own."""
VERSION = "kr1"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_REF = re.compile(r"^[a-z]{2,4}_[0-9A-Za-z]{1,40}$")

LINK_FIELDS: Mapping[RecordType, Mapping[RecordType, str]] = {
    RecordType.CLIENTS: {},
    RecordType.CONTACTS: {RecordType.CLIENTS: "client_id"},
    RecordType.CONTRACTS: {RecordType.CLIENTS: "client_id"},
    RecordType.ENGAGEMENTS: {RecordType.CLIENTS: "client_id", RecordType.CONTACTS: "contact_id"},
}
FIXED_LINKS = frozenset({"client_id"})
"""Links the far side sets on creation only (a PATCH may not move a record to another client)."""

MAPPINGS = both_ways(
    {
        RecordType.CLIENTS: tuple(
            FieldMapping(f, f) for f in ("name", "status", "owner_email", "arr_cents", "health")
        ),
        RecordType.CONTACTS: tuple(FieldMapping(f, f) for f in ("name", "email", "phone", "title")),
        RecordType.CONTRACTS: tuple(
            FieldMapping(f, f)
            for f in (
                "name",
                "amount_cents",
                "currency",
                "start_date",
                "end_date",
                "recurring_amount_cents",
                "recurring_interval",
            )
        ),
        RecordType.ENGAGEMENTS: tuple(
            FieldMapping(f, f) for f in ("occurred_at", "subject", "body")
        ),
    }
)


def _us(text: str) -> int:
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _iso(us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Position:
    """A watermark: where in the far side's change order a record stands."""

    def __init__(self, since: int, cursor: str, stamp: int, refs: Sequence[str]) -> None:
        self.since, self.cursor, self.stamp, self.refs = since, cursor, stamp, tuple(refs)

    def encode(self) -> str:
        return ";".join(
            [VERSION, str(self.since), self.cursor, str(self.stamp), ",".join(self.refs)]
        )

    @classmethod
    def decode(cls, text: str) -> Position:
        parts = text.split(";")
        if len(parts) != 5 or parts[0] != VERSION:
            raise malformed(text)
        _, since, cursor, stamp, refs = parts
        found = refs.split(",") if refs else []
        if not (since.isdigit() and stamp.isdigit() and all(_REF.match(r) for r in found)):
            raise malformed(text)
        if cursor and not re.fullmatch(r"[A-Za-z0-9_=-]{1,200}", cursor):
            raise malformed(text)
        return cls(int(since), cursor, int(stamp), found)


class KeyrackDialect:
    provider = "keyrack"

    def failure(self, response: httpx.Response) -> ProviderFailure:
        body = answer_json(response)
        if not isinstance(body, dict) or not (body.get("title") or body.get("detail")):
            return ProviderFailure(
                response.text or response.reason_phrase, None, response.status_code
            )
        title, detail = body.get("title"), body.get("detail")
        message = f"{title}: {detail}" if title and detail else str(title or detail)
        kind = str(body.get("type") or "")
        code = kind.rpartition("/problems/")[2] if "/problems/" in kind else (kind or None)
        return ProviderFailure(message, code, response.status_code)

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code != 429:
            return None
        return retry_after_seconds(response.headers.get("Retry-After"))

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        if failure.code == "revoked-key":
            return ProbeStatus.REVOKED, "credential-refused"
        if failure.code == "expired-key":
            return ProbeStatus.EXPIRED, "token-expired"
        if http_status == 403:
            return ProbeStatus.UNAUTHORIZED, "missing-permission"
        return ProbeStatus.UNAUTHORIZED, "credential-refused"


class KeyPacing:
    """The SDK's ``Pacer`` at the far key's announced rate, its waits counted in ``stats``.

    It starts at the SDK's default and follows the rate each answer's ``RateLimit-Policy``
    announces: stricter, it tightens; looser (a key with higher limits), it starts afresh
    at that rate, since a ``Pacer`` never speeds up by itself."""

    def __init__(self, stats: Stats, rate_per_second: float = DEFAULT_RATE) -> None:
        self._stats = stats
        self.pacer = self._pacer(rate_per_second)

    def _pacer(self, rate: float) -> Pacer:
        return Pacer(rate, 1, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        self._stats.rate_limit_wait_seconds += seconds

    def slot(self) -> AbstractContextManager[None]:
        return self.pacer.slot()

    def answered(self, response: httpx.Response) -> None:
        policy = response.headers.get("RateLimit-Policy")
        rate = policy_rate(policy) if policy else None
        current = self.pacer.rate_per_second
        if rate is None or current is None or rate == current:
            return
        if rate < current:
            self.pacer.tighten(rate)
        else:
            self.pacer = self._pacer(rate)


class KeyrackConnector:
    provider = "keyrack"
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
        system: str = KEYRACK,
        max_wait: float = 60.0,
    ) -> None:
        if not base_url:
            raise ValueError("a keyrack connection needs the base_url of the other Keyrack")
        if not (isinstance(credential.get("api_key"), str) and credential["api_key"]):
            raise ValueError("credential: needs the api_key of a key of the other Keyrack")
        self._base = base_url.rstrip("/")
        self._session = ProviderSession(
            http,
            KeyrackDialect(),
            credential={"api_key": credential["api_key"]},
            max_wait=max_wait,
            api_key_header="X-API-Key",
        )
        self.stats = self._session.stats
        self._session.pacing = KeyPacing(self.stats)
        self._system = system

    def __repr__(self) -> str:
        return f"KeyrackConnector(base_url={self._base!r})"

    def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self._session.request(method, f"{self._base}/api/v2/{path}", **options)

    # ---- probe --------------------------------------------------------------------------

    def probe(self) -> Probe:
        return probe_by(lambda: self._session.json(self._call("GET", "health")))

    # ---- reading ------------------------------------------------------------------------

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        require(self, record_type, Direction.INBOUND)
        start = Position.decode(watermark) if watermark else Position(0, "", -1, ())
        return self._changes(record_type, start)

    def _changes(self, record_type: RecordType, start: Position) -> Iterator[RemoteRecord]:
        cursor, since = start.cursor, start.since
        while True:
            params: dict[str, Any] = {"updated_since": _iso(since), "limit": PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            page = self._session.json(self._call("GET", record_type.value, params=params))
            stamp, refs = -1, list[str]()
            for body in page.get("data") or []:
                at = _us(str(body["updated_at"]))
                if at != stamp:
                    stamp, refs = at, []
                refs.append(str(body["id"]))
                if at < start.stamp or (at == start.stamp and body["id"] in start.refs):
                    continue  # delivered before the watermark
                position = Position(since, cursor, at, refs)
                yield self._record(record_type, body, position.encode())
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return

    def _record(
        self, record_type: RecordType, body: Mapping[str, Any], watermark: str
    ) -> RemoteRecord:
        fields = {k: v for k, v in body.items() if k not in ("id", "external_ids")}
        links = {
            link: str(body[name])
            for link, name in LINK_FIELDS[record_type].items()
            if body.get(name)
        }
        kind = EngagementKind(body["kind"]) if record_type is RecordType.ENGAGEMENTS else None
        name = (
            body.get("name")
            or body.get("subject")
            or f"{body.get('kind')} {body.get('occurred_at')}"
        )
        return RemoteRecord(
            remote_id=str(body["id"]),
            watermark=watermark,
            name=str(name),
            fields=fields,
            external_ids=dict(body.get("external_ids") or {}),
            links=links,
            kind=kind,
        )

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        if not _REF.match(remote_id):
            return None
        response = self._call("GET", f"{record_type.value}/{remote_id}")
        if response.status_code == 404:
            return None
        body = self._session.json(response)
        at = _us(str(body["updated_at"]))
        return self._record(record_type, body, Position(at, "", at, [str(body["id"])]).encode())

    # ---- writing ------------------------------------------------------------------------

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        require(self, record_type, Direction.OUTBOUND)
        return [self._upsert_one(record_type, item) for item in items]

    def _upsert_one(self, record_type: RecordType, item: OutboundRecord) -> WriteOutcome:
        desired: dict[str, Any] = dict(item.fields)
        for link, name in LINK_FIELDS[record_type].items():
            if link in item.links:
                desired[name] = item.links[link]
        if record_type is RecordType.ENGAGEMENTS:
            if item.kind is None:
                raise ValueError(f"engagement {item.keyrack_id} has no kind")
            desired["kind"] = item.kind.value
        try:
            held = self._held(record_type, item.keyrack_id)
            if held is None:
                body = {**desired, "external_ids": {self._system: item.keyrack_id}}
                response = self._call("POST", record_type.value, json=body)
                result = WriteResult.CREATED
            else:
                changes = {k: v for k, v in desired.items() if k not in FIXED_LINKS}
                if unchanged(changes, held):
                    return WriteOutcome(item.keyrack_id, WriteResult.UNCHANGED, str(held["id"]))
                path = f"{record_type.value}/{held['id']}"
                response = self._call("PATCH", path, json=changes)
                result = WriteResult.UPDATED
            written = self._session.json(response)
        except (CredentialRejected, ProviderUnavailable, ProviderRateLimited):
            raise
        except ConnectorError as refused:
            return WriteOutcome(
                item.keyrack_id, WriteResult.FAILED, None, refused.failure, refused.exchange
            )
        exchange = self._session.exchange(response)
        return WriteOutcome(item.keyrack_id, result, str(written["id"]), exchange=exchange)

    def _held(self, record_type: RecordType, keyrack_id: str) -> dict[str, Any] | None:
        """The far record holding our id under ``system``, or None."""
        params = {"external_id": f"{self._system}:{keyrack_id}", "limit": 1}
        page = self._session.json(self._call("GET", record_type.value, params=params))
        found = page.get("data") or []
        return dict(found[0]) if found else None
