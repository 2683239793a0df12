"""The ``webhook`` connector against a real receiver on a loopback socket, which checks
and reads every POST with the connector's own inbound side (``receive``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from keyrack.domain import webhooks
from keyrack.errors import InvalidInput, PayloadTooLarge
from keyrack.integrations.connector import (
    EngagementKind,
    OutboundRecord,
    ProbeStatus,
    ProviderUnavailable,
    RecordType,
    WriteResult,
)
from keyrack.integrations.connectors import connector_for
from keyrack.integrations.connectors.webhook import (
    MAX_RECORDS,
    InvalidSignature,
    Received,
    new_signing_secret,
    receive,
)
from keyrack.problems import STATUS_BY_CODE
from tests.live import serve_in_thread

CLIENTS, CONTACTS, ENGAGEMENTS = RecordType.CLIENTS, RecordType.CONTACTS, RecordType.ENGAGEMENTS


@dataclass
class Receiver:
    """A webhook receiver: checks each POST's signature, keeps its records, and answers
    what ``answers`` says (then 201 for an id it has not seen, else 200)."""

    secret: str
    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    got: list[Received] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive_: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive_()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.headers.append(headers)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answers:
            status, text, extra = self.answers.pop(0)
        else:
            try:
                records = receive(self.secret, body, headers.get("keyrack-signature"))
            except (InvalidSignature, InvalidInput) as refused:
                status, text, extra = 400, refused.detail, {}
            else:
                seen = {r.record.remote_id for r in self.got}
                self.got += records
                new = records[0].record.remote_id not in seen
                status, text, extra = (
                    (201 if new else 200),
                    json.dumps({"id": f"r-{len(seen)}"}),
                    {},
                )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")]
                + [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        await send({"type": "http.response.body", "body": text.encode()})


@pytest.fixture(autouse=True)
def _clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


OPEN: list[httpx.Client] = []


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver(new_signing_secret())
    with serve_in_thread(hook) as url:
        yield hook, f"{url}/hooks/keyrack"


def connector(hook: Receiver, url: str, timeout: float = 5.0) -> Any:
    http = httpx.Client(timeout=timeout)
    OPEN.append(http)
    return connector_for("webhook")(
        credential={"signing_secret": hook.secret}, http=http, base_url=url
    )


def clients(*keys: str) -> list[OutboundRecord]:
    return [OutboundRecord(k, {"name": f"Client {k}", "arr_cents": 1200}) for k in keys]


def test_each_record_is_posted_signed_and_read_back_by_the_inbound_side(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    out = connector(hook, url)
    assert out.probe() == (ProbeStatus.ACTIVE, "ok", None, None)
    assert out.stats.api_calls == 0  # nothing to probe
    outcomes = out.upsert(CLIENTS, clients("cli_1", "cli_2"))
    assert [(o.result, o.remote_id) for o in outcomes] == [
        (WriteResult.CREATED, "r-0"),
        (WriteResult.CREATED, "r-1"),
    ]
    assert [(r.record_type, r.record.remote_id, r.record.fields) for r in hook.got] == [
        (CLIENTS, "cli_1", {"name": "Client cli_1", "arr_cents": 1200}),
        (CLIENTS, "cli_2", {"name": "Client cli_2", "arr_cents": 1200}),
    ]
    assert hook.got[0].record.external_ids == {"keyrack": "cli_1"}
    assert all(h["keyrack-event-type"] == "sync.record" for h in hook.headers)

    again = out.upsert(CLIENTS, clients("cli_1"))
    assert [o.result for o in again] == [WriteResult.UPDATED]
    ids = [h["keyrack-event-id"] for h in hook.headers]
    assert ids[2] == ids[0] != ids[1]  # the same content, the same id: a repeat to drop
    assert out.stats.api_calls == 3

    (call,) = out.upsert(
        ENGAGEMENTS,
        [
            OutboundRecord(
                "eng_1",
                {"subject": "Kick-off"},
                {CLIENTS: "r-0", CONTACTS: "c-9"},
                EngagementKind.MEETING,
            )
        ],
    )
    assert call.result is WriteResult.CREATED
    got = hook.got[-1]
    assert got.record_type is ENGAGEMENTS
    assert got.record.kind is EngagementKind.MEETING
    assert got.record.links == {CLIENTS: "r-0", CONTACTS: "c-9"}
    assert got.record.name == "Kick-off"


def test_a_4xx_fails_that_record_alone_with_the_receivers_words(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    out = connector(hook, url)
    hook.answers = [(201, "", {}), (422, '{"error": "unknown_customer", "detail": "no such"}', {})]
    outcomes = out.upsert(CLIENTS, clients("cli_1", "cli_2", "cli_3"))
    assert [o.result for o in outcomes] == [
        WriteResult.CREATED,
        WriteResult.FAILED,
        WriteResult.CREATED,
    ]
    failed = outcomes[1]
    assert failed.failure is not None
    assert failed.failure.message == '{"error": "unknown_customer", "detail": "no such"}'
    assert (failed.failure.code, failed.failure.http_status) == ("unknown_customer", 422)
    assert failed.exchange is not None and "cli_2" in (failed.exchange.request_body or "")
    assert outcomes[0].remote_id is None  # an answer without an id


def test_a_receiver_that_refuses_the_signature_fails_each_record_with_its_reason(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    out = connector(hook, url)
    hook.secret = new_signing_secret()  # the receiver holds another secret
    (outcome,) = out.upsert(CLIENTS, clients("cli_1"))
    assert outcome.result is WriteResult.FAILED
    assert outcome.failure is not None
    assert outcome.failure.message == (
        "Keyrack-Signature does not match the body under this connection's signing secret"
    )


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_raises_provider_unavailable(receiver: tuple[Receiver, str], status: int) -> None:
    hook, url = receiver
    hook.answers = [(status, "down for maintenance", {})]
    with pytest.raises(ProviderUnavailable) as raised:
        connector(hook, url).upsert(CLIENTS, clients("cli_1"))
    assert raised.value.failure.http_status == status
    assert raised.value.failure.message == "down for maintenance"


def test_a_timeout_or_no_receiver_raises_provider_unavailable(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    hook.delay = 1.0
    with pytest.raises(ProviderUnavailable) as raised:
        connector(hook, url, timeout=0.2).upsert(CLIENTS, clients("cli_1"))
    assert raised.value.reason == "timeout"
    with pytest.raises(ProviderUnavailable) as raised:
        connector(hook, "http://127.0.0.1:9/hook").upsert(CLIENTS, clients("cli_1"))
    assert raised.value.reason == "connection-failed"


def test_a_429_is_waited_out_and_counted(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.answers = [(429, "slow down", {"Retry-After": "1"})]
    out = connector(hook, url)
    (outcome,) = out.upsert(CLIENTS, clients("cli_1"))
    assert outcome.result is WriteResult.CREATED
    assert out.stats.api_calls == 2
    assert out.stats.rate_limit_wait_seconds == 1.0
    assert len(hook.got) == 1


def test_no_secret_or_signature_in_any_outcome_exception_log_or_repr(
    receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook, url = receiver
    out = connector(hook, url)
    hook.answers = [(201, "", {}), (400, f"bad, and your secret is {hook.secret}", {})]
    seen: list[object] = [out, out.probe(), *out.upsert(CLIENTS, clients("cli_1", "cli_2"))]
    hook.answers = [(503, f"down; {hook.secret}", {})]
    with pytest.raises(ProviderUnavailable) as raised:
        out.upsert(CLIENTS, clients("cli_3"))
    seen += [raised.value, str(raised.value), raised.value.failure, raised.value.exchange]
    text = repr(seen) + caplog.text
    assert hook.secret not in text
    signatures = [h["keyrack-signature"] for h in hook.headers]
    assert signatures and not any(s in text for s in signatures)
    assert "[redacted]" in text


# ---- inbound ----------------------------------------------------------------------------

SECRET = "whsec_inbound-test-secret-000000000000"
NOW = 1_767_603_600


def signed(body: Any, *, at: int = NOW, secret: str = SECRET) -> tuple[bytes, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, webhooks.sign(secret, raw, at)


def test_one_record_or_a_list_is_read_into_records() -> None:
    one = {"record_type": "clients", "id": 42, "fields": {"name": "Initech"}}
    (got,) = receive(SECRET, *signed(one), now=NOW)
    assert (got.record_type, got.record.remote_id, got.record.name) == (CLIENTS, "42", "Initech")
    many = [
        one,
        {
            "record_type": "engagements",
            "id": "e-1",
            "kind": "call",
            "name": "Call with Peter",
            "links": {"clients": "42"},
            "external_ids": {"hubspot": "901"},
        },
    ]
    first, second = receive(SECRET, *signed(many), now=NOW + 299)
    assert first.record == got.record
    assert second.record.kind is EngagementKind.CALL
    assert second.record.links == {CLIENTS: "42"}
    assert second.record.external_ids == {"hubspot": "901"}
    assert second.record.name == "Call with Peter"


@pytest.mark.parametrize(
    ("header", "now", "message"),
    [
        (None, NOW, "the request carries no Keyrack-Signature header"),
        ("v1=abc", NOW, "Keyrack-Signature is not t=<unix seconds>,v1=<hex signature>"),
        ("t=1767603600", NOW, "Keyrack-Signature is not t="),
        ("t=1767603600,v1=00ff", NOW, "does not match the body"),
        ("good", NOW + 301, "made 301 s from now: more than the 300 s allowed"),
        ("good", NOW - 301, "made 301 s from now"),
        ("other secret", NOW, "does not match the body"),
        ("tampered", NOW, "does not match the body"),
    ],
)
def test_a_post_not_signed_with_the_secret_just_now_is_refused(
    header: str | None, now: int, message: str
) -> None:
    body, signature = signed({"record_type": "clients", "id": "1"})
    if header == "good":
        header = signature
    elif header == "other secret":
        header = signed(body, secret=new_signing_secret())[1]
    elif header == "tampered":
        header, body = signature, body.replace(b'"1"', b'"2"')
    with pytest.raises(InvalidSignature, match=message) as raised:
        receive(SECRET, body, header, now=now)
    assert STATUS_BY_CODE[raised.value.code] == 401
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not UTF-8 text"),
        (b"[]", "the body holds no record"),
        (b'"clients"', "record: must be a JSON object"),
        (b'{"record_type": "deals", "id": "1"}', "record.record_type: must be one of clients,"),
        (b'{"record_type": "clients"}', "record.id: must be the sender's id"),
        (b'{"record_type": "clients", "id": ""}', "record.id: must be the sender's id"),
        (b'{"record_type": "clients", "id": "1", "fields": []}', "record.fields: must be a JSON"),
        (
            b'[{"record_type": "clients", "id": "1"}, {"record_type": "engagements", "id": "2"}]',
            r"records\[1\].kind: an engagement's kind is one of email, call, meeting, note",
        ),
        (
            b'{"record_type": "contacts", "id": "1", "links": {"deals": "9"}}',
            "record.links.deals: must be one of",
        ),
        (
            b'{"record_type": "contacts", "id": "1", "external_ids": {"hubspot": 9}}',
            "record.external_ids.hubspot: must be an id",
        ),
    ],
)
def test_a_body_that_is_not_records_is_refused_saying_where(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as raised:
        receive(SECRET, *signed(body), now=NOW)
    assert STATUS_BY_CODE[raised.value.code] == 400


def test_too_many_records_or_bytes_are_refused() -> None:
    many = [{"record_type": "clients", "id": str(n)} for n in range(MAX_RECORDS + 1)]
    with pytest.raises(InvalidInput, match=f"at most {MAX_RECORDS} records"):
        receive(SECRET, *signed(many), now=NOW)
    huge = b'{"record_type": "clients", "id": "1", "fields": {"x": "' + b"y" * 6_000_000 + b'"}}'
    with pytest.raises(PayloadTooLarge):
        receive(SECRET, *signed(huge), now=NOW)


@settings(max_examples=50, deadline=None)
@given(name=st.text(min_size=1, max_size=40), flip=st.integers(min_value=0, max_value=10_000))
def test_any_signed_body_is_read_and_any_changed_byte_refused(name: str, flip: int) -> None:
    body, signature = signed({"record_type": "clients", "id": "1", "fields": {"name": name}})
    (got,) = receive(SECRET, body, signature, now=NOW)
    assert got.record.fields == {"name": name}
    position = flip % len(body)
    changed = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    with pytest.raises(InvalidSignature):
        receive(SECRET, changed, signature, now=NOW)


def test_signing_secrets_are_fresh_and_shaped_like_webhook_secrets() -> None:
    made = {new_signing_secret() for _ in range(20)}
    assert len(made) == 20
    assert all(s.startswith("whsec_") and len(s) >= 40 for s in made)


def test_now_defaults_to_the_clock() -> None:
    body, signature = signed({"record_type": "clients", "id": "1"}, at=int(time.time()))
    assert receive(SECRET, body, signature)[0].record.remote_id == "1"
