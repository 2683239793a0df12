"""Each connector's test peer behind one small steering interface, for the contract suite.

A peer is a provider fake on a real socket plus what a test needs to steer it the way
the provider's own behaviour would: seed records, change one, refuse the credential,
expire an OAuth access token, revoke a refresh token, rate-limit, fail with a 5xx,
delete a field. ``secrets`` lists every secret the peer handed out, for the tests that
grep for them.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe
from starlette.types import ASGIApp, Receive, Scope, Send

from keyrack.integrations.connector import Connector, OutboundRecord, ProbeStatus
from keyrack.integrations.connectors import connector_for
from tests.fakes.base import SlidingWindow, loopback_certificate, serve
from tests.fakes.hubspot import INVALID_AUTHENTICATION, HubSpotFake
from tests.fakes.salesforce import SalesforceFake
from tests.fakes.stripe import StripeAuthGate, masked, reset, shared_localstripe, stripe_auth_gate
from tests.integrations.far_keyrack import FarKeyrack
from tests.integrations.stripe_order import StripeOrder, stripe_order

START = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
HUBSPOT_OBJECTS = ("companies", "contacts", "deals", "notes", "calls", "meetings", "emails")
SALESFORCE_OBJECTS = ("Account", "Contact", "Opportunity", "Task", "Event")


@dataclass
class Refusal:
    """What a refused credential must probe as."""

    statuses: set[ProbeStatus]
    message: str
    http_status: int


@dataclass
class Peer:
    name: str
    http: httpx.Client
    base_url: str
    credential: dict[str, Any]
    secrets: set[str] = field(default_factory=set)
    issued: list[dict[str, Any]] = field(default_factory=list)  # what on_token got

    def connector(self, credential: dict[str, Any] | None = None, **options: Any) -> Connector:
        credential = credential or self.credential
        self.secrets |= {str(v) for k, v in credential.items() if k in SECRET_KEYS and v}
        return connector_for(self.name)(
            credential=credential,
            http=self.http,
            base_url=self.base_url,
            on_token=self._issued,
            **options,
        )

    def _issued(self, credential: dict[str, Any]) -> None:
        self.issued.append(credential)
        self.secrets |= {str(v) for k, v in credential.items() if k in SECRET_KEYS and v}

    # steering, per provider

    def seed_clients(self, count: int) -> list[str]:
        raise NotImplementedError

    def change(self, remote_id: str) -> str:
        """Make a change after every seeded one; the remote id that now comes next."""
        raise NotImplementedError

    def refuse(self) -> Refusal:
        raise NotImplementedError

    def rate_limit(self) -> None:
        """The next call but one is answered 429 (once), with a short wait."""
        raise NotImplementedError

    def fail_next(self, status: int) -> None:
        raise NotImplementedError


SECRET_KEYS = ("api_key", "access_token", "refresh_token", "client_secret")


@dataclass
class WritablePeer(Peer):
    """A provider Keyrack also writes to.

    ``oauth``: it takes OAuth2 credentials (the refresh tests run on it).
    ``per_record``: it has no batch write, so each record costs its own read-back and write.
    ``fixed_fields``: its fields cannot be deleted or renamed (``remove_field`` is moot).
    """

    oauth: bool = True
    per_record: bool = False
    fixed_fields: bool = False

    def oauth_credential(self) -> dict[str, Any]:
        raise NotImplementedError

    def expire(self, credential: dict[str, Any]) -> None:
        raise NotImplementedError

    def revoke_refresh(self, credential: dict[str, Any]) -> tuple[str, str]:
        """Revoke the refresh token; the provider's (message, code) for the refusal."""
        raise NotImplementedError

    def clients(self, keys: list[str], suffix: str = "") -> list[OutboundRecord]:
        raise NotImplementedError

    def bad_client(self, key: str) -> tuple[OutboundRecord, str, str]:
        """A client the provider refuses, with its exact (message, code)."""
        raise NotImplementedError

    def remove_field(self, how: str) -> tuple[str, str, str]:
        """Delete or rename the field the clients' ``revenue`` maps to: (field, message
        prefix, code) of the provider's refusal of a write naming it."""
        raise NotImplementedError

    def stamp(self, remote_id: str) -> Any:
        """The record's modification time as the provider holds it."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError


@dataclass
class HubSpotPeer(WritablePeer):
    fake: HubSpotFake = field(default=None)  # type: ignore[assignment]

    def seed_clients(self, count: int) -> list[str]:
        return self.fake.seed(
            "companies",
            ({"name": f"Company {n}"} for n in range(count)),
            modified_at=START,
            step=dt.timedelta(milliseconds=1),
        )

    def change(self, remote_id: str) -> str:
        self.fake.touch("companies", remote_id)
        return remote_id

    def refuse(self) -> Refusal:
        self.fake.revoke(self.credential["api_key"])
        return Refusal({ProbeStatus.UNAUTHORIZED}, INVALID_AUTHENTICATION, 401)

    def rate_limit(self) -> None:
        self.fake.set_rate_limit(1, 1.0)

    def fail_next(self, status: int) -> None:
        self.fake.fail_next(status)

    def oauth_credential(self) -> dict[str, Any]:
        app = self.fake.oauth_app(client_id="keyrack-app", client_secret="hubspot-app-secret-1")
        refresh = self.fake.refresh_token(app.client_id)
        return {
            "access_token": self.fake.access_token(refresh),
            "refresh_token": refresh,
            "expires_at": int(time.time()) + 1800,
            "token_url": f"{self.base_url}/oauth/v1/token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        }

    def expire(self, credential: dict[str, Any]) -> None:
        self.fake.expire(credential["access_token"])

    def revoke_refresh(self, credential: dict[str, Any]) -> tuple[str, str]:
        self.fake.revoke(credential["refresh_token"])
        return "missing or invalid refresh token", "BAD_REFRESH_TOKEN"

    def clients(self, keys: list[str], suffix: str = "") -> list[OutboundRecord]:
        return [
            OutboundRecord(key, {"name": f"Client {key}{suffix}", "annualrevenue": 1200})
            for key in keys
        ]

    def bad_client(self, key: str) -> tuple[OutboundRecord, str, str]:
        record = OutboundRecord(key, {"name": "Bad", "colour": "red"})
        return record, 'Property values were not valid: [{"isValid":false', "VALIDATION_ERROR"

    def remove_field(self, how: str) -> tuple[str, str, str]:
        if how == "delete":
            self.fake.delete_property("companies", "annualrevenue")
        else:
            self.fake.rename_property("companies", "annualrevenue", "annual_revenue")
        return (
            "annualrevenue",
            'Property values were not valid: [{"isValid":false,"message":"Property '
            '\\"annualrevenue\\" does not exist"',
            "VALIDATION_ERROR",
        )

    def stamp(self, remote_id: str) -> Any:
        held = self.fake.record("companies", remote_id)
        return held and held["hs_lastmodifieddate"]

    def count(self) -> int:
        return self.fake.count("companies")


@dataclass
class SalesforcePeer(WritablePeer):
    fake: SalesforceFake = field(default=None)  # type: ignore[assignment]

    def seed_clients(self, count: int) -> list[str]:
        return self.fake.seed(
            "Account",
            ({"Name": f"Account {n}"} for n in range(count)),
            modified_at=START,
            step=dt.timedelta(milliseconds=1),
        )

    def change(self, remote_id: str) -> str:
        self.fake.system_touch("Account", remote_id)
        return remote_id

    def refuse(self) -> Refusal:
        self.fake.revoke(self.credential["refresh_token"])
        return Refusal({ProbeStatus.REVOKED}, "expired access/refresh token", 400)

    def rate_limit(self) -> None:
        self.fake.fail_next(429)

    def fail_next(self, status: int) -> None:
        self.fake.fail_next(status)

    def oauth_credential(self) -> dict[str, Any]:
        app = self.fake.connected_app(client_secret="salesforce-consumer-secret-1")
        refresh = self.fake.refresh_token(app.client_id)
        return {
            "access_token": self.fake.session(refresh),
            "refresh_token": refresh,
            "expires_at": None,
            "token_url": f"{self.base_url}/services/oauth2/token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        }

    def expire(self, credential: dict[str, Any]) -> None:
        self.fake.expire(credential["access_token"])

    def revoke_refresh(self, credential: dict[str, Any]) -> tuple[str, str]:
        self.fake.revoke(credential["refresh_token"])
        return "expired access/refresh token", "invalid_grant"

    def clients(self, keys: list[str], suffix: str = "") -> list[OutboundRecord]:
        return [
            OutboundRecord(key, {"Name": f"Client {key}{suffix}", "AnnualRevenue": 1200})
            for key in keys
        ]

    def bad_client(self, key: str) -> tuple[OutboundRecord, str, str]:
        record = OutboundRecord(key, {"Name": "Bad", "AnnualRevenue": "lots"})
        return (
            record,
            "Cannot deserialize instance of double from VALUE_STRING value lots or request "
            "may be missing a required field",
            "JSON_PARSER_ERROR",
        )

    def remove_field(self, how: str) -> tuple[str, str, str]:
        if how == "delete":
            self.fake.delete_field("Account", "AnnualRevenue")
        else:
            self.fake.rename_field("Account", "AnnualRevenue", "Annual_Revenue__c")
        return (
            "AnnualRevenue",
            "No such column 'AnnualRevenue' on sobject of type Account",
            "INVALID_FIELD",
        )

    def stamp(self, remote_id: str) -> Any:
        held = self.fake.record("Account", remote_id)
        return held and held["SystemModstamp"]

    def count(self) -> int:
        return self.fake.count("Account")


@dataclass
class KeyrackPeer(WritablePeer):
    """Another real Keyrack (``far_keyrack``): its own database, app and socket."""

    far: FarKeyrack = field(default=None)  # type: ignore[assignment]
    oauth: bool = False
    per_record: bool = True
    fixed_fields: bool = True

    def seed_clients(self, count: int) -> list[str]:
        return self.far.seed_clients(count, per_transaction=30)  # stamps shared, across pages

    def change(self, remote_id: str) -> str:
        self.far.rename(remote_id, "Changed")
        return remote_id

    def refuse(self) -> Refusal:
        self.far.revoke()
        return Refusal({ProbeStatus.REVOKED}, "Revoked API key: the API key has been revoked", 401)

    def rate_limit(self) -> None:
        """The key down to 1 request/s, and its budget spent by another user of the key."""
        self.far.limit(self.far.seeded.key.ref, 1)
        self.far.spend(self.far.secret)

    def fail_next(self, status: int) -> None:
        self.far.faults.pending.append(status)

    def clients(self, keys: list[str], suffix: str = "") -> list[OutboundRecord]:
        return [
            OutboundRecord(key, {"name": f"Client {key}{suffix}", "arr_cents": 1200})
            for key in keys
        ]

    def bad_client(self, key: str) -> tuple[OutboundRecord, str, str]:
        record = OutboundRecord(key, {"name": "Bad", "arr_cents": -5})
        message = "Invalid request: body.arr_cents: Input should be greater than or equal to 0"
        return record, message, "validation-error"

    def stamp(self, remote_id: str) -> Any:
        return self.far.client(remote_id).updated_at

    def count(self) -> int:
        return len(self.far.all_clients())


@dataclass
class StripePeer(Peer):
    gate: StripeAuthGate = field(default=None)  # type: ignore[assignment]
    order: StripeOrder = field(default=None)  # type: ignore[assignment]
    upstream: str = ""

    def api(self) -> stripe.StripeClient:
        """The official library straight at localstripe, to seed it (then ``forget``)."""
        return stripe.StripeClient(
            "sk_test_seeding0000", base_addresses={"api": self.upstream}, max_network_retries=0
        )

    def seed_clients(self, count: int) -> list[str]:
        api = self.api()
        made = [
            api.v1.customers.create({"name": f"Customer {n}", "email": f"c{n}@example.com"}).id
            for n in range(count)
        ]
        self.order.forget()
        return made

    def change(self, remote_id: str) -> str:
        made = self.api().v1.customers.create({"name": "Newcomer"}).id
        self.order.forget()
        return made

    def refuse(self) -> Refusal:
        key = self.credential["api_key"]
        self.gate.refused.add(key)
        return Refusal({ProbeStatus.UNAUTHORIZED}, f"Invalid API Key provided: {masked(key)}", 401)

    def rate_limit(self) -> None:
        self.gate._window = SlidingWindow(1, 1.0)  # the gate's own limiter, set late

    def fail_next(self, status: int) -> None:
        self.order.fail_next(status)


class Stage:
    """An ASGI app that serves whichever fake is on stage: one server per process, a
    fresh fake (fresh state) per test, without a server start and stop for each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.base_url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@contextmanager
