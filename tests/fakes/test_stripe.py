"""localstripe driven by Stripe's official library, and the auth gate's credential failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from tests.fakes.stripe import masked, reset, shared_localstripe, stripe_auth_gate


@pytest.fixture
def localstripe_url() -> Iterator[str]:
    url = shared_localstripe()
    reset(url)
    yield url


def client(url: str, key: str = "sk_test_keyrack0001") -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)


def paying_customer(api: stripe.StripeClient, email: str) -> stripe.Customer:
    customer = api.v1.customers.create({"email": email, "name": email.split("@")[0]})
    card = api.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    api.v1.payment_methods.attach(card.id, {"customer": customer.id})
    api.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": card.id}})
    return customer


def test_customers_products_plans_and_subscriptions_round_trip(localstripe_url: str) -> None:
    api = client(localstripe_url)
    customers = [paying_customer(api, f"c{n}@example.com") for n in range(3)]
    product = api.v1.products.create({"name": "Keyrack Pro"})
    plan = api.v1.plans.create(
        {"amount": 4900, "currency": "usd", "interval": "month", "product": product.id}
    )
    subscription = api.v1.subscriptions.create(
        {"customer": customers[0].id, "items": [{"plan": plan.id}]}
    )
    assert subscription.status == "active"
    item = subscription["items"].data[0]
    assert (item.plan.amount, item.plan.interval) == (4900, "month")

    listed = [c.id for c in api.v1.customers.list({"limit": 2}).auto_paging_iter()]
    assert sorted(listed) == sorted(c.id for c in customers)
    assert api.v1.customers.list({"limit": 2}).has_more is True
    (found,) = api.v1.subscriptions.list({"customer": customers[0].id}).data
    assert found.id == subscription.id
    assert api.v1.customers.retrieve(customers[1].id).email == "c1@example.com"


def test_prices_are_not_served_and_subscriptions_need_a_payment_method(
    localstripe_url: str,
) -> None:
    api = client(localstripe_url)
    product = api.v1.products.create({"name": "P"})
    with pytest.raises(stripe.APIError) as raised:
        api.v1.prices.create(
            {
                "unit_amount": 100,
                "currency": "usd",
                "recurring": {"interval": "month"},
                "product": product.id,
            }
        )
    assert raised.value.http_status == 404
    plan = api.v1.plans.create(
        {"amount": 100, "currency": "usd", "interval": "month", "product": product.id}
    )
    bare = api.v1.customers.create({"email": "bare@example.com"})
    with pytest.raises(stripe.InvalidRequestError, match="no payment method"):
        api.v1.subscriptions.create({"customer": bare.id, "items": [{"plan": plan.id}]})


def test_localstripe_accepts_any_key(localstripe_url: str) -> None:
    assert client(localstripe_url, "sk_test_anything").v1.customers.list().data == []


def test_the_gate_answers_stripes_401_for_refused_and_expired_keys(localstripe_url: str) -> None:
    with stripe_auth_gate(
        localstripe_url, refused={"sk_test_revoked1234"}, expired={"sk_live_old_5678"}
    ) as gate:
        with pytest.raises(stripe.AuthenticationError) as raised:
            client(gate.base_url, "sk_test_revoked1234").v1.customers.list()
        assert raised.value.http_status == 401
        assert raised.value.json_body == {
            "error": {
                "message": "Invalid API Key provided: sk_test_****1234",
                "type": "invalid_request_error",
            }
        }
        with pytest.raises(stripe.AuthenticationError) as raised:
            client(gate.base_url, "sk_live_old_5678").v1.customers.list()
        assert raised.value.json_body["error"]["code"] == "api_key_expired"

        made = client(gate.base_url).v1.customers.create({"email": "through@example.com"})
        assert client(localstripe_url).v1.customers.retrieve(made.id).email == (
            "through@example.com"
        )


def test_the_gate_throttles_chosen_keys_and_past_a_window(localstripe_url: str) -> None:
    with stripe_auth_gate(localstripe_url, throttled={"sk_test_busy0000"}, limit=(2, 60.0)) as gate:
        with pytest.raises(stripe.RateLimitError) as raised:
            client(gate.base_url, "sk_test_busy0000").v1.customers.list()
        assert raised.value.http_status == 429
        assert raised.value.json_body["error"]["code"] == "rate_limit"
        api = client(gate.base_url)
        api.v1.customers.list()
        api.v1.customers.list()
        with pytest.raises(stripe.RateLimitError):
            api.v1.customers.list()


def test_masked_keys_keep_prefix_and_last_four() -> None:
    assert masked("sk_test_51Habcdefgh1234") == "sk_test_****1234"
    assert masked("rk_live_xyz9876") == "rk_live_****9876"
