"""Stripe, inbound only: customers → clients, subscriptions → contracts with recurring
revenue, through Stripe's official library (a ``StripeClient`` whose HTTP client is the
connection's ``httpx.Client``, pointed at ``base_url``).

Stripe's lists have no filter on modification, only on creation, and list newest first;
a watermark is a cursor in that order. The first read walks the list from the newest
object (the *anchor*) to the oldest with ``starting_after`` (``back:anchor:id``), then
every later read walks forward from the newest object seen with ``ending_before``
(``fwd:id``), oldest first. Either is an exact resume point. What this sees is *new*
customers and subscriptions: a later edit of one (a cancellation, a new quantity) is an
event (``customer.subscription.updated``), which Stripe lists in its Events API for 30
days only; following those is not done here.

Fields are Stripe's own, nested objects flattened one level (``metadata.keyrack_id``,
``address.city``); a subscription also gets the first item's plan (``plan_id``,
``plan_nickname``, ``plan_amount``, ``plan_interval``, ``plan_interval_count``,
``quantity``), a ``name`` (the plan's nickname, else its product, else the id) and its
recurring revenue over all items (``recurring_revenue``): ``plan.amount`` times the quantity
(``price.unit_amount`` when an item has no plan), normalised to
``annual_recurring_cents`` and ``monthly_recurring_cents``, and as
``recurring_amount_cents`` per ``recurring_interval`` (``month``, ``quarter`` or
``year`` when every item bills on that one, else per month). A customer's
``metadata.keyrack_id`` is its Keyrack id.

Auth: a secret or restricted key (``{"api_key": "sk_…"}``). A 401 is ``unauthorized``
(``expired`` for Stripe's ``api_key_expired``); a 429 waits ``Retry-After`` when sent,
else 1, 2, 4… seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from types import MappingProxyType
from typing import Any, ClassVar

import httpx
import stripe

from keyrack.integrations.connector import (
    KEYRACK,
    Direction,
    FieldMapping,
    Mappings,
    OutboundRecord,
    Probe,
    ProbeStatus,
    ProviderFailure,
    RecordType,
    RemoteRecord,
    TokenCallback,
    WriteOutcome,
    require,
)
from keyrack.integrations.session import ProviderSession, answer_json, probe_by, retry_after
from keyrack.integrations.watermarks import across, malformed

BASE_URL = "https://api.stripe.com"
PAGE_LIMIT = 100

OBJECTS: Mapping[RecordType, str] = {
    RecordType.CLIENTS: "customers",
    RecordType.CONTRACTS: "subscriptions",
}
PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}
INTERVALS = {("month", 1): "month", ("month", 3): "quarter", ("year", 1): "year"}

_IN = Direction.INBOUND
MAPPINGS = {
    (RecordType.CLIENTS, _IN): (FieldMapping("name", "name", "trim"),),
    (RecordType.CONTRACTS, _IN): (
        FieldMapping("name", "name", "trim"),
        FieldMapping("amount_cents", "annual_recurring_cents"),
        FieldMapping("currency", "currency", "upper"),
        FieldMapping("start_date", "start_date", "date"),
        FieldMapping("end_date", "ended_at", "date"),
        FieldMapping("recurring_amount_cents", "recurring_amount_cents"),
        FieldMapping("recurring_interval", "recurring_interval"),
    ),
}


def recurring_revenue(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The recurring revenue of a subscription's items, in cents (see the docstring)."""
    annual = Fraction(0)
    per_period = 0
    cadences = set()
    for item in items:
        plan = item.get("plan") or {}
        price = item.get("price") or {}
        recurring = price.get("recurring") or {}
        amount = plan.get("amount") if plan else price.get("unit_amount")
        interval = plan.get("interval") if plan else recurring.get("interval")
        count = int((plan.get("interval_count") if plan else recurring.get("interval_count")) or 1)
        if amount is None or interval not in PER_YEAR:
            continue
        charged = int(amount) * int(item.get("quantity") or 1)
        annual += Fraction(charged * PER_YEAR[str(interval)], count)
        per_period += charged
        cadences.add((str(interval), count))
    monthly = annual / 12
    interval = INTERVALS.get(next(iter(cadences))) if len(cadences) == 1 else None
    return {
        "annual_recurring_cents": _cents(annual),
        "monthly_recurring_cents": _cents(monthly),
        "recurring_amount_cents": per_period if interval else _cents(monthly),
        "recurring_interval": interval or "month",
    }


def _cents(value: Fraction) -> int:
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


class StripeDialect:
    provider = "stripe"

    def failure(self, response: httpx.Response) -> ProviderFailure:
        body = answer_json(response)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return ProviderFailure(
                response.text or response.reason_phrase, None, response.status_code
            )
        code = error.get("code") or error.get("type")
        return ProviderFailure(
            str(error.get("message", "")), code and str(code), response.status_code
        )

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code != 429:
            return None
        waited = retry_after(response)
        return waited if waited is not None else float(2**attempt)

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        if failure.code == "api_key_expired":
            return ProbeStatus.EXPIRED, "token-expired"
        if http_status == 403:
            return ProbeStatus.UNAUTHORIZED, "missing-permission"
        return ProbeStatus.UNAUTHORIZED, "credential-refused"