def stage(tls: bool = False) -> Iterator[Stage]:
    server = Stage(HubSpotFake().app)
    with serve(server, tls=tls) as url:
        server.base_url = url
        yield server


@contextmanager
def hubspot_peer(on: Stage, **options: Any) -> Iterator[HubSpotPeer]:
    limits = {"rate_limit": (10_000, 10.0), "search_rate_limit": (10_000, 1.0)}
    fake = HubSpotFake(**(limits | options))
    fake.base_url = on.base_url
    on.app = fake.app
    for name in HUBSPOT_OBJECTS:
        fake.add_property(name, "keyrack_id", unique=True)
    with httpx.Client() as http:
        yield HubSpotPeer(
            "hubspot", http, fake.base_url, {"api_key": fake.private_app_token()}, fake=fake
        )


@contextmanager
def salesforce_peer(on: Stage, **options: Any) -> Iterator[SalesforcePeer]:
    fake = SalesforceFake(**({"query_batch_size": 200} | options))
    fake.base_url = on.base_url
    on.app = fake.app
    for name in SALESFORCE_OBJECTS:
        fake.add_field(name, "Keyrack_Id__c", external_id=True, unique=True)
    verify = ssl.create_default_context(cafile=loopback_certificate()[0])
    with httpx.Client(verify=verify) as http:
        peer = SalesforcePeer("salesforce", http, fake.base_url, {}, fake=fake)
        peer.credential = peer.oauth_credential()
        yield peer


