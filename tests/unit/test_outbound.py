"""The outbound-call rule's client: every request goes to a vetted address, or nowhere."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from keyrack import outbound
from keyrack.config import Settings
from tests.conftest import make_settings
from tests.live import serve_in_thread


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback; yields its URL and the Host of every request it got."""
    hosts: list[str] = []

    async def hook(request: Request) -> PlainTextResponse:
        hosts.append(request.headers["host"])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])])
    with serve_in_thread(app) as url:
        yield f"{url}/hook", hosts


def settings(allow_private: bool) -> Settings:
    return make_settings(webhook_allow_private_targets=allow_private)


def test_a_loopback_receiver_is_not_called_while_private_targets_are_refused(
    receiver: tuple[str, list[str]],
) -> None:
    url, hosts = receiver
    with (
        outbound.client(settings(allow_private=False), timeout=5) as client,
        pytest.raises(outbound.TargetRefused, match="non-public"),
    ):
        client.post(url, content=b"{}")
    assert hosts == []


def test_a_name_resolving_to_loopback_is_not_called_either(
    receiver: tuple[str, list[str]],
) -> None:
    url, hosts = receiver
    port = httpx.URL(url).port

    def dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    refused = settings(allow_private=False)
    with outbound.client(refused, timeout=5, resolver=dns) as client:
        with pytest.raises(outbound.TargetRefused, match="non-public"):
            client.get(f"http://receiver.test:{port}/hook")
        with pytest.raises(httpx.TransportError):  # handled as any failed connection is
            client.get(f"http://receiver.test:{port}/hook")
    assert hosts == []


def test_a_loopback_receiver_is_called_when_private_targets_are_allowed(
    receiver: tuple[str, list[str]],
) -> None:
    url, hosts = receiver
    with outbound.client(settings(allow_private=True), timeout=5) as client:
        response = client.post(url, content=b"{}")
    assert response.status_code == 200 and response.text == "ok"
    assert hosts == [httpx.URL(url).netloc.decode()]


def test_a_public_name_is_called_at_the_address_that_was_checked_keeping_the_name() -> None:
    sent: list[httpx.Request] = []

    def network(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    transport = outbound.VettedTransport(
        allow_private=False,
        resolver=lambda host, port: ["93.184.216.34"],
        transport=httpx.MockTransport(network),
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("https://hooks.example:8443/in?x=1").status_code == 204
    [request] = sent
    assert str(request.url) == "https://93.184.216.34:8443/in?x=1"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"
