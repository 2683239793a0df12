"""``redact``: secrets out of headers, URLs, form and JSON bodies, at any depth, and the
provider's own words left as they were."""

from __future__ import annotations

import json
import string
from urllib.parse import quote, urlencode

from hypothesis import given
from hypothesis import strategies as st

from keyrack.integrations.redaction import REDACTED, redact

TOKEN = "pat-na1-5f2c9d1e-77ab-4c1d-9e0f-123456789abc"


def test_headers_naming_a_secret_are_redacted_whatever_their_case() -> None:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "x-api-key": "k",
        "Cookie": "session=abc",
        "Keyrack-Signature": "t=1767603600,v1=4c2da3b5",
        "Content-Type": "application/json",
    }
    assert redact(headers) == {
        "Authorization": REDACTED,
        "x-api-key": REDACTED,
        "Cookie": REDACTED,
        "Keyrack-Signature": REDACTED,
        "Content-Type": "application/json",
    }


def test_form_bodies_and_query_strings_lose_their_secret_values() -> None:
    form = urlencode(
        {
            "grant_type": "refresh_token",
            "refresh_token": "na1-8f3e-secret",
            "client_id": "keyrack-app",
            "client_secret": "s3cr3t",
        }
    )
    assert redact(form) == (
        "grant_type=refresh_token&refresh_token=[redacted]&client_id=keyrack-app"
        "&client_secret=[redacted]"
    )
    url = "https://api.example/v1/things?api_key=abcdef123456&limit=10&hapikey=xyz"
    assert redact(url) == (
        "https://api.example/v1/things?api_key=[redacted]&limit=10&hapikey=[redacted]"
    )


def test_json_bodies_keep_their_shape_and_lose_their_secrets() -> None:
    body = json.dumps(
        {
            "access_token": "C" + "x" * 40,
            "refresh_token": "r",
            "expires_in": 1800,
            "nested": {"apiKey": "k", "items": [{"password": "p", "name": "kept"}]},
        }
    )
    redacted = json.loads(redact(body))
    assert redacted == {
        "access_token": REDACTED,
        "refresh_token": REDACTED,
        "expires_in": 1800,
        "nested": {"apiKey": REDACTED, "items": [{"password": REDACTED, "name": "kept"}]},
    }


def test_structures_are_redacted_at_any_depth() -> None:
    value = {"request": {"headers": [("Authorization", "Basic dXNlcjpwYXNzd29yZA==")]}}
    assert redact(value) == {"request": {"headers": [("Authorization", f"Basic {REDACTED}")]}}
    assert redact({"client_secret": {"deep": "x"}}) == {"client_secret": REDACTED}
    assert redact([1, None, 2.5, True]) == [1, None, 2.5, True]


def test_a_known_secret_is_redacted_wherever_it_stands_also_url_encoded() -> None:
    secret = "00D5g000004ABCD!AQ0AQ/x+y=z"
    text = f"session {secret} in text and {quote(secret, safe='')} in a URL"
    assert redact(text, [secret]) == f"session {REDACTED} in text and {REDACTED} in a URL"
    assert redact("short ab", ["ab"]) == "short ab"  # too short to search for


def test_providers_messages_are_left_exactly_as_they_were() -> None:
    messages = [
        "Authentication credentials not found. This API supports OAuth 2.0 authentication "
        "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
        "oauth-overview",
        "The OAuth token used to make this call expired 0 second(s) ago.",
        "missing or invalid refresh token",
        "Session expired or invalid",
        "expired access/refresh token",
        "Invalid API Key provided: sk_test_****1234",
        "No such column 'AnnualRevenue' on sobject of type Account",
    ]
    assert [redact(m) for m in messages] == messages


SECRETS = st.text(string.ascii_letters + string.digits + "-_.!/+=~", min_size=8, max_size=60)
NOISE = st.text(string.printable, max_size=40)


@given(secret=SECRETS, before=NOISE, after=NOISE)
def test_a_known_secret_never_survives(secret: str, before: str, after: str) -> None:
    shapes = [
        f"{before}{secret}{after}",
        f"{before}Bearer {secret}{after}",
        f"{before}?token={quote(secret, safe='')}&{after}",
        json.dumps({"note": before, "value": secret, "tail": after}),
    ]
    for shape in shapes:
        assert secret not in redact(shape, [secret])
        assert quote(secret, safe="") not in redact(shape, [secret])


@given(name=st.sampled_from(["access_token", "refresh_token", "client_secret", "api_key"]))
def test_a_secret_named_in_a_body_never_survives(name: str) -> None:
    value = "V4lue-" + name
    for shape in (f"{name}={value}&x=1", json.dumps({name: value}), f"'{name}': '{value}'"):
        assert value not in redact(shape)
