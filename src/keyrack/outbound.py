"""The one rule for every call Keyrack makes to a URL someone gave it (SSRF).

Webhook deliveries, integration connectors and the Keyrack-to-Keyrack peer all call
URLs that customers typed. Such a URL must not reach inside the network Keyrack runs
in: a loopback, private, link-local (cloud metadata), shared or reserved address,
whatever notation names it. Two checks keep it out, both lifted for every caller at
once by ``KEYRACK_WEBHOOK_ALLOW_PRIVATE_TARGETS=true`` (a receiver on one's own
machine):

* when a URL is registered, ``validate_url`` refuses one whose host is, by its name
  alone, internal (``localhost``, or an address in any notation the resolver reads);
* when it is called, ``public_target`` resolves the name once and pins the request to
  the address it checked (the ``Host`` header and the TLS server name keep the name),
  so a DNS server answering a public address to the check and an internal one to the
  connection has no second lookup to answer. ``client`` hands out an ``httpx.Client``
  whose transport does this for every request it sends, redirects included.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from keyrack.config import Settings
from keyrack.domain.text import check_plain
from keyrack.errors import InvalidInput

MAX_URL_LENGTH = 2000


_CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in (
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "::/96",  # IPv4-compatible (deprecated; also holds :: and ::1)
        "64:ff9b::/96",  # NAT64, well-known prefix
    )
)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address: not loopback, private, link-local
    (cloud metadata), shared, reserved or multicast.

    An IPv6 address that carries an IPv4 one (mapped, translated, compatible, NAT64,
    6to4) is judged by that IPv4 address, which is where a packet to it may end up;
    the local-use NAT64 prefix is never public.
    """
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        if ip.sixtofour is not None:
            ip = ip.sixtofour
        elif any(ip in prefix for prefix in _CARRYING_IPV4):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def numeric_address(host: str) -> str | None:
    """The IP address ``host`` is by itself, in any notation the system resolver reads as
    one, or None for a name that only DNS can answer.

    This is ``getaddrinfo`` with ``AI_NUMERICHOST`` (no lookup), the very parser that
    connecting would use: besides dotted quads and IPv6 it reads the ``inet_aton`` forms
    (``0x7f000001``, ``2130706433``, ``017700000001``, ``127.1``, ``0x7f.0.0.1``) and,
    after IDNA mapping, full-width digits and dots (``\\uff11\\uff12\\uff17.0.0.1``).
    """
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(found[0][4][0]) if found else None


def names_internal_host(hostname: str) -> bool:
    """True when ``hostname`` is, by its name alone, an internal target: ``localhost``, or
    an address (in any notation, see ``numeric_address``) that is not public. Other names
    are checked when resolved."""
    name = hostname.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = numeric_address(name)
    return address is not None and not is_public_address(address)


def validate_url(url: str, *, allow_private: bool = False, what: str = "a webhook URL") -> str:
    """An http(s) URL (``what`` it is, for the errors); unless ``allow_private``, not naming
    a loopback, private or link-local host."""
    url = check_plain(url, what).strip()
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. an unclosed IPv6 bracket or a port out of range
        valid = False
    if not valid or len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        raise InvalidInput(f"{what} must be an http:// or https:// URL")
    if not allow_private and names_internal_host(parts.hostname or ""):
        raise InvalidInput(f"{what} {_INTERNAL_TARGET}")
    try:  # what delivers it must be able to call it
        callable_host = bool(httpx.URL(url).host)
    except (httpx.InvalidURL, ValueError):  # IDNA errors are ValueErrors too
        callable_host = False
    if not callable_host:
        raise InvalidInput(f"{what} must name a host an HTTP client can call")
    return url


_INTERNAL_TARGET = (
    "must not point at a loopback, private or link-local address "
    "(an operator may allow it with KEYRACK_WEBHOOK_ALLOW_PRIVATE_TARGETS=true)"
)


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``getaddrinfo``)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(address[0]) for *_, address in found]


class TargetRefused(httpx.TransportError):
    """A call that must not be made: its host is internal, or does not resolve. An
    ``httpx.TransportError``, so whoever handles a failed connection handles this too."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a call goes: the URL to request, with what keeps it addressed to the name."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


def public_target(url: str, resolver: Resolver = resolve) -> Target:
    """``url`` pinned to the address its host resolves to, when every one of them is public.

    Resolved once, before every attempt, and the request goes to that very address (the
    ``Host`` header and the TLS server name keep the name): a DNS server that answers a
    public address to the check and an internal one to the connection has no second
    lookup to answer. So a name that later resolves inside the network, or an endpoint
    registered before its URL was refused, is never called.
    """
    try:
        parsed = httpx.URL(url)
        host = parsed.host
    except (httpx.InvalidURL, ValueError):  # IDNA errors are ValueErrors too
        raise TargetRefused("refused: not a URL an HTTP client can call") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        raise TargetRefused(f"refused: {host} does not resolve") from None
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise TargetRefused(f"refused: {host} resolves to a non-public address")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(
        str(parsed.copy_with(host=addresses[0])),
        {"Host": parsed.netloc.decode("ascii")},
        extensions,
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The certificate store every outbound call verifies against, loaded once per process
    (loading it takes longer than a delivery to a nearby receiver)."""
    return httpx.create_ssl_context()


class VettedTransport(httpx.BaseTransport):
    """An httpx transport that sends each request to the address ``public_target``
    vetted for its URL (or, with ``allow_private``, as it is), through ``transport``."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._transport = transport or httpx.HTTPTransport(verify=tls_context())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._allow_private:
            return self._transport.handle_request(request)
        target = public_target(str(request.url), self._resolver)
        headers = request.headers.copy()
        headers.update(target.headers)
        pinned = httpx.Request(  # the caller's request keeps its URL (for redirects, logs)
            request.method,
            target.url,
            headers=headers,
            stream=request.stream,
            extensions={**request.extensions, **target.extensions},
        )
        return self._transport.handle_request(pinned)

    def close(self) -> None:
        self._transport.close()


def client(settings: Settings, *, timeout: float, resolver: Resolver = resolve) -> httpx.Client:
    """An ``httpx.Client`` that calls only what the outbound rule allows under
    ``settings`` (``webhook_allow_private_targets``); it follows no redirect by itself."""
    transport = VettedTransport(
        allow_private=settings.webhook_allow_private_targets, resolver=resolver
    )
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