class _SessionHTTPClient(stripe.HTTPClient):
    """The Stripe library's HTTP client, sending through the connector's session: an
    error answer (but a 404, which ``get`` reads as "no such record") raises the
    session's exception, so the library never retries or words it."""

    name = "keyrack"

    def __init__(self, session: ProviderSession) -> None:
        super().__init__()
        self._session = session

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        response = self._session.request(
            method, url, content=post_data, headers=dict(headers or {}), authorized=False
        )
        if response.status_code != 404:
            self._session.check(response)
        return response.text, response.status_code, response.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        raise NotImplementedError("the Stripe connector reads no streams")

    def close(self) -> None:
        """The ``httpx.Client`` is the engine's to close."""


class StripeConnector:
    provider = "stripe"
    directions: ClassVar[Mapping[RecordType, frozenset[Direction]]] = MappingProxyType(
        {t: frozenset({Direction.INBOUND}) for t in OBJECTS}
    )
    mappings: ClassVar[Mappings] = MAPPINGS
    batch_size = PAGE_LIMIT

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
        if not credential.get("api_key"):
            raise ValueError("stripe needs an api_key credential (a secret or restricted key)")
        self._base = (base_url or BASE_URL).rstrip("/")
        self._session = ProviderSession(
            http, StripeDialect(), credential=credential, max_wait=max_wait
        )
        self.stats = self._session.stats
        self._stripe = stripe.StripeClient(
            str(credential["api_key"]),
            base_addresses={"api": self._base},
            http_client=_SessionHTTPClient(self._session),
            max_network_retries=0,
        )

    def __repr__(self) -> str:
        return f"StripeConnector(base_url={self._base!r})"

    def _list(self, name: str, **cursor: str) -> Any:
        params: Any = {"limit": PAGE_LIMIT, **cursor}
        if name == "subscriptions":
            params["status"] = "all"
            return self._stripe.v1.subscriptions.list(params)
        return self._stripe.v1.customers.list(params)

    def probe(self) -> Probe:
        return probe_by(lambda: self._stripe.v1.customers.list({"limit": 1}))

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        require(self, record_type, Direction.INBOUND)
        name = OBJECTS[record_type]

        def read(_: str, position: str | None) -> Iterator[tuple[RemoteRecord, str]]:
            for found, after in self._walk(name, position):
                yield self._record(record_type, found.to_dict(), ""), after

        for record, position in across([name], watermark, read):
            yield replace(record, watermark=position)

    def _walk(self, name: str, position: str | None) -> Iterator[tuple[Any, str]]:
        """The objects after ``position``: back from the anchor, then forward."""
        if position is None or position.startswith("back:"):
            if position is None:
                page = self._list(name)
                if not page.data:
                    return
                anchor = page.data[0].id
            else:
                _, anchor, after = _parts(position, 3)
                page = self._list(name, starting_after=after)
            while True:
                for n, found in enumerate(page.data):
                    last = n == len(page.data) - 1 and not page.has_more
                    yield found, f"fwd:{anchor}" if last else f"back:{anchor}:{found.id}"
                if not page.has_more or not page.data:
                    break
                page = self._list(name, starting_after=page.data[-1].id)
            newest = anchor
        else:
            _, newest = _parts(position, 2)
        while True:
            page = self._list(name, ending_before=newest)
            for found in reversed(page.data):
                yield found, f"fwd:{found.id}"
            if not page.data or not page.has_more:
                return
            newest = page.data[0].id

    def _record(
        self, record_type: RecordType, found: Mapping[str, Any], watermark: str
    ) -> RemoteRecord:
        fields = _flat(found)
        links: dict[RecordType, str] = {}
        if record_type is RecordType.CONTRACTS:
            items = (found.get("items") or {}).get("data") or []
            fields |= _plan(items[0] if items else {})
            fields |= recurring_revenue(items)
            fields["name"] = (
                fields.get("plan_nickname") or fields.get("plan_product") or found["id"]
            )
            customer = found.get("customer")
            if customer:
                links[RecordType.CLIENTS] = str(customer)
        name = str(fields.get("name") or fields.get("email") or found["id"])
        keyrack_id = fields.get("metadata.keyrack_id")
        return RemoteRecord(
            remote_id=str(found["id"]),
            watermark=watermark,
            name=name,
            fields=fields,
            external_ids={KEYRACK: str(keyrack_id)} if keyrack_id else {},
            links=links,
        )

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        require(self, record_type, Direction.INBOUND)
        name = OBJECTS[record_type]
        try:
            found: stripe.StripeObject = (
                self._stripe.v1.subscriptions.retrieve(remote_id)
                if name == "subscriptions"
                else self._stripe.v1.customers.retrieve(remote_id)
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise
        data = found.to_dict()
        if data.get("deleted"):
            return None
        return self._record(record_type, data, f"{name}=fwd:{data['id']}")

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        require(self, record_type, Direction.OUTBOUND)
        return []  # unreachable: Stripe syncs inbound only


def _parts(position: str, count: int) -> list[str]:
    parts = position.split(":", count - 1)
    if len(parts) != count or not all(parts):
        raise malformed(position)
    return parts


def _flat(found: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level values, nested objects one level down as ``parent.child``; lists dropped."""
    fields: dict[str, Any] = {}
    for key, value in found.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                if not isinstance(item, Mapping | list):
                    fields[f"{key}.{inner}"] = item
        elif not isinstance(value, list):
            fields[key] = value
    return fields


def _plan(item: Mapping[str, Any]) -> dict[str, Any]:
    plan = item.get("plan") or {}
    return {
        "plan_id": plan.get("id"),
        "plan_nickname": plan.get("nickname"),
        "plan_product": plan.get("product"),
        "plan_amount": plan.get("amount"),
        "plan_interval": plan.get("interval"),
        "plan_interval_count": plan.get("interval_count"),
        "quantity": item.get("quantity"),
    }