@contextmanager
def stripe_servers() -> Iterator[tuple[StripeOrder, StripeAuthGate]]:
    """The Stripe order proxy and auth gate in front of this process's localstripe."""
    with (
        stripe_order(shared_localstripe()) as order,
        stripe_auth_gate(order.base_url) as gate,
    ):
        yield order, gate


@contextmanager
def stripe_peer(servers: tuple[StripeOrder, StripeAuthGate]) -> Iterator[StripePeer]:
    order, gate = servers
    upstream = shared_localstripe()
    reset(upstream)
    order.faults.clear()
    order.forget()
    gate.refused.clear()
    gate.expired.clear()
    gate.throttled.clear()
    gate._window = None
    with httpx.Client() as http:
        yield StripePeer(
            "stripe",
            http,
            gate.base_url,
            {"api_key": "sk_test_51KeyrackContract0001"},
            gate=gate,
            order=order,
            upstream=upstream,
        )


@contextmanager
def keyrack_peer(far: FarKeyrack) -> Iterator[KeyrackPeer]:
    with httpx.Client(timeout=10) as http:
        yield KeyrackPeer("keyrack", http, far.url, {"api_key": far.secret}, far=far)


PROVIDERS = ("hubspot", "salesforce", "stripe", "keyrack")
WRITABLE = ("hubspot", "salesforce", "keyrack")
OAUTH = ("hubspot", "salesforce")
