"""What only the Stripe connector does, against localstripe through Stripe's official
library: subscriptions as contracts with recurring revenue, the forward walk over new
objects, and the credential and rate-limit answers of the auth gate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from keyrack.integrations.connector import (
    KEYRACK,
    OutboundRecord,
    ProbeStatus,
    ProviderRateLimited,
    RecordType,
)
from keyrack.integrations.connectors.stripe import recurring_revenue
from tests.fakes.base import SlidingWindow
from tests.fakes.stripe import StripeAuthGate, masked
from tests.integrations.peers import StripePeer, stripe_peer
from tests.integrations.stripe_order import StripeOrder

CLIENTS, CONTRACTS = RecordType.CLIENTS, RecordType.CONTRACTS


@pytest.fixture
def peer(stripe_proxies: tuple[StripeOrder, StripeAuthGate]) -> Iterator[StripePeer]:
    with stripe_peer(stripe_proxies) as found:
        yield found


def paying_customer(api: stripe.StripeClient, name: str) -> stripe.Customer:
    customer = api.v1.customers.create({"name": name, "metadata": {"keyrack_id": f"cli_{name}"}})
    card = api.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    api.v1.payment_methods.attach(card.id, {"customer": customer.id})
    api.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    return customer


def test_subscriptions_are_contracts_with_their_recurring_revenue(peer: StripePeer) -> None:
    api = peer.api()
    product = api.v1.products.create({"name": "Keyrack Pro"})

    def plan(amount: int, interval: str, count: int = 1, nickname: str | None = None) -> str:
        params = {"amount": amount, "currency": "usd", "interval": interval, "product": product.id}
        params |= {"interval_count": count} | ({"nickname": nickname} if nickname else {})
        return api.v1.plans.create(params).id  # type: ignore[arg-type]

    monthly, yearly, quarterly = (
        plan(4900, "month", nickname="Pro monthly"),
        plan(120000, "year"),
        plan(30000, "month", 3),
    )
    customers = [paying_customer(api, n) for n in ("acme", "globex", "initech")]
    made = [
        api.v1.subscriptions.create(
            {"customer": customers[0].id, "items": [{"plan": monthly, "quantity": 2}]}
        ),
        api.v1.subscriptions.create({"customer": customers[1].id, "items": [{"plan": yearly}]}),
        api.v1.subscriptions.create({"customer": customers[2].id, "items": [{"plan": quarterly}]}),
    ]
    peer.order.forget()

    connector = peer.connector()
    contracts = list(connector.changed_since(CONTRACTS, None))
    assert sorted(c.remote_id for c in contracts) == sorted(s.id for s in made)
    by_id = {c.remote_id: c for c in contracts}
    figures = [
        {
            k: by_id[s.id].fields[k]
            for k in (
                "recurring_amount_cents",
                "recurring_interval",
                "monthly_recurring_cents",
                "annual_recurring_cents",
            )
        }
        for s in made
    ]
    assert figures == [
        {
            "recurring_amount_cents": 9800,
            "recurring_interval": "month",
            "monthly_recurring_cents": 9800,
            "annual_recurring_cents": 117600,
        },
        {
            "recurring_amount_cents": 120000,
            "recurring_interval": "year",
            "monthly_recurring_cents": 10000,
            "annual_recurring_cents": 120000,
        },
        {
            "recurring_amount_cents": 30000,
            "recurring_interval": "quarter",
            "monthly_recurring_cents": 10000,
            "annual_recurring_cents": 120000,
        },
    ]
    first = by_id[made[0].id]
    assert first.links == {CLIENTS: customers[0].id}
    assert (first.name, first.fields["status"], first.fields["quantity"]) == (
        "Pro monthly",
        "active",
        2,
    )
    assert by_id[made[1].id].name == product.id  # no nickname: the product

    clients = list(connector.changed_since(CLIENTS, None))
    assert [c.external_ids for c in clients] == [
        {KEYRACK: "cli_initech"},
        {KEYRACK: "cli_globex"},
        {KEYRACK: "cli_acme"},
    ]  # the first walk goes from the newest back
    got = connector.get(CONTRACTS, made[2].id)
    assert got is not None and got.fields["recurring_interval"] == "quarter"


def test_objects_created_later_come_oldest_first_across_pages(peer: StripePeer) -> None:
    peer.seed_clients(5)
    connector = peer.connector()
    last = list(connector.changed_since(CLIENTS, None))[-1].watermark
    later = peer.seed_clients(230)
    records = list(connector.changed_since(CLIENTS, last))
    assert [r.remote_id for r in records] == later
    resumed = connector.changed_since(CLIENTS, records[150].watermark)
    assert [r.remote_id for r in resumed] == later[151:]
    assert list(connector.changed_since(CLIENTS, records[-1].watermark)) == []


def test_an_expired_key_is_expired_and_a_refused_one_unauthorized(peer: StripePeer) -> None:
    expired, refused = "sk_live_51Expired00005678", "rk_live_51Refused00001234"
    peer.gate.expired.add(expired)
    peer.gate.refused.add(refused)
    probe = peer.connector({"api_key": expired}).probe()
    assert (probe.status, probe.reason) == (ProbeStatus.EXPIRED, "token-expired")
    assert probe.failure is not None
    assert (probe.failure.code, probe.failure.message) == (
        "api_key_expired",
        f"Expired API Key provided: {masked(expired)}",
    )
    probe = peer.connector({"api_key": refused}).probe()
    assert (probe.status, probe.reason) == (ProbeStatus.UNAUTHORIZED, "credential-refused")
    assert probe.failure is not None and probe.failure.http_status == 401


def test_a_key_throttled_for_good_gives_up_after_max_wait(peer: StripePeer) -> None:
    peer.gate._window = SlidingWindow(1, 60.0)
    connector = peer.connector(max_wait=1.5)
    assert connector.probe().status is ProbeStatus.ACTIVE
    with pytest.raises(ProviderRateLimited) as raised:
        list(connector.changed_since(CLIENTS, None))
    assert raised.value.failure.code == "rate_limit"
    assert raised.value.retry_after == 2.0  # the wait it would have needed next
    assert connector.stats.rate_limit_wait_seconds == 1.0
    probe = connector.probe()
    assert (probe.status, probe.reason) == (ProbeStatus.UNREACHABLE, "rate-limited")


def test_stripe_is_read_only(peer: StripePeer) -> None:
    connector = peer.connector()
    with pytest.raises(ValueError, match="does not sync clients outbound"):
        connector.upsert(CLIENTS, [OutboundRecord("cli_1", {"name": "x"})])
    with pytest.raises(ValueError, match="does not sync contacts inbound"):
        list(connector.changed_since(RecordType.CONTACTS, None))


def test_a_deleted_customer_is_not_found(peer: StripePeer) -> None:
    (made,) = peer.seed_clients(1)
    peer.api().v1.customers.delete(made)
    assert peer.connector().get(CLIENTS, made) is None


def test_recurring_revenue_normalises_every_cadence() -> None:
    def item(amount: int, interval: str, count: int = 1, quantity: int = 1) -> dict:
        return {
            "plan": {"amount": amount, "interval": interval, "interval_count": count},
            "quantity": quantity,
        }

    assert recurring_revenue([item(1000, "week")]) == {
        "annual_recurring_cents": 52000,
        "monthly_recurring_cents": 4333,
        "recurring_amount_cents": 4333,  # weeks are not a Keyrack interval: per month
        "recurring_interval": "month",
    }
    mixed = recurring_revenue([item(4900, "month", quantity=3), item(120000, "year")])
    assert mixed == {
        "annual_recurring_cents": 296400,
        "monthly_recurring_cents": 24700,
        "recurring_amount_cents": 24700,
        "recurring_interval": "month",
    }
    priced = {"price": {"unit_amount": 2500, "recurring": {"interval": "month"}}, "quantity": 4}
    assert recurring_revenue([priced])["recurring_amount_cents"] == 10000
    assert recurring_revenue([item(100, "day", 2)])["annual_recurring_cents"] == 18250
    assert recurring_revenue([])["annual_recurring_cents"] == 0
