"""A server on this machine's loopback is called directly, never through a proxy.

httpx reads HTTP_PROXY, HTTPS_PROXY and ALL_PROXY (as curl does) and sent a call to
http://127.0.0.1:8000 to the proxy they name, X-API-Key and payload in clear over
an http:// URL. A proxy elsewhere cannot reach this machine's loopback, so the call
could only fail (a 502 from the proxy) after handing the key to a third party; and a
loopback URL is often a tunnel to a real server (`kubectl port-forward`, `ssh -L`)
whose key is a production one. Browsers make the same choice (loopback is never
proxied unless asked for). A program that does mean to proxy loopback (a debugging
proxy) passes its own `http=httpx.Client(proxy=...)`, which is used as given.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx


def loopback_host(host: str) -> bool:
    """Whether `host` (a URL's, brackets removed) names this machine's loopback: an
    address in 127.0.0.0/8 or ::1 (IPv4-mapped too), localhost or a name under
    .localhost (RFC 6761 keeps them on loopback)."""
    name = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def goes_direct(url: str) -> bool:
    """Whether calls to `url` skip the environment's proxy: its host is loopback."""
    return loopback_host(urlsplit(url).hostname or "")


def own_transport(url: str) -> httpx.HTTPTransport | None:
    """For a loopback `url`, a transport of the client's own: httpx reads no proxy
    variable for a client given one (it still reads SSL_CERT_FILE for https). None
    otherwise: httpx's default, the environment's proxy included.

    A transport, not a mount saying "no proxy" for the host: httpx builds the
    environment's proxies when the client is made, and ALL_PROXY=socks5://... without
    the socksio package made Client() itself raise ImportError, for loopback too."""
    return httpx.HTTPTransport() if goes_direct(url) else None


def own_async_transport(url: str) -> httpx.AsyncHTTPTransport | None:
    """own_transport, for the asyncio client."""
    return httpx.AsyncHTTPTransport() if goes_direct(url) else None
